//! Everything that makes syscalls (Linux only): the TUN device, UDP sockets, route netlink,
//! bearer watching, privileges.

pub mod netlink;
pub mod pktinfo;
pub mod privileges;
pub mod tun;
pub mod udp;
pub mod uplinks;

use std::io;
use std::os::fd::RawFd;

/// Blocks until `fd` reports `events` (a full socket buffer or TUN queue).
pub fn wait_for(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, -1) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
