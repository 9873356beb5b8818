//! A deterministic simulation of laptops and a gateway: a virtual clock that jumps to the next
//! deadline or delivery, seeded loss, per-link latency, and an attacker's view of every
//! datagram (capture, replay, inject). Nothing here touches the OS.

#![allow(dead_code)]

mod media;
#[allow(unused_imports)] // Not every test file streams media.
pub use media::*;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use jvpn::identity::Identity;
use jvpn::policy::BearerClass;
use jvpn::proto::client::{Client, ClientConfig};
use jvpn::proto::gateway::{Gateway, GatewayConfig, PeerSpec};
use jvpn::proto::path::Uplink;
use jvpn::proto::{
    AuditItem, Core, Event, OwnedTransmit, ProtoConfig, Received, Seed, SocketChange, StaticKeys,
    Timestamp, UplinkId, TUN_HEADROOM, TUN_TAILROOM,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

pub const GATEWAY: &str = "198.51.100.1:51900";
pub const BUF: usize = 2048;

/// Which node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeId {
    Gateway,
    Laptop(usize),
}

/// A selective network fault: datagrams it returns true for are lost.
pub type DropFilter = Box<dyn Fn(&Datagram) -> bool>;

/// A datagram in flight.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// One of a laptop's bearers in the simulation.
#[derive(Clone, Debug)]
pub struct SimLink {
    /// The address the gateway sees (after any NAT).
    pub addr: SocketAddr,
    /// Link up: datagrams pass.
    pub up: bool,
    /// Silent failure: the link looks up but drops everything both ways.
    pub blackhole: bool,
    pub class: BearerClass,
    pub name: String,
}

pub struct Laptop {
    pub core: Client,
    /// The address of the unbound default socket (before uplinks are managed).
    pub addr: SocketAddr,
    /// Bearers by uplink id (empty: only the default socket exists).
    pub links: BTreeMap<UplinkId, SimLink>,
    pub inner: IpAddr,
    pub tun_out: Vec<Vec<u8>>,
    pub tun_at: Vec<Instant>,
    pub events: Vec<Event>,
    pub identity: Identity,
    /// Completed re-anchors the core asked to have signed (E5), in order.
    pub audit_drafts: Vec<jvpn::proto::audit::RebindDraft>,
    /// The sockets the core asked for and has not closed (the default one is always open).
    pub open: std::collections::BTreeSet<UplinkId>,
    /// Every socket change the core asked for, in order.
    pub socket_changes: Vec<SocketChange>,
    /// Sockets the core sent by while they were not open (nothing left by them).
    pub unopened_sends: Vec<UplinkId>,
}

impl Laptop {
    /// The source address a datagram sent `via` leaves from, if the link passes it.
    /// A generation of a socket leaves from the link's address with the port + generation.
    pub fn source(&self, via: UplinkId) -> Option<SocketAddr> {
        if !self.socket_open(via) {
            return None;
        }
        match self.links.get(&via.interface()) {
            Some(l) if l.up && !l.blackhole => Some(with_generation(l.addr, via.generation())),
            Some(_) => None,
            None if via == UplinkId::DEFAULT && self.links.is_empty() => Some(self.addr),
            None => None,
        }
    }

    /// A socket exists from the core's `Open` to its `Close`; the default one always does.
    fn socket_open(&self, via: UplinkId) -> bool {
        via == UplinkId::DEFAULT || self.open.contains(&via)
    }

    /// The source of a datagram the core sends by `via` (noting a socket it never opened).
    fn send_from(&mut self, via: UplinkId) -> Option<SocketAddr> {
        if !self.socket_open(via) {
            self.unopened_sends.push(via);
        }
        self.source(via)
    }

    /// Applies a socket change the core asked for.
    fn change_socket(&mut self, c: SocketChange) {
        match &c {
            SocketChange::Open { id, .. } => self.open.insert(*id),
            SocketChange::Close(id) => self.open.remove(id),
        };
        self.socket_changes.push(c);
    }

    /// Every socket the core opened so far.
    pub fn opened(&self) -> std::collections::BTreeSet<UplinkId> {
        self.socket_changes
            .iter()
            .filter_map(|c| match c {
                SocketChange::Open { id, .. } => Some(*id),
                SocketChange::Close(_) => None,
            })
            .collect()
    }

    /// Every socket the core closed so far.
    pub fn closed(&self) -> std::collections::BTreeSet<UplinkId> {
        self.socket_changes
            .iter()
            .filter_map(|c| match c {
                SocketChange::Close(id) => Some(*id),
                SocketChange::Open { .. } => None,
            })
            .collect()
    }

    /// The uplink a datagram to `addr` arrives by, if it passes.
    pub fn arrival(&self, addr: SocketAddr) -> Option<UplinkId> {
        if self.links.is_empty() {
            return (addr == self.addr).then_some(UplinkId::DEFAULT);
        }
        self.links
            .iter()
            .filter(|(_, l)| l.up && !l.blackhole && l.addr.ip() == addr.ip())
            .filter_map(|(id, l)| {
                let g = addr.port().checked_sub(l.addr.port())?;
                (g < 256).then(|| id.with_generation(u32::from(g)))
            })
            .find(|via| self.socket_open(*via))
    }

    /// Whether any of this laptop's addresses is `addr` (passing or not).
    pub fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.addr
            || self.links.values().any(|l| {
                l.addr.ip() == addr.ip()
                    && addr
                        .port()
                        .checked_sub(l.addr.port())
                        .is_some_and(|g| g < 256)
            })
    }
}

pub struct World {
    pub now: Instant,
    pub start: Instant,
    pub gateway: Gateway,
    pub gateway_addr: SocketAddr,
    pub gateway_tun_out: Vec<Vec<u8>>,
    pub gateway_tun_at: Vec<Instant>,
    pub gateway_events: Vec<Event>,
    /// Audit records the gateway received from laptops, in order.
    pub gateway_audit: Vec<jvpn::proto::audit::ReceivedRecord>,
    pub laptops: Vec<Laptop>,
    /// (delivery time, sequence) → datagram.
    in_flight: BTreeMap<(Instant, u64), Datagram>,
    seq: u64,
    pub latency: Duration,
    /// Per-direction loss probability for datagrams leaving each laptop / the gateway.
    pub loss: f64,
    rng: ChaCha20Rng,
    /// Every datagram put on the wire, in order: the attacker's capture.
    pub capture: Vec<Datagram>,
    /// When true, the gateway's TUN output addressed to a laptop is routed back into it
    /// (what the kernel does with forwarding on).
    pub hub_forwarding: bool,
    /// Datagrams for which this returns true are lost (a selective network fault).
    pub drop_if: Option<DropFilter>,
    /// The sequence number the next media packet carries (unique across a world's streams).
    pub next_media_seq: u32,
}

/// The address a socket of generation `g` has behind a link address (the port + g).
pub fn with_generation(addr: SocketAddr, g: u32) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + g as u16)
}

pub fn identity(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

pub fn static_keys(id: &Identity) -> StaticKeys {
    StaticKeys {
        private: id.x25519_private(),
        public: id.public().x25519(),
    }
}

pub fn laptop_inner(i: usize) -> IpAddr {
    format!("10.77.0.{}", i + 2).parse().unwrap()
}

impl World {
    /// A gateway with `n` configured laptops (all started), seeded.
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, ProtoConfig::default())
    }

    pub fn with_config(n: usize, seed: u64, proto: ProtoConfig) -> Self {
        let start = Instant::now();
        let gw_id = identity(200);
        let laptop_ids: Vec<Identity> = (0..n).map(|i| identity(i as u8 + 1)).collect();
        let peers = laptop_ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec {
                public: id.public().x25519(),
                psk: Zeroizing::new([0; 32]),
                allowed_ips: vec![format!("{}/32", laptop_inner(i)).parse().unwrap()],
            })
            .collect();
        let gateway = Gateway::new(
            GatewayConfig {
                keys: static_keys(&gw_id),
                peers,
                proto: proto.clone(),
            },
            Seed::for_tests(seed ^ 0xabcd),
            start,
        );
        let mut w = Self {
            now: start,
            start,
            gateway,
            gateway_addr: GATEWAY.parse().unwrap(),
            gateway_tun_out: Vec::new(),
            gateway_tun_at: Vec::new(),
            gateway_events: Vec::new(),
            gateway_audit: Vec::new(),
            laptops: Vec::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            latency: Duration::from_millis(10),
            loss: 0.0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            capture: Vec::new(),
            hub_forwarding: true,
            drop_if: None,
            next_media_seq: 1_000_000,
        };
        for (i, id) in laptop_ids.into_iter().enumerate() {
            w.add_laptop(id, i, &gw_id, seed.wrapping_add(i as u64), proto.clone());
        }
        w
    }

    pub fn add_laptop(
        &mut self,
        id: Identity,
        i: usize,
        gw: &Identity,
        seed: u64,
        proto: ProtoConfig,
    ) {
        let cfg = ClientConfig {
            keys: static_keys(&id),
            gateway_public: gw.public().x25519(),
            psk: Zeroizing::new([0; 32]),
            endpoint: self.gateway_addr,
            routes: vec!["10.77.0.0/24".parse().unwrap()],
            proto,
            audit: true,
        };
        let core = Client::new(
            cfg,
            Seed::for_tests(seed),
            self.now,
            Timestamp {
                secs: 1_800_000_000,
                nanos: 0,
            },
        );
        self.laptops.push(Laptop {
            core,
            addr: format!("192.0.2.{}:40000", i + 10).parse().unwrap(),
            links: BTreeMap::new(),
            inner: laptop_inner(i),
            tun_out: Vec::new(),
            tun_at: Vec::new(),
            events: Vec::new(),
            identity: id,
            audit_drafts: Vec::new(),
            open: Default::default(),
            socket_changes: Vec::new(),
            unopened_sends: Vec::new(),
        });
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Drains every node's owned transmits and events onto the wire / into the logs.
    fn drain(&mut self) {
        while let Some(t) = self.gateway.poll_transmit() {
            let from = self.gateway_addr;
            self.send(from, t);
        }
        while let Some(e) = self.gateway.poll_event() {
            self.gateway_events.push(e);
        }
        while let Some(item) = self.gateway.poll_audit() {
            if let AuditItem::Received(r) = item {
                self.gateway_audit.push(r);
            }
        }
        for i in 0..self.laptops.len() {
            while let Some(c) = self.laptops[i].core.poll_socket_change() {
                self.laptops[i].change_socket(c);
            }
            while let Some(t) = self.laptops[i].core.poll_transmit() {
                if let Some(from) = self.laptops[i].send_from(t.via) {
                    self.send(from, t);
                }
            }
            while let Some(e) = self.laptops[i].core.poll_event() {
                self.laptops[i].events.push(e);
            }
            while let Some(item) = self.laptops[i].core.poll_audit() {
                if let AuditItem::Draft(d) = item {
                    self.laptops[i].audit_drafts.push(d);
                }
            }
        }
    }

    fn send(&mut self, from: SocketAddr, t: OwnedTransmit) {
        self.put_on_wire(Datagram {
            from,
            to: t.dst,
            bytes: t.payload,
        });
    }

    /// Puts a datagram on the wire (subject to loss and latency) and into the capture.
    pub fn put_on_wire(&mut self, d: Datagram) {
        self.capture.push(d.clone());
        if self.drop_if.as_ref().is_some_and(|f| f(&d)) {
            return;
        }
        if self.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.loss {
            return;
        }
        self.inject_at(self.now + self.latency, d);
    }

    /// Delivers a datagram at `at` without capture or loss (the attacker's injection).
    pub fn inject_at(&mut self, at: Instant, d: Datagram) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), d);
    }

    /// An application on laptop `i` sends an IP packet into its TUN device.
    pub fn laptop_sends(&mut self, i: usize, packet: &[u8]) {
        let mut buf = vec![0u8; BUF];
        buf[TUN_HEADROOM..TUN_HEADROOM + packet.len()].copy_from_slice(packet);
        let now = self.now;
        if let Some(t) = self.laptops[i]
            .core
            .handle_tun_packet(&mut buf, packet.len(), now)
        {
            if let Some(from) = self.laptops[i].send_from(t.via) {
                self.put_on_wire(Datagram {
                    from,
                    to: t.dst,
                    bytes: buf[..t.len].to_vec(),
                });
            }
        }
        self.drain();
    }

    /// An application on the gateway sends an IP packet into its TUN device.
    pub fn gateway_sends(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; BUF];
        buf[TUN_HEADROOM..TUN_HEADROOM + packet.len()].copy_from_slice(packet);
        let now = self.now;
        if let Some(t) = self.gateway.handle_tun_packet(&mut buf, packet.len(), now) {
            let from = self.gateway_addr;
            self.put_on_wire(Datagram {
                from,
                to: t.dst,
                bytes: buf[..t.len].to_vec(),
            });
        }
        self.drain();
    }

    /// Runs the world until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        self.drain();
        loop {
            let next_delivery = self.in_flight.keys().next().map(|k| k.0);
            let next_timer = self.next_timer();
            let next = [next_delivery, next_timer].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    if next_delivery == Some(t) {
                        let (_, d) = self.in_flight.pop_first().expect("peeked above");
                        self.deliver(d);
                    } else {
                        self.fire_timers();
                    }
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn next_timer(&self) -> Option<Instant> {
        let gw = self.gateway.poll_timeout().map(|t| t.0);
        let laps = self
            .laptops
            .iter()
            .filter_map(|l| l.core.poll_timeout().map(|t| t.0));
        gw.into_iter().chain(laps).min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if self.gateway.poll_timeout().is_some_and(|t| t.0 <= now) {
            self.gateway.handle_timeout(now);
        }
        for l in &mut self.laptops {
            if l.core.poll_timeout().is_some_and(|t| t.0 <= now) {
                l.core.handle_timeout(now);
            }
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        let mut buf = d.bytes.clone();
        let len = buf.len();
        if d.to == self.gateway_addr {
            let r = self.gateway.handle_datagram(
                UplinkId::DEFAULT,
                Some(d.to.ip()),
                d.from,
                &mut buf,
                len,
                now,
            );
            if let Received::Tun(r) = r {
                let pkt = buf[r].to_vec();
                let dst = inner_dst(&pkt);
                self.gateway_tun_out.push(pkt.clone());
                self.gateway_tun_at.push(now);
                if self.hub_forwarding && self.laptops.iter().any(|l| Some(l.inner) == dst) {
                    self.gateway_sends(&pkt);
                }
            }
        } else if let Some(l) = self.laptops.iter_mut().find(|l| l.owns(d.to)) {
            let Some(via) = l.arrival(d.to) else { return };
            if let Received::Tun(r) = l
                .core
                .handle_datagram(via, None, d.from, &mut buf, len, now)
            {
                l.tun_out.push(buf[r].to_vec());
                l.tun_at.push(now);
            }
        }
    }

    /// Establishes every laptop's session (runs up to 5 s).
    pub fn establish(&mut self) {
        let until = self.now + Duration::from_secs(5);
        self.run_until(until);
        for (i, l) in self.laptops.iter().enumerate() {
            assert!(
                l.core.session().is_some(),
                "laptop {i} did not establish a session"
            );
        }
    }
}

pub fn inner_dst(pkt: &[u8]) -> Option<IpAddr> {
    jvpn::proto::wire::ip_ends(pkt).map(|e| e.dst)
}

/// A minimal IPv4 packet (header checksums are not the core's business).
pub fn ipv4(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("ipv4 needs v4 addresses")
    };
    let mut p = vec![0u8; 20 + payload.len()];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    p[20..].copy_from_slice(payload);
    p
}

pub fn gateway_inner() -> IpAddr {
    "10.77.0.1".parse().unwrap()
}

/// Buffer geometry the driver uses.
pub fn tun_buf_len(packet: usize) -> usize {
    TUN_HEADROOM + packet + TUN_TAILROOM
}

/// Bearer helpers for jumping scenarios.
impl World {
    /// Gives laptop `i` the bearers `links` (id, class, name, address) and reports them.
    pub fn give_links(&mut self, i: usize, links: &[(u32, BearerClass, &str, &str)]) {
        for (id, class, name, addr) in links {
            self.laptops[i].links.insert(
                UplinkId(*id),
                SimLink {
                    addr: addr.parse().unwrap(),
                    up: true,
                    blackhole: false,
                    class: *class,
                    name: name.to_string(),
                },
            );
        }
        self.report_links(i);
    }

    /// Tells laptop `i` its usable uplinks (what netlink would report).
    pub fn report_links(&mut self, i: usize) {
        let rank = |c: BearerClass| match c {
            BearerClass::Wired => 0,
            BearerClass::Wifi => 1,
            BearerClass::Cellular => 2,
            BearerClass::Unknown => 3,
        };
        let snapshot: Vec<Uplink> = self.laptops[i]
            .links
            .iter()
            .filter(|(_, l)| l.up)
            .map(|(id, l)| Uplink {
                id: *id,
                name: l.name.clone(),
                class: l.class,
                rank: rank(l.class),
            })
            .collect();
        let now = self.now;
        self.laptops[i].core.handle_uplinks(snapshot, now);
        self.drain();
    }

    /// Link down (and reported, as netlink would).
    pub fn link_down(&mut self, i: usize, id: u32) {
        self.laptops[i].links.get_mut(&UplinkId(id)).unwrap().up = false;
        self.report_links(i);
    }

    /// Link up again (and reported).
    pub fn link_up(&mut self, i: usize, id: u32) {
        self.laptops[i].links.get_mut(&UplinkId(id)).unwrap().up = true;
        self.report_links(i);
    }

    /// The link stays up but drops everything (nothing is reported).
    pub fn blackhole(&mut self, i: usize, id: u32, on: bool) {
        self.laptops[i]
            .links
            .get_mut(&UplinkId(id))
            .unwrap()
            .blackhole = on;
    }
}
