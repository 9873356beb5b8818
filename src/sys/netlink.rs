//! Route netlink: bring a link up, assign addresses, add routes, read links, addresses and
//! routes, and watch for changes. Requests are blocking request/ack exchanges on a
//! `NETLINK_ROUTE` socket, made at start-up and after a change notification, never on the
//! data path.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Errors from route netlink requests.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to open a route netlink socket: {0}")]
    Open(io::Error),
    #[error("failed to {what}: {error}")]
    Request { what: String, error: io::Error },
}

/// A route netlink socket for configuration requests.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens the socket.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sets link `index` administratively up.
    pub fn set_link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set link {index} up")
        })
    }

    /// Adds `net` (address and prefix) to link `index`. IPv6 addresses skip duplicate address
    /// detection so the tunnel is usable at once.
    pub fn add_address(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(net.addr());
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add address {net} to link {index}"),
        )
    }

    /// Routes `net` through link `index` (main table). An existing identical route is fine.
    pub fn add_route(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let net = net.trunc();
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(net.addr());
        msg.header.destination_prefix_length = net.prefix_len();
        msg.header.table = libc::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(net.addr())));
        msg.attributes.push(RouteAttribute::Oif(index));
        match self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add route {net} via link {index}"),
        ) {
            Err(NetlinkError::Request { error, .. })
                if error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Every link: index, name, and whether it is up with a carrier.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let msgs = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
            "list links".into()
        })?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    let f = l.header.flags;
                    Some(Link {
                        index: l.header.index,
                        name,
                        up: f.contains(LinkFlags::Up) && f.contains(LinkFlags::LowerUp),
                        loopback: f.contains(LinkFlags::Loopback),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Every usable (global, not tentative or failed) address, by link index.
    pub fn addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
        let msgs = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            || "list addresses".into(),
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    if a.header.scope != AddressScope::Universe {
                        return None;
                    }
                    let mut addr = None;
                    let mut bad = false;
                    for attr in &a.attributes {
                        match attr {
                            AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => {
                                addr = Some(*ip)
                            }
                            AddressAttribute::Flags(f) => {
                                bad =
                                    f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
                            }
                            _ => {}
                        }
                    }
                    addr.filter(|_| !bad).map(|ip| (a.header.index, ip))
                }
                _ => None,
            })
            .collect())
    }

    /// Whether the kernel has a route to `dst` out of link `index` (`ip route get DST oif DEV`).
    pub fn has_route_via(&mut self, dst: IpAddr, index: u32) -> bool {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        msg.attributes.push(RouteAttribute::Oif(index));
        match self.exchange(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST, &|| {
            format!("look up the route to {dst}")
        }) {
            Ok(replies) => replies
                .iter()
                .any(|m| matches!(m, RouteNetlinkMessage::NewRoute(_))),
            Err(_) => false,
        }
    }

    fn dump(
        &mut self,
        inner: RouteNetlinkMessage,
        what: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(inner, NLM_F_REQUEST | NLM_F_DUMP, &what)
    }

    /// Sends one request and collects the replies until DONE, an error, or (for a plain
    /// request) the first reply.
    fn exchange(
        &mut self,
        inner: RouteNetlinkMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let fail = |error| NetlinkError::Request {
            what: what(),
            error,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(fail)?;
        let dumping = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (reply, _) = self.socket.recv_from_full().map_err(fail)?;
            let mut offset = 0;
            while offset < reply.len() {
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                    .map_err(|e| {
                    fail(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                })?;
                let len = parsed.header.length as usize;
                if parsed.header.sequence_number == self.seq {
                    match parsed.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(fail(e.to_io())),
                            }
                        }
                        NetlinkPayload::InnerMessage(m) => {
                            out.push(m);
                            if !dumping {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn request(
        &mut self,
        inner: RouteNetlinkMessage,
        extra_flags: u16,
        what: impl Fn() -> String,
    ) -> Result<(), NetlinkError> {
        self.exchange(inner, NLM_F_REQUEST | NLM_F_ACK | extra_flags, &what)
            .map(|_| ())
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A network interface as netlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up and with a carrier.
    pub up: bool,
    pub loopback: bool,
}

/// A subscription to link, address and route changes (IPv4 and IPv6). Each message is only a
/// trigger: the caller re-reads the state and diffs it.
pub struct Watcher {
    fd: tokio::io::unix::AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl Watcher {
    /// Subscribes. Must be called inside a tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        let groups = (libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        socket
            .bind(&SocketAddr::new(0, groups))
            .map_err(NetlinkError::Open)?;
        socket.set_non_blocking(true).map_err(NetlinkError::Open)?;
        // SAFETY: the netlink Socket owns its fd, keeps it open until dropped, and always
        // returns the same one; the AsyncFd owns the Socket.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
        }
        .map_err(|e| NetlinkError::Open(io::Error::from(e)))?;
        Ok(Self {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Waits for the next change notification and drains everything queued behind it.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            loop {
                match guard.get_inner().recv(&mut &mut self.buf[..], 0) {
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ENOBUFS: we missed messages; a re-read covers them all the same.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                    Err(e) => return Err(e),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}
