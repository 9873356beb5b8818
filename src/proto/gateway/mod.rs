//! The gateway side: many sessions in a table keyed by routing tag. A datagram is attributed
//! to a session only after it authenticates under that session's keys; the source address is
//! never used to find a session, and it moves a session's binding only under the rules of
//! [`super::binding`]. Initiations from keys that are not configured peers, stale (replayed)
//! initiations and everything else that fails get no reply at all.
//!
//! The rooms: `table` (sessions, path tags, tombstones; one lookup per datagram), `handshake`
//! (initiation → response), `receive` (open → classify → dispatch), `migrate` (reattach,
//! validation, races, resend after a rebinding) and `tombstone`. Handlers work on one session
//! and an `Outputs`, a borrow separate from the table.

mod handshake;
mod migrate;
mod receive;
mod session;
mod table;
mod tombstone;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use zeroize::Zeroizing;

use self::handshake::PeerState;
use self::receive::Offenders;
use self::session::Bounds;
use self::table::SessionTable;
use super::audit::{self, ReceivedRecord};
use super::control::ControlMessage;
use super::handshake::StaticKeys;
use super::inner;
use super::iptable::IpTable;
use super::node::{AuditItem, Core, SessionSummary};
use super::path::Uplink;
use super::session::SessionStats;
use super::state::{Reason, State};
use super::wire::{self, Packet, DATA_OVERHEAD};
use super::{
    CloseReason, DropCounters, DropReason, Event, OwnedTransmit, ProtoConfig, Received, Seed,
    SessionId, SocketChange, Timer, Transmit, UplinkId,
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
    table: SessionTable,
    out: Outputs,
    offenders: Offenders,
    next_housekeeping: Instant,
    /// Audit records dropped because the node fell behind by `audit::RECEIVED_LIMIT`.
    pub audit_overflow: u64,
    /// Path tags not registered because another session holds them (that path is unusable
    /// for its session; the laptop moves to a fresh index when the move fails).
    pub tag_collisions: u64,
    /// Data datagrams sent again after the binding left their address.
    pub resent: u64,
}

/// What handling an input produces (datagrams, events, drop counts, received audit records)
/// and the randomness it draws: the borrow a session's handlers take beside their session.
#[derive(Debug)]
struct Outputs {
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    /// Audit records received, for the node to verify and witness.
    audit: VecDeque<ReceivedRecord>,
    rng: ChaCha20Rng,
}

impl Outputs {
    fn new(rng: ChaCha20Rng) -> Self {
        Self {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            audit: VecDeque::new(),
            rng,
        }
    }

    /// Queues a datagram from the gateway's socket.
    fn send(&mut self, src_ip: Option<IpAddr>, dst: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(OwnedTransmit {
            via: UplinkId::DEFAULT,
            src_ip,
            dst,
            payload,
        });
    }

    /// A path-challenge token.
    fn token(&mut self) -> [u8; 8] {
        self.rng.next_u64().to_le_bytes()
    }

    /// Queues a received audit record; returns whether the oldest was dropped to make room.
    fn queue_audit(&mut self, record: ReceivedRecord) -> bool {
        let full = self.audit.len() >= audit::RECEIVED_LIMIT;
        if full {
            self.audit.pop_front();
        }
        self.audit.push_back(record);
        full
    }
}

impl Gateway {
    /// Creates the core.
    pub fn new(cfg: GatewayConfig, seed: Seed, now: Instant) -> Self {
        let mut by_static = BTreeMap::new();
        let mut routes = IpTable::default();
        let peers: Vec<PeerState> = cfg
            .peers
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                by_static.insert(spec.public, i);
                for net in &spec.allowed_ips {
                    routes.insert(*net, i);
                }
                PeerState::new(spec)
            })
            .collect();
        Self {
            keys: cfg.keys,
            proto: cfg.proto,
            table: SessionTable::new(peers.len()),
            peers,
            by_static,
            routes,
            out: Outputs::new(seed.rng()),
            offenders: Offenders::default(),
            next_housekeeping: now + HOUSEKEEPING,
            audit_overflow: 0,
            tag_collisions: 0,
            resent: 0,
        }
    }
}

/// The gateway's side of the contract ([`Core`]); the module doc says what each input does here.
impl Core for Gateway {
    /// To the peer whose `allowed_ips` hold the packet's destination, at its current binding.
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        let drops = &mut self.out.drops;
        let ends = inner::to_seal(buf, len, drops)?;
        let Some(&peer) = self.routes.lookup(ends.dst) else {
            drops.count(DropReason::NoRoute);
            return None;
        };
        let Some(s) = self.table.current_mut(peer) else {
            drops.count(DropReason::NoSession);
            return None;
        };
        if !s.binding.may_send(len + DATA_OVERHEAD) {
            drops.count(DropReason::AmplificationLimit);
            return None;
        }
        let dst = s.binding.current();
        s.paths.choose_for(dst, s.session.path_tags_mut());
        let Some(n) = s.session.seal_data(buf, len, now) else {
            drops.count(DropReason::CounterExhausted);
            return None;
        };
        s.recent.record(&buf[..n], dst, now);
        Some(Transmit {
            via: UplinkId::DEFAULT,
            src_ip: s.local_ip,
            dst,
            len: n,
        })
    }

    fn handle_datagram(
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
            Err(_) => self.out.drops.count(DropReason::Malformed),
            Ok(Packet::HandshakeInit { sender, noise }) => {
                let noise = noise.to_vec();
                self.on_initiation(sender, &noise, (local, remote), now);
            }
            Ok(Packet::HandshakeResp { .. }) => {
                self.out.drops.count(DropReason::UnexpectedResponse)
            }
            Ok(Packet::Sealed { kind, receiver }) => {
                return self.on_sealed(kind, receiver, &mut buf[..len], (local, remote), now);
            }
        }
        Received::Nothing
    }

    /// Path challenges, and once a second the sweep of idle sessions.
    fn handle_timeout(&mut self, now: Instant) {
        self.challenge_timers(now);
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + HOUSEKEEPING;
        self.table
            .sweep(Bounds::of(&self.proto), &mut self.out, now);
        let window = self.proto.paths.auth_failure_window;
        self.offenders.sweep(window, now);
    }

    /// The gateway listens on one socket; it has no uplinks to choose from.
    fn handle_uplinks(&mut self, _snapshot: Vec<Uplink>, _now: Instant) {}

    /// The default socket is the only one; there is no other path to try.
    fn handle_send_error(&mut self, _via: UplinkId, _now: Instant) {}

    /// Every peer with a session is told.
    fn shutdown(&mut self, now: Instant) {
        let tags: Vec<_> = self.table.confirmed().map(|(t, _)| t).collect();
        for tag in tags {
            let close = ControlMessage::Close(CloseReason::LocalShutdown);
            self.close(tag, close, Reason::LocalShutdown, now);
        }
    }

    /// TERMINATED with `operator_terminated`, and the laptop is told.
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        let Some(tag) = self
            .table
            .confirmed()
            .find(|(_, s)| s.session.id() == session_id)
            .map(|(t, _)| t)
        else {
            return Err(format!(
                "no session {} on this gateway",
                session_id.to_hex()
            ));
        };
        let close = ControlMessage::Close(CloseReason::PeerClosed);
        self.close(tag, close, Reason::OperatorTerminated, now);
        Ok(format!(
            "session {} terminated (operator_terminated)",
            session_id.to_hex()
        ))
    }

    /// To every session from now on.
    fn set_proto(&mut self, proto: ProtoConfig, _now: Instant) {
        self.proto = proto;
    }

    /// The gateway signs nothing of its own.
    fn send_audit_record(&mut self, _session_id: SessionId, _bytes: Vec<u8>, _now: Instant) {}

    /// The gateway opens no socket: it listens on the default one.
    fn poll_socket_change(&mut self) -> Option<SocketChange> {
        None
    }

    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.out.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// A received record to verify and witness.
    fn poll_audit(&mut self) -> Option<AuditItem> {
        self.out.audit.pop_front().map(AuditItem::Received)
    }

    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        match self.table.next_challenge() {
            Some(t) if t < self.next_housekeeping => Some((t, Timer::Reattach)),
            _ => Some((self.next_housekeeping, Timer::Housekeeping)),
        }
    }

    /// Confirmed sessions, in routing-tag order.
    fn sessions(&self, now: Instant) -> Vec<SessionSummary> {
        self.session_views(now)
            .into_iter()
            .map(|v| SessionSummary {
                session_id: v.session_id,
                peer: Some(v.peer),
                state: Some((v.state, v.state_version)),
                remote: Some(v.endpoint),
                bearer: None,
                stats: v.stats,
                key_epoch: v.key_epoch,
                key_age: v.key_age,
                age: v.age,
                since_last_recv: v.since_last_recv,
            })
            .collect()
    }

    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        self.table.by_id(session_id).map(|s| s.machine.version())
    }

    fn drop_counts(&self) -> &DropCounters {
        &self.out.drops
    }

    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        vec![("received_overflow", self.audit_overflow)]
    }
}

impl Gateway {
    /// Confirmed sessions, in routing-tag order, with the gateway's own view of each (its
    /// binding and whether that is validated).
    pub fn session_views(&self, now: Instant) -> Vec<SessionView> {
        self.table
            .confirmed()
            .map(|(_, s)| SessionView {
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

    /// Tells the laptop of session `tag` that it ends (`msg`), and ends it for `reason`.
    fn close(
        &mut self,
        tag: super::wire::RoutingTag,
        msg: ControlMessage,
        reason: Reason,
        now: Instant,
    ) {
        if let Some(s) = self.table.get_mut(tag) {
            let dst = s.binding.current();
            s.send_control(&mut self.out, dst, msg, now);
        }
        let close = CloseReason::LocalShutdown;
        self.table.end(tag, reason, close, &mut self.out, now);
    }
}
