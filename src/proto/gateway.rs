//! The gateway side: many sessions in a table keyed by routing tag. A datagram is attributed
//! to a session only after it authenticates under that session's keys; the source address is
//! never used to find a session. Initiations from keys that are not configured peers, stale
//! (replayed) initiations and everything else that fails get no reply at all.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use super::control::ControlMessage;
use super::handshake::{Responder, StaticKeys, Timestamp};
use super::iptable::IpTable;
use super::session::{Session, SessionStats};
use super::wire::{self, Packet, RoutingTag, SealedKind, DATA_OVERHEAD, HEADER_LEN, TAG_LEN};
use super::{
    CloseReason, DropCounters, DropReason, Event, OwnedTransmit, ProtoConfig, Received, SessionId,
    Timer, Transmit,
};

const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// A configured peer.
#[derive(Debug)]
pub struct PeerSpec {
    /// Noise static key (X25519).
    pub public: [u8; 32],
    pub psk: Zeroizing<[u8; 32]>,
    pub allowed_ips: Vec<IpNet>,
}

/// What the gateway core needs to know.
#[derive(Debug)]
pub struct GatewayConfig {
    pub keys: StaticKeys,
    pub peers: Vec<PeerSpec>,
    pub proto: ProtoConfig,
}

#[derive(Debug)]
struct PeerState {
    spec: PeerSpec,
    last_timestamp: Option<Timestamp>,
    last_init_at: Option<Instant>,
    /// The confirmed session that carries traffic.
    current: Option<RoutingTag>,
    /// A session whose handshake finished but whose first packet has not arrived yet.
    pending: Option<RoutingTag>,
}

#[derive(Debug)]
struct GwSession {
    session: Session,
    peer: usize,
    endpoint: SocketAddr,
    local: Option<SocketAddr>,
    confirmed: bool,
}

/// A read-only view of one session, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session_id: SessionId,
    pub peer: usize,
    pub endpoint: SocketAddr,
    pub stats: SessionStats,
    pub age: Duration,
    pub since_last_recv: Duration,
}

/// The gateway core.
#[derive(Debug)]
pub struct Gateway {
    keys: StaticKeys,
    proto: ProtoConfig,
    peers: Vec<PeerState>,
    by_static: BTreeMap<[u8; 32], usize>,
    routes: IpTable<usize>,
    sessions: BTreeMap<RoutingTag, GwSession>,
    rng: ChaCha20Rng,
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    next_housekeeping: Instant,
}

impl Gateway {
    /// Creates the core.
    pub fn new(cfg: GatewayConfig, seed: u64, now: Instant) -> Self {
        let mut by_static = BTreeMap::new();
        let mut routes = IpTable::default();
        let peers = cfg
            .peers
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                by_static.insert(spec.public, i);
                for net in &spec.allowed_ips {
                    routes.insert(*net, i);
                }
                PeerState {
                    spec,
                    last_timestamp: None,
                    last_init_at: None,
                    current: None,
                    pending: None,
                }
            })
            .collect();
        Self {
            keys: cfg.keys,
            proto: cfg.proto,
            peers,
            by_static,
            routes,
            sessions: BTreeMap::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            next_housekeeping: now + HOUSEKEEPING,
        }
    }

    /// Hot path: `buf[TUN_HEADROOM..TUN_HEADROOM + len]` holds an IP packet from the TUN
    /// device; it goes to the peer whose `allowed_ips` hold its destination.
    pub fn handle_tun_packet(
        &mut self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Option<Transmit> {
        if HEADER_LEN + len + TAG_LEN > buf.len() {
            self.drops.count(DropReason::TooLarge);
            return None;
        }
        let Some(ends) = wire::ip_ends(&buf[HEADER_LEN..HEADER_LEN + len]) else {
            self.drops.count(DropReason::NotIp);
            return None;
        };
        let Some(&peer) = self.routes.lookup(ends.dst) else {
            self.drops.count(DropReason::NoRoute);
            return None;
        };
        let Some(s) = self.peers[peer]
            .current
            .and_then(|t| self.sessions.get_mut(&t))
        else {
            self.drops.count(DropReason::NoSession);
            return None;
        };
        match s.session.seal_data(buf, len, now) {
            Some(n) => Some(Transmit {
                src: s.local,
                dst: s.endpoint,
                len: n,
            }),
            None => {
                self.drops.count(DropReason::CounterExhausted);
                None
            }
        }
    }

    /// A datagram arrived at `local` from `remote`: `buf[..len]`. Data is opened in place.
    pub fn handle_datagram(
        &mut self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        let len = len.min(buf.len());
        match wire::parse(&buf[..len]) {
            Err(_) => self.drops.count(DropReason::Malformed),
            Ok(Packet::HandshakeInit { sender, noise }) => {
                let noise = noise.to_vec();
                self.on_initiation(sender, &noise, local, remote, now);
            }
            Ok(Packet::HandshakeResp { .. }) => self.drops.count(DropReason::UnexpectedResponse),
            Ok(Packet::Sealed {
                kind,
                receiver,
                counter,
            }) => {
                return self.on_sealed(kind, receiver, counter, &mut buf[..len], local, remote, now)
            }
        }
        Received::Nothing
    }

    /// Periodic housekeeping: forgets idle sessions and stale pending handshakes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + HOUSEKEEPING;
        let idle = self.proto.session_idle_expiry;
        let pending_limit = self.proto.handshake_retry_max * 2;
        let expired: Vec<(RoutingTag, bool)> = self
            .sessions
            .iter()
            .filter_map(|(tag, s)| {
                let limit = if s.confirmed { idle } else { pending_limit };
                (now >= s.session.last_recv + limit).then_some((*tag, s.confirmed))
            })
            .collect();
        for (tag, confirmed) in expired {
            if confirmed {
                self.remove_session(tag, CloseReason::IdleExpired);
            } else {
                self.forget(tag);
            }
        }
    }

    /// Shuts down: tells every peer with a session (authenticated close).
    pub fn shutdown(&mut self, now: Instant) {
        let tags: Vec<RoutingTag> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.confirmed)
            .map(|(t, _)| *t)
            .collect();
        for tag in tags {
            if let Some(s) = self.sessions.get_mut(&tag) {
                let msg = ControlMessage::Close(CloseReason::LocalShutdown).encode();
                let mut buf = vec![0u8; DATA_OVERHEAD + msg.len()];
                if let Some(n) = s.session.seal_control(&msg, &mut buf, now) {
                    buf.truncate(n);
                    self.transmits.push_back(OwnedTransmit {
                        src: s.local,
                        dst: s.endpoint,
                        payload: buf,
                    });
                }
            }
            self.remove_session(tag, CloseReason::LocalShutdown);
        }
    }

    /// Next owned datagram to send.
    pub fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline and why it exists.
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        Some((self.next_housekeeping, Timer::Housekeeping))
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Confirmed sessions, in routing-tag order.
    pub fn sessions(&self, now: Instant) -> Vec<SessionView> {
        self.sessions
            .values()
            .filter(|s| s.confirmed)
            .map(|s| SessionView {
                session_id: s.session.id(),
                peer: s.peer,
                endpoint: s.endpoint,
                stats: s.session.stats,
                age: now.saturating_duration_since(s.session.created),
                since_last_recv: now.saturating_duration_since(s.session.last_recv),
            })
            .collect()
    }

    fn on_initiation(
        &mut self,
        sender: RoutingTag,
        noise: &[u8],
        local: Option<SocketAddr>,
        remote: SocketAddr,
        now: Instant,
    ) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let Ok(responder) = Responder::read(&self.keys, seed, noise) else {
            self.drops.count(DropReason::HandshakeFailed);
            return;
        };
        let Some(&peer) = self.by_static.get(&responder.remote_static) else {
            self.drops.count(DropReason::UnknownPeer);
            return;
        };
        let state = &self.peers[peer];
        if state
            .last_timestamp
            .is_some_and(|t| responder.timestamp <= t)
        {
            self.drops.count(DropReason::StaleInitiation);
            return;
        }
        if state
            .last_init_at
            .is_some_and(|t| now < t + self.proto.initiation_min_interval)
        {
            self.drops.count(DropReason::InitiationRateLimited);
            return;
        }
        let tag = self.fresh_tag();
        let mut out = vec![0u8; wire::RESP_LEN];
        let psk = self.peers[peer].spec.psk.clone();
        let timestamp = responder.timestamp;
        let Ok((root, n)) = responder.accept(&psk, tag, sender, &mut out) else {
            self.drops.count(DropReason::HandshakeFailed);
            return;
        };
        out.truncate(n);
        let state = &mut self.peers[peer];
        state.last_timestamp = Some(timestamp);
        state.last_init_at = Some(now);
        let old_pending = state.pending.replace(tag);
        if let Some(old) = old_pending {
            self.forget(old);
        }
        let session = Session::new(root, false, tag, sender, self.proto.replay_window_bits, now);
        self.sessions.insert(
            tag,
            GwSession {
                session,
                peer,
                endpoint: remote,
                local,
                confirmed: false,
            },
        );
        self.transmits.push_back(OwnedTransmit {
            src: local,
            dst: remote,
            payload: out,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        counter: u64,
        datagram: &mut [u8],
        local: Option<SocketAddr>,
        remote: SocketAddr,
        now: Instant,
    ) -> Received {
        let Some(s) = self.sessions.get_mut(&receiver) else {
            self.drops.count(DropReason::UnknownTag);
            return Received::Nothing;
        };
        let opened = match s.session.open(kind, counter, datagram, now) {
            Ok(o) => o,
            Err(reason) => {
                self.drops.count(reason);
                return Received::Nothing;
            }
        };
        let peer = s.peer;
        if opened.newest && (s.endpoint != remote || s.local != local) {
            s.endpoint = remote;
            s.local = local;
            if s.confirmed {
                self.events.push_back(Event::EndpointChanged {
                    session_id: s.session.id(),
                    remote,
                });
            }
        }
        if !s.confirmed {
            self.confirm(receiver);
        }
        match kind {
            SealedKind::Data => {
                let inner = &datagram[opened.plaintext.clone()];
                if inner.is_empty() {
                    self.answer_keepalive(receiver, now);
                    return Received::Nothing;
                }
                match wire::ip_ends(inner) {
                    Some(ends) if self.routes.lookup(ends.src) == Some(&peer) => {
                        Received::Tun(opened.plaintext)
                    }
                    Some(_) => {
                        self.drops.count(DropReason::DisallowedSource);
                        Received::Nothing
                    }
                    None => {
                        self.drops.count(DropReason::NotIp);
                        Received::Nothing
                    }
                }
            }
            SealedKind::Control => {
                match ControlMessage::decode(&datagram[opened.plaintext]) {
                    Some(ControlMessage::Close(_)) => {
                        self.remove_session(receiver, CloseReason::PeerClosed)
                    }
                    None => self.drops.count(DropReason::BadControl),
                }
                Received::Nothing
            }
        }
    }

    /// The first authenticated packet on a new session makes it the peer's current one.
    fn confirm(&mut self, tag: RoutingTag) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        s.confirmed = true;
        let (peer, session_id, remote) = (s.peer, s.session.id(), s.endpoint);
        let state = &mut self.peers[peer];
        if state.pending == Some(tag) {
            state.pending = None;
        }
        let old = state.current.replace(tag);
        if let Some(old) = old.filter(|o| *o != tag) {
            if let Some(gone) = self.sessions.remove(&old) {
                self.events.push_back(Event::SessionClosed {
                    session_id: gone.session.id(),
                    peer,
                    reason: CloseReason::Replaced,
                });
            }
        }
        self.events.push_back(Event::SessionEstablished {
            session_id,
            peer,
            remote,
        });
    }

    /// Answers a keepalive when we have sent nothing for half a keepalive interval, so the
    /// laptop can tell a live gateway from a dead one.
    fn answer_keepalive(&mut self, tag: RoutingTag, now: Instant) {
        let half = self.proto.keepalive / 2;
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        if now < s.session.last_send + half && s.session.data_sent() > 0 {
            return;
        }
        let mut buf = vec![0u8; DATA_OVERHEAD];
        if let Some(n) = s.session.seal_data(&mut buf, 0, now) {
            buf.truncate(n);
            self.transmits.push_back(OwnedTransmit {
                src: s.local,
                dst: s.endpoint,
                payload: buf,
            });
        }
    }

    fn remove_session(&mut self, tag: RoutingTag, reason: CloseReason) {
        if let Some(s) = self.forget(tag) {
            self.events.push_back(Event::SessionClosed {
                session_id: s.session.id(),
                peer: s.peer,
                reason,
            });
        }
    }

    fn forget(&mut self, tag: RoutingTag) -> Option<GwSession> {
        let s = self.sessions.remove(&tag)?;
        let state = &mut self.peers[s.peer];
        if state.current == Some(tag) {
            state.current = None;
        }
        if state.pending == Some(tag) {
            state.pending = None;
        }
        Some(s)
    }

    fn fresh_tag(&mut self) -> RoutingTag {
        loop {
            let t = RoutingTag(self.rng.next_u32());
            if !self.sessions.contains_key(&t) {
                return t;
            }
        }
    }
}
