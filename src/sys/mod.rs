//! Everything that makes syscalls (Linux only): the TUN device, UDP sockets, route netlink,
//! bearer watching, privileges.

pub mod netlink;
pub mod pktinfo;
pub mod privileges;
pub mod tun;
pub mod uplinks;

use std::os::fd::AsRawFd;

/// Larger socket buffers absorb bursts from TCP inside the tunnel.
pub fn tune_socket(s: &impl AsRawFd) {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: plain setsockopt on an fd we own with a correctly sized int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not enlarge socket buffer");
        }
    }
}
