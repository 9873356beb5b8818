//! Everything that makes syscalls (Linux only): the TUN device, UDP sockets, route netlink.

pub mod netlink;
pub mod privileges;
pub mod tun;
