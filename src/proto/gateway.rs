//! The gateway side: many sessions in a table keyed by routing tag. A datagram is attributed
//! to a session only after it authenticates under that session's keys; the source address is
//! never used to find a session, and it moves a session's binding only under the rules of
//! [`super::binding`]. Initiations from keys that are not configured peers, stale (replayed)
//! initiations and everything else that fails get no reply at all.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use zeroize::Zeroizing;

use super::audit::{self, ReceivedRecord};
use super::binding::{Binding, Validation};
use super::control::{self, ControlMessage, Reattach, RejectReason};
use super::handshake::{Responder, StaticKeys, Timestamp};
use super::iptable::IpTable;
use super::path::ReattachStatus;
use super::rekey::{Ephemeral, RekeyTrigger};
use super::session::{Session, SessionStats};
use super::state::{Machine, Reason, State};
use super::status_frame::{gateway_frame, Relationship, SessionKnowledge};
use super::wire::{self, Packet, RoutingTag, SealedKind, DATA_OVERHEAD, HEADER_LEN, TAG_LEN};
use super::{
    CloseReason, DropCounters, DropReason, Event, OwnedTransmit, ProtoConfig, Received, Seed,
    SessionId, Timer, Transmit, UplinkId,
};

const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Sources tracked for authentication failures at most (oldest forgotten first).
const OFFENDERS_KEPT: usize = 4096;
/// Tombstones of ended sessions kept at most (oldest forgotten first), and for how long.
const TOMBSTONES_KEPT: usize = 4096;
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// At most one status frame per tombstone per this interval.
const STATUS_FRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Path indices registered ahead of the highest one a session has used (J11): a laptop can
/// open this many new paths before the gateway has seen any of them.
const PATH_LOOKAHEAD: u32 = 4;
/// Used path indices kept registered behind the highest (older ones only while an address
/// still uses them).
const PATHS_KEPT: u32 = 8;
/// Addresses whose path index a session remembers.
const PATH_ADDRS_KEPT: usize = 8;
/// The last data datagram to the laptop is kept for a resend if it was sent this recently...
const RECENT_WINDOW: Duration = Duration::from_millis(100);
/// ...and is at most this long (the buffer is allocated once, with the session).
const RECENT_MAX_LEN: usize = 1600;

/// What remains of an ended session: its keys (to tell a peer that proves them what happened,
/// F1) and what the gateway knows of it. Nobody else ever gets an answer.
#[derive(Debug)]
struct Tombstone {
    session: Session,
    knowledge: SessionKnowledge,
    local_ip: Option<IpAddr>,
    until: Instant,
    last_frame: Option<Instant>,
}

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
    binding: Binding,
    /// The gateway address the laptop sends to; answers leave from it.
    local_ip: Option<IpAddr>,
    /// The gateway's view of the session's state (M6).
    machine: Machine,
    /// Our answer to the laptop's latest RekeyInit (epoch, our public key), for retransmits.
    rekey_resp: Option<(u32, [u8; 32])>,
    /// Authenticated control packets that made no sense (S9 evidence).
    bad_controls: u32,
    /// When a replayed control packet was last reported.
    last_replay_event: Option<Instant>,
    confirmed: bool,
    /// Digests of the audit records received lately (resent copies are only acknowledged).
    audit_seen: VecDeque<[u8; 8]>,
    /// Per-path routing tags (J11): which path index each recent address used, the last
    /// (address, index) seen, the highest index used and the highest registered.
    path_of: VecDeque<(SocketAddr, u32)>,
    last_rx: Option<(SocketAddr, u32)>,
    max_path: u32,
    registered_upto: u32,
    /// The address the cached data tag (`session.remote_tag`) is for.
    send_cache: Option<SocketAddr>,
    recent: RecentSend,
}

/// The last data datagram sent to the laptop. When a NAT changes the laptop's mapping, what the
/// gateway sent to the old one until it heard from the new one is lost (at 50 packets/s one,
/// sometimes two); so when the binding moves to a new address of the same path, this datagram
/// goes again to the new one if it went to the old one within `RECENT_WINDOW`, and the laptop's
/// replay window drops it if it did arrive. Only one: more would spend the new path's
/// anti-amplification budget on packets that mostly arrived, and the next fresh packet would be
/// the one refused. The copy goes into a buffer allocated with the session, so the hot path
/// allocates nothing.
#[derive(Debug)]
struct RecentSend {
    buf: Vec<u8>,
    sent: Option<(SocketAddr, Instant)>,
}

impl RecentSend {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(RECENT_MAX_LEN),
            sent: None,
        }
    }

    fn record(&mut self, datagram: &[u8], dst: SocketAddr, now: Instant) {
        if datagram.len() > RECENT_MAX_LEN {
            self.sent = None;
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(datagram);
        self.sent = Some((dst, now));
    }

    /// A copy of the datagram if it went to `old` within `RECENT_WINDOW`.
    fn to_resend(&self, old: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        match self.sent {
            Some((a, t)) if a == old && now.saturating_duration_since(t) <= RECENT_WINDOW => {
                Some(self.buf.clone())
            }
            _ => None,
        }
    }
}

impl GwSession {
    /// The tag the laptop receives on the path it uses from `addr` (its most recent index
    /// there; an unknown address gets the latest path's).
    fn tag_for(&self, addr: SocketAddr) -> RoutingTag {
        let idx = self
            .path_of
            .iter()
            .rev()
            .find(|(a, _)| *a == addr)
            .map(|p| p.1)
            .or(self.last_rx.map(|r| r.1))
            .unwrap_or(0);
        self.session.path_tag_pair(idx).1
    }

    /// An authenticated packet came from `addr` on path `idx`. Returns whether registration
    /// must extend (a new highest index).
    fn note_path(&mut self, addr: SocketAddr, idx: u32) -> bool {
        if self.last_rx == Some((addr, idx)) {
            return false;
        }
        self.last_rx = Some((addr, idx));
        self.path_of.retain(|(a, _)| *a != addr);
        if self.path_of.len() >= PATH_ADDRS_KEPT {
            self.path_of.pop_front();
        }
        self.path_of.push_back((addr, idx));
        self.send_cache = None;
        if idx > self.max_path {
            self.max_path = idx;
            return true;
        }
        false
    }
}

/// Authentication failures from one source address (J9).
#[derive(Debug, Clone, Copy)]
struct Offence {
    window_start: Instant,
    failures: u32,
}

/// A read-only view of one session, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session_id: SessionId,
    pub peer: usize,
    pub endpoint: SocketAddr,
    pub validated: bool,
    pub state: State,
    pub key_epoch: u32,
    pub key_age: Duration,
    pub state_version: u64,
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
    offenders: BTreeMap<IpAddr, Offence>,
    tombstones: BTreeMap<RoutingTag, Tombstone>,
    /// Sessions that may have path challenges under way.
    challenged: BTreeSet<RoutingTag>,
    rng: ChaCha20Rng,
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    next_housekeeping: Instant,
    /// Audit records received, for the node to verify and witness.
    audit: VecDeque<ReceivedRecord>,
    /// Audit records dropped because the node fell behind by `audit::RECEIVED_LIMIT`.
    pub audit_overflow: u64,
    /// Per-path routing tags → (the session's handshake tag, path index).
    aliases: BTreeMap<RoutingTag, (RoutingTag, u32)>,
    /// Path tags not registered because another session holds them (that path is unusable
    /// for its session; the laptop moves to a fresh index when the move fails).
    pub tag_collisions: u64,
    /// Data datagrams sent again after the binding left their address.
    pub resent: u64,
}

impl Gateway {
    /// Creates the core.
    pub fn new(cfg: GatewayConfig, seed: Seed, now: Instant) -> Self {
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
            offenders: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            challenged: BTreeSet::new(),
            rng: seed.rng(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            next_housekeeping: now + HOUSEKEEPING,
            audit: VecDeque::new(),
            audit_overflow: 0,
            aliases: BTreeMap::new(),
            tag_collisions: 0,
            resent: 0,
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
        if !s.binding.may_send(len + DATA_OVERHEAD) {
            self.drops.count(DropReason::AmplificationLimit);
            return None;
        }
        let dst = s.binding.current();
        if s.send_cache != Some(dst) {
            s.session.remote_tag = s.tag_for(dst);
            s.send_cache = Some(dst);
        }
        match s.session.seal_data(buf, len, now) {
            Some(n) => {
                s.recent.record(&buf[..n], dst, now);
                Some(Transmit {
                    via: UplinkId::DEFAULT,
                    src_ip: s.local_ip,
                    dst,
                    len: n,
                })
            }
            None => {
                self.drops.count(DropReason::CounterExhausted);
                None
            }
        }
    }

    /// A datagram arrived from `remote`: `buf[..len]`. Data is opened in place.
    pub fn handle_datagram(
        &mut self,
        _via: UplinkId,
        local: Option<IpAddr>,
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
            Ok(Packet::Sealed { kind, receiver }) => {
                // A per-path tag names its session and path; any other tag is a handshake tag
                // (path 0). The two sets never overlap (`fresh_tag`, `register_paths`), so one
                // lookup decides.
                let target = self
                    .aliases
                    .get(&receiver)
                    .copied()
                    .unwrap_or((receiver, 0));
                let at = (local, remote);
                return self.on_sealed(kind, target, &mut buf[..len], at, now);
            }
        }
        Received::Nothing
    }

    /// Runs due timers: path challenges, and once a second the sweep of idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.challenge_timers(now);
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + HOUSEKEEPING;
        let ttl = self.proto.lifecycle.transport_lost_ttl;
        let lifetime = self.proto.lifecycle.max_lifetime;
        // The laptop rekeys or ends the session at key_max_age; the gateway enforces it a
        // grace period later so the two never race.
        let key_max_age = self.proto.keys.key_max_age + self.proto.keys.grace;
        let pending_limit = self.proto.handshake_retry_max * 2;
        let expired: Vec<(RoutingTag, Option<Reason>)> = self
            .sessions
            .iter()
            .filter_map(|(tag, s)| {
                if !s.confirmed {
                    return (now >= s.session.last_recv + pending_limit).then_some((*tag, None));
                }
                if now >= s.session.created + lifetime {
                    Some((*tag, Some(Reason::SessionLifetimeExceeded)))
                } else if now >= s.session.key_installed() + key_max_age {
                    Some((*tag, Some(Reason::KeyExpired)))
                } else if now >= s.session.last_recv + ttl {
                    Some((*tag, Some(Reason::TransportTtlExceeded)))
                } else {
                    None
                }
            })
            .collect();
        for (tag, reason) in expired {
            match reason {
                Some(reason) => self.end(tag, reason, CloseReason::IdleExpired, now),
                None => {
                    self.forget(tag);
                }
            }
        }
        let window = self.proto.paths.auth_failure_window;
        self.offenders.retain(|_, o| now < o.window_start + window);
        self.tombstones.retain(|_, t| now < t.until);
        self.retire_path_tags();
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
            if let Some(s) = self.sessions.get(&tag) {
                let dst = s.binding.current();
                self.send_control(
                    tag,
                    dst,
                    ControlMessage::Close(CloseReason::LocalShutdown),
                    now,
                );
            }
            self.end(tag, Reason::LocalShutdown, CloseReason::LocalShutdown, now);
        }
    }

    /// Operator termination (`jvpn terminate`): TERMINATED with `operator_terminated`, and the
    /// laptop is told. Returns false for an unknown SessionID.
    pub fn terminate(&mut self, session_id: SessionId, now: Instant) -> bool {
        let Some(tag) = self
            .sessions
            .iter()
            .find(|(_, s)| s.confirmed && s.session.id() == session_id)
            .map(|(t, _)| *t)
        else {
            return false;
        };
        if let Some(s) = self.sessions.get(&tag) {
            let dst = s.binding.current();
            self.send_control(
                tag,
                dst,
                ControlMessage::Close(CloseReason::PeerClosed),
                now,
            );
        }
        self.end(
            tag,
            Reason::OperatorTerminated,
            CloseReason::LocalShutdown,
            now,
        );
        true
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
        // Only sessions with challenges under way are looked at: O(1) per packet otherwise.
        let challenge = self
            .challenged
            .iter()
            .filter_map(|t| self.sessions.get(t)?.binding.next_deadline())
            .min();
        match challenge {
            Some(t) if t < self.next_housekeeping => Some((t, Timer::Reattach)),
            _ => Some((self.next_housekeeping, Timer::Housekeeping)),
        }
    }

    /// Applies a reloaded policy (P3) to every session from now on.
    pub fn set_proto(&mut self, proto: ProtoConfig) {
        self.proto = proto;
    }

    /// A confirmed session's current state_version.
    pub fn state_version(&self, session_id: SessionId) -> Option<u64> {
        self.sessions
            .values()
            .find(|s| s.session.id() == session_id)
            .map(|s| s.machine.version())
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
                endpoint: s.binding.current(),
                validated: s.binding.validated(),
                state: s.machine.state(),
                key_epoch: s.session.epoch(),
                key_age: now.saturating_duration_since(s.session.key_installed()),
                state_version: s.machine.version(),
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
        local: Option<IpAddr>,
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
        if let Some(old) = state.pending.replace(tag) {
            self.forget(old);
        }
        let mut session =
            Session::new(root, false, tag, sender, self.proto.replay_window_bits, now);
        session.set_grace(self.proto.keys.grace);
        self.sessions.insert(
            tag,
            GwSession {
                session,
                peer,
                binding: Binding::new(remote, self.proto.paths.validation_timeout),
                local_ip: local,
                machine: Machine::new(now),
                rekey_resp: None,
                bad_controls: 0,
                last_replay_event: None,
                confirmed: false,
                audit_seen: VecDeque::new(),
                path_of: VecDeque::new(),
                last_rx: None,
                max_path: 0,
                registered_upto: 0,
                send_cache: None,
                recent: RecentSend::new(),
            },
        );
        self.register_paths(tag);
        self.transmits.push_back(OwnedTransmit {
            via: UplinkId::DEFAULT,
            src_ip: local,
            dst: remote,
            payload: out,
        });
    }

    fn on_sealed(
        &mut self,
        kind: SealedKind,
        (tag, path): (RoutingTag, u32),
        datagram: &mut [u8],
        (local, remote): (Option<IpAddr>, SocketAddr),
        now: Instant,
    ) -> Received {
        let len = datagram.len();
        let Some(s) = self.sessions.get_mut(&tag) else {
            self.on_tombstone((tag, path), kind, datagram, remote, now);
            return Received::Nothing;
        };
        // A duplicate from another address than the binding's is authenticated rather than
        // dropped blind: during a tentative move it is evidence of a race (binding module).
        let allow_duplicate = kind == SealedKind::Control || remote != s.binding.current();
        let opened = match s.session.open(kind, datagram, now, allow_duplicate) {
            Ok(o) => o,
            Err(reason) => {
                let session_id = s.session.id();
                self.drops.count(reason);
                if reason == DropReason::AuthFailed {
                    self.offence(remote.ip(), Some(session_id), now);
                }
                return Received::Nothing;
            }
        };
        let mut audit_record = false;
        let control = match kind {
            SealedKind::Control => {
                let plain = &datagram[opened.plaintext.clone()];
                match ControlMessage::decode(plain) {
                    Some(m) => Some(m),
                    None if control::audit_record_body(plain).is_some() => {
                        audit_record = true;
                        None
                    }
                    None => {
                        if !opened.duplicate {
                            self.bad_control(tag, now);
                        }
                        return Received::Nothing;
                    }
                }
            }
            SealedKind::Data => None,
        };
        if opened.duplicate {
            self.on_duplicate(tag, control, remote, now);
            return Received::Nothing;
        }
        if local.is_some() {
            s.local_ip = local;
        }
        if s.note_path(remote, path) {
            self.register_paths(tag);
        }
        let Some(s) = self.sessions.get_mut(&tag) else {
            return Received::Nothing;
        };
        if let Some(epoch) = opened.promoted {
            let session_id = s.session.id();
            s.rekey_resp = None;
            self.events.push_back(Event::KeyRotated {
                session_id,
                epoch,
                trigger: RekeyTrigger::PeerInitiated,
            });
        }
        let Some(s) = self.sessions.get_mut(&tag) else {
            return Received::Nothing;
        };
        if !s.confirmed {
            self.confirm(tag, now);
        }
        let Some(s) = self.sessions.get_mut(&tag) else {
            return Received::Nothing;
        };
        s.binding.on_received(remote, len);
        let moves = !control
            .as_ref()
            .is_some_and(|m| m.is_probing() || matches!(m, ControlMessage::Reattach(_)));
        // Tokens are drawn only for a packet from another address: not per packet.
        if moves && opened.newest && remote != s.binding.current() {
            let tokens = [self.token(), self.token()];
            let s = self.sessions.get_mut(&tag).expect("looked up above");
            let old = s.binding.current();
            let challenges = s.binding.on_newest(remote, len, tokens, now);
            let moved = s.binding.current() == remote;
            if !challenges.is_empty() {
                tracing::debug!(session_id = %s.session.id(), %remote, "new source address; validating");
            }
            for (addr, token) in challenges {
                self.send_control(tag, addr, ControlMessage::PathChallenge(token), now);
            }
            if moved {
                // A NAT that changed its mapping dropped what we sent to the old one.
                self.resend_recent(tag, old, now);
            }
        }
        if let Some(m) = control {
            self.on_control(tag, m, opened.newest, len, remote, now);
            return Received::Nothing;
        }
        if audit_record {
            let plain = &datagram[opened.plaintext.clone()];
            let body = control::audit_record_body(plain).expect("checked when decoding");
            self.on_audit_record(tag, body, remote, now);
            return Received::Nothing;
        }
        let s = self.sessions.get_mut(&tag).expect("looked up above");
        let inner = &datagram[opened.plaintext.clone()];
        if inner.is_empty() {
            self.answer_keepalive(tag, now);
            return Received::Nothing;
        }
        let peer = s.peer;
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

    /// An authenticated duplicate: never delivered. A path response is still honoured (a racer
    /// may have delivered its copy first), and during a tentative move its source is challenged
    /// as a competitor.
    fn on_duplicate(
        &mut self,
        tag: RoutingTag,
        control: Option<ControlMessage>,
        remote: SocketAddr,
        now: Instant,
    ) {
        if control.is_some() {
            // An authenticated copy of a control packet: a real replay, reported at most once
            // a second per session (copies that fail authentication are only counted).
            if let Some(s) = self.sessions.get_mut(&tag) {
                if s.last_replay_event
                    .is_none_or(|t| now >= t + Duration::from_secs(1))
                {
                    s.last_replay_event = Some(now);
                    let session_id = s.session.id();
                    self.events
                        .push_back(Event::SecurityReplayDetected { session_id });
                }
            }
        }
        self.drops.count(DropReason::Replay);
        if let Some(ControlMessage::PathResponse(token)) = control {
            let Some(s) = self.sessions.get_mut(&tag) else {
                return;
            };
            if let Some(v) = s.binding.on_response(remote, token) {
                self.validated(tag, v, now);
            }
            return;
        }
        let reattach_seq = match control {
            Some(ControlMessage::Reattach(r)) => Some(r.seq),
            Some(_) => return,
            None => None,
        };
        let token = self.token();
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        if let Some((addr, token)) = s.binding.on_duplicate(remote, reattach_seq, token, now) {
            tracing::debug!(session_id = %s.session.id(), %remote, "duplicate from another address during a move; challenging it");
            self.send_control(tag, addr, ControlMessage::PathChallenge(token), now);
        }
    }

    fn on_control(
        &mut self,
        tag: RoutingTag,
        msg: ControlMessage,
        newest: bool,
        len: usize,
        remote: SocketAddr,
        now: Instant,
    ) {
        match msg {
            ControlMessage::Close(_) => {
                self.end(tag, Reason::PeerTerminated, CloseReason::PeerClosed, now)
            }
            ControlMessage::Probe(seq) => {
                self.send_control(tag, remote, ControlMessage::ProbeAck(seq), now)
            }
            ControlMessage::PathResponse(token) => {
                let Some(s) = self.sessions.get_mut(&tag) else {
                    return;
                };
                if let Some(v) = s.binding.on_response(remote, token) {
                    self.validated(tag, v, now);
                }
            }
            ControlMessage::Reattach(r) => self.on_reattach(tag, r, newest, len, remote, now),
            ControlMessage::RekeyInit { epoch, public } => {
                self.on_rekey_init(tag, epoch, &public, remote, now)
            }
            _ => self.bad_control(tag, now),
        }
    }

    /// A signed audit record from the session's laptop: acknowledged at once (a resent copy
    /// too), queued once for the node to verify against the peer's identity and witness.
    fn on_audit_record(&mut self, tag: RoutingTag, body: &[u8], remote: SocketAddr, now: Instant) {
        let digest = audit::digest(body);
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        if !s.audit_seen.contains(&digest) {
            if s.audit_seen.len() >= audit::SEEN_KEPT {
                s.audit_seen.pop_front();
            }
            s.audit_seen.push_back(digest);
            if self.audit.len() >= audit::RECEIVED_LIMIT {
                self.audit.pop_front();
                self.audit_overflow += 1;
            }
            self.audit.push_back(ReceivedRecord {
                session_id: s.session.id(),
                peer: s.peer,
                from: remote,
                bytes: body.to_vec(),
            });
        }
        self.send_control(tag, remote, ControlMessage::AuditAck(digest), now);
    }

    /// Next received audit record to verify and witness.
    pub fn poll_audit(&mut self) -> Option<ReceivedRecord> {
        self.audit.pop_front()
    }

    /// Rekey responder: prepares the next epoch and answers with its own ephemeral key; the
    /// epoch becomes current when the first packet under it arrives. A retransmitted
    /// RekeyInit gets the same answer.
    fn on_rekey_init(
        &mut self,
        tag: RoutingTag,
        epoch: u32,
        public: &[u8; 32],
        remote: SocketAddr,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get(&tag) else {
            return;
        };
        let current = s.session.epoch();
        let answered = s.rekey_resp.filter(|(e, _)| *e == epoch);
        let reply = match answered {
            Some((_, ours)) if epoch == current + 1 || epoch == current => Some(ours),
            None if epoch == current + 1 => {
                let ephemeral = Ephemeral::generate(&mut self.rng);
                match ephemeral.shared(public) {
                    Some(shared) => {
                        let s = self.sessions.get_mut(&tag).expect("looked up above");
                        s.session.prepare_epoch(epoch, &shared, now);
                        s.rekey_resp = Some((epoch, ephemeral.public));
                        Some(ephemeral.public)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        match reply {
            Some(ours) => self.send_control(
                tag,
                remote,
                ControlMessage::RekeyResp {
                    epoch,
                    public: ours,
                },
                now,
            ),
            None => self.bad_control(tag, now),
        }
    }

    /// An authenticated control packet that makes no sense: past a small bound, evidence that
    /// the session's keys are in the wrong hands (S9).
    fn bad_control(&mut self, tag: RoutingTag, now: Instant) {
        self.drops.count(DropReason::BadControl);
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        s.bad_controls += 1;
        if s.bad_controls > super::client::BAD_CONTROL_LIMIT {
            let session_id = s.session.id();
            self.events
                .push_back(Event::SecurityKeyCompromiseSuspected {
                    session_id,
                    evidence: "malformed_authenticated_control",
                });
            self.end(
                tag,
                Reason::SecurityFailure,
                CloseReason::LocalShutdown,
                now,
            );
        }
    }

    /// REQUIREMENTS J3: an authenticated (proof-of-possession), replay-checked reattach with
    /// the newest counter, a fresh timestamp and a current state_version. A refusal never
    /// changes the binding.
    fn on_reattach(
        &mut self,
        tag: RoutingTag,
        r: Reattach,
        newest: bool,
        len: usize,
        remote: SocketAddr,
        now: Instant,
    ) {
        let max_age = self.proto.paths.reattach_proof_max_age;
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        let session_id = s.session.id();
        let gw_elapsed = now.saturating_duration_since(s.session.created).as_millis() as u64;
        let reject = if !newest || gw_elapsed.abs_diff(r.elapsed_ms) > max_age.as_millis() as u64 {
            Some(RejectReason::StaleRequest)
        } else if r.state_version > s.machine.version()
            || (r.state_version < s.machine.version() && remote != s.binding.current())
        {
            Some(RejectReason::StaleStateVersion)
        } else {
            None
        };
        if let Some(reason) = reject {
            self.events.push_back(Event::ReattachResult {
                session_id,
                status: ReattachStatus::Rejected(reason),
            });
            let state_version = s.machine.version();
            let reply = ControlMessage::ReattachReject {
                seq: r.seq,
                reason,
                state_version,
            };
            self.send_control(tag, remote, reply, now);
            return;
        }
        if remote == s.binding.current() && s.binding.validated() && s.binding.settled() {
            // Already there (a retry whose acknowledgement was lost, or a re-anchor on the same
            // bearer after a silence): acknowledge; the path is proven by this round trip too.
            let state_version = s.machine.version();
            self.send_control(
                tag,
                remote,
                ControlMessage::ReattachAck {
                    seq: r.seq,
                    state_version,
                },
                now,
            );
            return;
        }
        let token = self.token();
        let s = self.sessions.get_mut(&tag).expect("looked up above");
        let (addr, token) = s
            .binding
            .on_reattach(remote, len, r.old_path_alive, r.seq, token, now);
        if !r.old_path_alive {
            // M6: the reattach is the evidence that the old path died.
            self.transition(tag, State::Volatile, Reason::TransportDead, now);
            self.transition(tag, State::Recovering, Reason::DeadTransportRecovery, now);
        }
        tracing::debug!(%session_id, %remote, make_before_break = r.old_path_alive, "reattach; validating the new path");
        self.send_control(tag, addr, ControlMessage::PathChallenge(token), now);
    }

    /// Sends the last data datagram again to the binding's (new) address if it went to `old`
    /// lately, within the new address's anti-amplification budget.
    fn resend_recent(&mut self, tag: RoutingTag, old: SocketAddr, now: Instant) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        let dst = s.binding.current();
        // Only a datagram of the path the new address uses (a NAT rebinding keeps the laptop's
        // path): one sent with another path's tag would tie the two paths together (J11).
        let path_tag = s.tag_for(dst).0.to_le_bytes();
        let Some(payload) = s.recent.to_resend(old, now) else {
            return;
        };
        if payload[4..8] != path_tag || !s.binding.may_send(payload.len()) {
            return;
        }
        self.resent += 1;
        self.transmits.push_back(OwnedTransmit {
            via: UplinkId::DEFAULT,
            src_ip: s.local_ip,
            dst,
            payload,
        });
    }

    fn validated(&mut self, tag: RoutingTag, v: Validation, now: Instant) {
        let Some(s) = self.sessions.get(&tag) else {
            return;
        };
        let session_id = s.session.id();
        let dst = s.binding.current();
        let recovering = s.machine.state() == State::Recovering;
        if recovering {
            match v {
                Validation::Validated { .. } => {
                    self.transition(tag, State::Attached, Reason::ReattachSuccess, now)
                }
                Validation::Reverted { .. } | Validation::Abandoned { .. } => {
                    self.transition(tag, State::Degraded, Reason::ReattachValidationFailed, now)
                }
            }
        }
        let state_version = self.sessions.get(&tag).map_or(0, |s| s.machine.version());
        match v {
            Validation::Validated {
                reattach_seq,
                moved,
            } => {
                if moved {
                    self.events.push_back(Event::BindingMoved {
                        session_id,
                        state_version,
                        reattach: reattach_seq.is_some(),
                    });
                }
                if reattach_seq.is_some() {
                    self.events.push_back(Event::ReattachResult {
                        session_id,
                        status: ReattachStatus::Accepted,
                    });
                }
                if moved || reattach_seq.is_some() {
                    // Sequence 0 tells the laptop of a move it did not ask for (a NAT
                    // rebinding): its next reattach must carry the new state_version.
                    let seq = reattach_seq.unwrap_or(0);
                    let ack = ControlMessage::ReattachAck { seq, state_version };
                    self.send_control(tag, dst, ack, now);
                }
            }
            Validation::Reverted { .. } => {
                self.events.push_back(Event::BindingReverted { session_id })
            }
            Validation::Abandoned { reattach_seq } => {
                if reattach_seq.is_some() {
                    self.events.push_back(Event::ReattachResult {
                        session_id,
                        status: ReattachStatus::Rejected(RejectReason::ValidationFailed),
                    });
                }
            }
        }
    }

    fn challenge_timers(&mut self, now: Instant) {
        let sessions = &self.sessions;
        self.challenged
            .retain(|t| sessions.get(t).is_some_and(|s| !s.binding.settled()));
        let due: Vec<RoutingTag> = self
            .challenged
            .iter()
            .filter(|t| {
                sessions[*t]
                    .binding
                    .next_deadline()
                    .is_some_and(|d| now >= d)
            })
            .copied()
            .collect();
        for tag in due {
            let Some(s) = self.sessions.get_mut(&tag) else {
                continue;
            };
            let (resend, outcomes) = s.binding.on_timeout(now);
            for (addr, token) in resend {
                self.send_control(tag, addr, ControlMessage::PathChallenge(token), now);
            }
            for v in outcomes {
                self.validated(tag, v, now);
            }
        }
    }

    /// J9: failed authentications are offences, counted per source. Events are rate limited:
    /// the first failure in a window and the one that crosses the policy limit are reported;
    /// after that the source is only counted. Nothing here ever blocks authenticated traffic,
    /// so a spoofed source cannot be used to shut the real laptop out.
    fn offence(&mut self, source: IpAddr, session_id: Option<SessionId>, now: Instant) {
        let limit = self.proto.paths.max_auth_failures;
        let window = self.proto.paths.auth_failure_window;
        if !self.offenders.contains_key(&source) && self.offenders.len() >= OFFENDERS_KEPT {
            if let Some(oldest) = self
                .offenders
                .iter()
                .min_by_key(|(_, o)| o.window_start)
                .map(|(k, _)| *k)
            {
                self.offenders.remove(&oldest);
            }
        }
        let o = self.offenders.entry(source).or_insert(Offence {
            window_start: now,
            failures: 0,
        });
        if now >= o.window_start + window {
            *o = Offence {
                window_start: now,
                failures: 0,
            };
        }
        o.failures += 1;
        let failures = o.failures;
        if failures == 1 || failures == limit + 1 {
            self.events.push_back(Event::SecurityValidationFailed {
                session_id,
                failures,
                suppressed: failures > limit,
            });
        }
    }

    /// The first authenticated packet on a new session makes it the peer's current one.
    fn confirm(&mut self, tag: RoutingTag, now: Instant) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        s.confirmed = true;
        let (peer, session_id) = (s.peer, s.session.id());
        let state = &mut self.peers[peer];
        if state.pending == Some(tag) {
            state.pending = None;
        }
        let old = state.current.replace(tag).filter(|o| *o != tag);
        let previous = old
            .and_then(|o| self.sessions.get(&o))
            .map(|s| s.session.id());
        if let Some(old) = old {
            self.end(old, Reason::Rehandshake, CloseReason::Replaced, now);
            // `end` cleared the peer's current session if it was the old one; it is the new one.
            self.peers[peer].current = Some(tag);
        }
        self.events.push_back(Event::SessionEstablished {
            session_id,
            peer,
            previous,
        });
        self.transition(tag, State::Attached, Reason::AttachedToTransport, now);
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
        if !s.binding.may_send(DATA_OVERHEAD) {
            return;
        }
        let tag = s.tag_for(s.binding.current());
        if let Some(payload) = s.session.keepalive_packet(tag, now) {
            self.transmits.push_back(OwnedTransmit {
                via: UplinkId::DEFAULT,
                src_ip: s.local_ip,
                dst: s.binding.current(),
                payload,
            });
        }
    }

    fn send_control(
        &mut self,
        tag: RoutingTag,
        dst: SocketAddr,
        msg: ControlMessage,
        now: Instant,
    ) {
        if matches!(msg, ControlMessage::PathChallenge(_)) {
            // Its resends and expiry are driven by `challenge_timers`.
            self.challenged.insert(tag);
        }
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        let path_tag = s.tag_for(dst);
        let Some(payload) = s.session.control_packet(msg, path_tag, now) else {
            return;
        };
        // (A packet refused here just leaves a gap in the control counters.)
        if dst == s.binding.current() && !s.binding.may_send(payload.len()) {
            self.drops.count(DropReason::AmplificationLimit);
            return;
        }
        self.transmits.push_back(OwnedTransmit {
            via: UplinkId::DEFAULT,
            src_ip: s.local_ip,
            dst,
            payload,
        });
    }

    fn token(&mut self) -> [u8; 8] {
        self.rng.next_u64().to_le_bytes()
    }

    /// Ends a session: TERMINATED with `reason` (reported with its ages), then forgotten.
    fn end(&mut self, tag: RoutingTag, reason: Reason, close: CloseReason, now: Instant) {
        self.transition(tag, State::Terminated, reason, now);
        let Some(s) = self.forget(tag) else { return };
        self.events.push_back(Event::SessionTerminated {
            session_id: s.session.id(),
            reason,
            state_version: s.machine.version(),
            session_age: now.saturating_duration_since(s.session.created),
            transportless_age: None,
        });
        self.events.push_back(Event::SessionClosed {
            session_id: s.session.id(),
            peer: s.peer,
            reason: close,
        });
        if let Some(knowledge) = knowledge_after(reason) {
            self.bury(tag, s, knowledge, now);
        }
    }

    /// Keeps an ended session's keys for a while, so a laptop that still uses them learns
    /// what happened (F1) instead of waiting for its timers.
    fn bury(&mut self, tag: RoutingTag, s: GwSession, knowledge: SessionKnowledge, now: Instant) {
        if self.tombstones.len() >= TOMBSTONES_KEPT {
            if let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.until)
                .map(|(k, _)| *k)
            {
                self.tombstones.remove(&oldest);
            }
        }
        self.tombstones.insert(
            tag,
            Tombstone {
                session: s.session,
                knowledge,
                local_ip: s.local_ip,
                until: now + TOMBSTONE_TTL,
                last_frame: None,
            },
        );
    }

    /// A sealed packet for a tag with no live session. If a tombstone holds it and the packet
    /// proves the session's keys, the sender gets the trusted status frame; everyone else —
    /// unknown tag, bad MAC, wrong key — gets exactly the same: nothing.
    #[allow(clippy::too_many_arguments)]
    fn on_tombstone(
        &mut self,
        (tag, path): (RoutingTag, u32),
        kind: SealedKind,
        datagram: &mut [u8],
        remote: SocketAddr,
        now: Instant,
    ) {
        self.drops.count(DropReason::UnknownTag);
        let Some(t) = self.tombstones.get_mut(&tag).filter(|t| now < t.until) else {
            return;
        };
        if t.session.open(kind, datagram, now, false).is_err() {
            return;
        }
        if t.last_frame
            .is_some_and(|l| now < l + STATUS_FRAME_INTERVAL)
        {
            return;
        }
        t.last_frame = Some(now);
        let frame = gateway_frame(Relationship::Related, t.knowledge);
        if frame.is_silent() {
            return;
        }
        let msg = ControlMessage::StatusFrame(frame.encode());
        let path_tag = t.session.path_tag_pair(path).1;
        if let Some(payload) = t.session.control_packet(msg, path_tag, now) {
            self.transmits.push_back(OwnedTransmit {
                via: UplinkId::DEFAULT,
                src_ip: t.local_ip,
                dst: remote,
                payload,
            });
        }
    }

    /// Applies a state transition to a session's machine and reports it (refusals are logged
    /// by the machine and change nothing).
    fn transition(&mut self, tag: RoutingTag, to: State, reason: Reason, now: Instant) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        if let Ok(t) = s.machine.apply(to, reason, now) {
            self.events.push_back(Event::SessionStateChange {
                session_id: s.session.id(),
                previous_state: t.from,
                new_state: t.to,
                reason: t.reason,
                state_version: t.version,
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
            if !self.sessions.contains_key(&t)
                && !self.tombstones.contains_key(&t)
                && !self.aliases.contains_key(&t)
            {
                return t;
            }
        }
    }

    /// Registers a session's path tags up to `PATH_LOOKAHEAD` past its highest used path. A
    /// tag another session holds is skipped (counted): never two owners for one tag.
    fn register_paths(&mut self, tag: RoutingTag) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        let upto = s.max_path.saturating_add(PATH_LOOKAHEAD);
        let from = s.registered_upto + 1;
        s.registered_upto = upto;
        let wanted: Vec<(u32, RoutingTag)> = (from..=upto)
            .map(|i| (i, s.session.path_tag_pair(i).0))
            .collect();
        for (i, t) in wanted {
            if self.sessions.contains_key(&t)
                || self.tombstones.contains_key(&t)
                || self.aliases.contains_key(&t)
            {
                self.tag_collisions += 1;
                continue;
            }
            self.aliases.insert(t, (tag, i));
        }
    }

    /// Unregisters path tags of ended sessions, and used paths far behind a session's highest
    /// that no recent address uses (housekeeping).
    fn retire_path_tags(&mut self) {
        let sessions = &self.sessions;
        let tombstones = &self.tombstones;
        self.aliases
            .retain(|_, (owner, idx)| match sessions.get(owner) {
                Some(s) => {
                    *idx + PATHS_KEPT > s.max_path || s.path_of.iter().any(|(_, i)| i == idx)
                }
                None => tombstones.contains_key(owner),
            });
    }
}

/// What the gateway tells a proven peer about a session that ended for `reason`; `None` keeps
/// no tombstone (this node is going away).
fn knowledge_after(reason: Reason) -> Option<SessionKnowledge> {
    match reason {
        Reason::LocalShutdown => None,
        Reason::SessionLifetimeExceeded | Reason::KeyExpired | Reason::RecoveryWindowExpired => {
            Some(SessionKnowledge::Expired)
        }
        Reason::Rehandshake => Some(SessionKnowledge::Superseded),
        Reason::SecurityFailure => Some(SessionKnowledge::KeyRevoked),
        _ => Some(SessionKnowledge::Terminated),
    }
}
