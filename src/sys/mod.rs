//! Everything that makes syscalls (Linux only): the TUN device, UDP sockets, route netlink,
//! bearer watching, privileges.

pub mod netlink;
pub mod pktinfo;
pub mod privileges;
pub mod tun;
pub mod udp;
pub mod uplinks;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens a file the node writes (events, audit) for appending, creating it with mode 0600, and
/// never through a symbolic link: a link at `path` could point a root-opened file at anything.
/// `read` also opens it for reading; `flags` are extra `open(2)` flags.
pub fn open_append_nofollow(path: &Path, read: bool, flags: libc::c_int) -> io::Result<File> {
    OpenOptions::new()
        .read(read)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(flags | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                e.kind(),
                format!(
                    "{} is a symbolic link, which is refused: name the file itself",
                    path.display()
                ),
            ),
            _ => e,
        })
}

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
