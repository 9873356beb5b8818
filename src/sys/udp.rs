//! The node's UDP sockets. The rule: apart from the default socket bound at start, a socket is
//! opened or closed only on the core's word (`proto::node::Core::poll_socket_change`, which
//! names the device), and the map here is the driver's one record of them; a datagram the core
//! sends by a moving-target socket that is not open never leaves by another route. Everything
//! here is non-blocking except a send into a full buffer, which waits for room.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::pktinfo;
use crate::proto::{SocketChange, UplinkId};

/// The node's UDP sockets (non-blocking): an unbound default one, plus the ones the core opened,
/// each bound to its device.
pub struct Sockets {
    default: UdpSocket,
    /// The default socket is bound to a wildcard address: read destinations, answer from them.
    pktinfo: bool,
    uplinks: BTreeMap<UplinkId, UdpSocket>,
    /// Local addresses of the sockets opened so far (kept after a socket closes: audit detail).
    locals: BTreeMap<UplinkId, SocketAddr>,
    gateway: Option<SocketAddr>,
}

impl Sockets {
    /// Binds the default socket: `listen` on the gateway, an ephemeral port in the endpoint's
    /// family on the laptop (`gateway` = the endpoint, enabling per-uplink sockets).
    pub fn bind(listen: Option<SocketAddr>, gateway: Option<SocketAddr>) -> io::Result<Self> {
        let addr = match (listen, gateway) {
            (Some(l), _) => l,
            (None, Some(SocketAddr::V6(_))) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
        };
        let default = UdpSocket::bind(addr)?;
        default.set_nonblocking(true)?;
        tune_socket(&default);
        let pktinfo = listen.is_some_and(|l| l.ip().is_unspecified())
            && match pktinfo::enable(default.as_raw_fd(), addr.is_ipv6()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read datagram destinations; a multi-homed gateway may answer from the wrong address (set `listen` to one address)");
                    false
                }
            };
        Ok(Self {
            default,
            pktinfo,
            uplinks: BTreeMap::new(),
            locals: BTreeMap::new(),
            gateway,
        })
    }

    /// Applies a socket change the core asked for.
    pub fn change(&mut self, c: SocketChange) {
        match c {
            SocketChange::Open { id, device } if !self.uplinks.contains_key(&id) => {
                self.open(id, &device)
            }
            SocketChange::Open { .. } => {}
            SocketChange::Close(id) => {
                if self.uplinks.remove(&id).is_some() {
                    tracing::debug!(
                        uplink = id.interface().0,
                        generation = id.generation(),
                        "socket closed"
                    );
                }
            }
        }
    }

    /// Opens socket `id` on interface `name` (a generation of an uplink's socket: a new
    /// source port). Only a laptop (which knows its gateway's family) opens any.
    fn open(&mut self, id: UplinkId, name: &str) {
        let Some(gateway) = self.gateway else {
            return;
        };
        match bind_to_device(name, gateway) {
            Ok(s) => {
                if let Ok(a) = s.local_addr() {
                    if self.locals.len() > 64 {
                        self.locals.clear();
                    }
                    tracing::debug!(uplink = %name, generation = id.generation(), local = %a, "socket opened");
                    self.locals.insert(id, a);
                }
                self.uplinks.insert(id, s);
            }
            Err(e) => {
                tracing::warn!(uplink = %name, error = %e, "cannot open a socket on this uplink; it will not be used")
            }
        }
    }

    /// The local address of the socket `via` (or had), for audit detail.
    pub fn local_addr(&self, via: UplinkId) -> String {
        match self.locals.get(&via) {
            Some(a) => a.to_string(),
            None if via == UplinkId::DEFAULT => self
                .default
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    fn socket(&self, via: UplinkId) -> &UdpSocket {
        self.uplinks.get(&via).unwrap_or(&self.default)
    }

    /// Every socket with the uplink it serves (the default one first).
    pub fn all(&self) -> impl Iterator<Item = (UplinkId, &UdpSocket)> {
        std::iter::once((UplinkId::DEFAULT, &self.default))
            .chain(self.uplinks.iter().map(|(id, s)| (*id, s)))
    }

    /// Receives without waiting (WouldBlock when nothing is queued).
    pub fn try_recv(
        &self,
        via: UplinkId,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let sock = self.socket(via);
        if via == UplinkId::DEFAULT && self.pktinfo {
            pktinfo::recv(sock.as_raw_fd(), buf)
        } else {
            sock.recv_from(buf).map(|(n, from)| (n, from, None))
        }
    }

    /// Sends; waits for writability only when the socket buffer is full.
    pub fn send(
        &self,
        via: UplinkId,
        src_ip: Option<IpAddr>,
        buf: &[u8],
        dst: SocketAddr,
    ) -> io::Result<usize> {
        if via.generation() != 0 && !self.uplinks.contains_key(&via) {
            // A moving-target socket that could not be opened (or is closed): never let its
            // packets leave by another route. The core sees a send error; the move fails.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket of this move is not open",
            ));
        }
        let sock = self.socket(via);
        let fd = sock.as_raw_fd();
        let sticky = via == UplinkId::DEFAULT && self.pktinfo && src_ip.is_some();
        loop {
            let r = if sticky {
                match pktinfo::send(fd, buf, dst, src_ip) {
                    // The address we were reached at is gone: let the route choose.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => sock.send_to(buf, dst),
                    other => other,
                }
            } else {
                sock.send_to(buf, dst)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    super::wait_for(fd, libc::POLLOUT)?
                }
                other => return other,
            }
        }
    }
}

/// A UDP socket that sends only through interface `name` (SO_BINDTODEVICE), in the family of
/// `gateway`. Unprivileged since Linux 5.7 for a socket not yet bound to a device.
pub fn bind_to_device(name: &str, gateway: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match gateway {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any)?;
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    let bytes = cname.as_bytes_with_nul();
    // SAFETY: setsockopt on an fd we own, with a NUL-terminated name of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    sock.set_nonblocking(true)?;
    tune_socket(&sock);
    Ok(sock)
}

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
