//! Route netlink: bring a link up, assign addresses, add routes. Blocking request/ack over a
//! `NETLINK_ROUTE` socket; used at start-up only, never on the data path.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
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

    fn request(
        &mut self,
        inner: RouteNetlinkMessage,
        extra_flags: u16,
        what: impl Fn() -> String,
    ) -> Result<(), NetlinkError> {
        let fail = |error| NetlinkError::Request {
            what: what(),
            error,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(fail)?;
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
                    if let NetlinkPayload::Error(e) = parsed.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(fail(e.to_io())),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
