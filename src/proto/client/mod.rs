//! The laptop side: one session to one gateway, carried by whichever uplink the path logic
//! ([`super::path`]) chooses. It starts the handshake at construction, retransmits with
//! exponential backoff and jitter, queues a few packets while it has no session, keeps the path
//! alive, reattaches over a new bearer without a new handshake, and replaces a session that has
//! gone silent on every path (a new handshake means a new SessionID, reported as such).
//!
//! This file is the API and the state; each concern works on its own part of it:
//! - `handshake.rs`: initiation, retries, the response, the start and end of a session;
//! - `receive.rs`: a sealed datagram opened, classified and dispatched;
//! - `paths.rs`: per-path tag slots, the path logic's decisions, sending on a path;
//! - `sockets.rs`: the sockets the driver is to have open (the core is their only owner);
//! - `moving.rs`: the moving target (J10), a new socket on a cadence;
//! - `rekey.rs`: rekey start, answer, resend and key expiry;
//! - `audit.rs`: re-anchor drafts and the outbox of signed records.

mod audit;
mod handshake;
mod moving;
mod paths;
mod receive;
mod rekey;
mod sockets;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use self::audit::AuditTrail;
use self::handshake::Handshaking;
use self::paths::PathSlots;
use self::rekey::Rekeying;
use self::sockets::OpenSockets;
use super::audit::AuditCounters;
use super::control::ControlMessage;
use super::handshake::{StaticKeys, Timestamp};
use super::inner;
use super::iptable::IpTable;
use super::keys::SessionId;
use super::lifecycle::Lifecycle;
use super::node::{AuditItem, Core, SessionSummary};
use super::path::{PathAction, PathManager, Uplink};
use super::rekey::RekeyTrigger;
use super::session::Session;
use super::state::{Reason, State};
use super::wire::{self, Packet, HEADER_LEN};
use super::{
    CloseReason, DropCounters, DropReason, Event, OwnedTransmit, ProtoConfig, Received, Seed,
    SocketChange, Timer, Transmit, UplinkId, WallClock,
};

/// Packets held while no session exists.
const QUEUE_LIMIT: usize = 64;
/// Authenticated but senseless control packets tolerated per session (S9).
pub const BAD_CONTROL_LIMIT: u32 = 8;

/// What the laptop core needs to know.
#[derive(Debug)]
pub struct ClientConfig {
    pub keys: StaticKeys,
    /// The gateway's Noise static key (X25519).
    pub gateway_public: [u8; 32],
    pub psk: Zeroizing<[u8; 32]>,
    pub endpoint: SocketAddr,
    /// Inner networks the gateway may send from (the tunnel's routes).
    pub routes: Vec<IpNet>,
    pub proto: ProtoConfig,
    /// Make a `transport.rebind` draft for every completed re-anchor (E5).
    pub audit: bool,
}

/// The laptop core.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    routes: IpTable<()>,
    rng: ChaCha20Rng,
    clock: WallClock,
    /// The handshake that is due or under way.
    handshake: Handshaking,
    session: Option<Session>,
    /// The current session's state machine and bounds.
    life: Option<Lifecycle>,
    /// The last session that ended (reported as `previous` of the next one).
    previous: Option<SessionId>,
    /// Authenticated control packets that made no sense (S9 evidence).
    bad_controls: u32,
    paths: PathManager,
    /// The path logic's decisions, a buffer kept so the data path does not allocate.
    actions: Vec<PathAction>,
    /// The paths of the current session and their tags.
    slots: PathSlots,
    /// The sockets the driver is to have open, and the changes it has not polled yet.
    sockets: OpenSockets,
    /// The next moving-target move (J10), when the policy asks for them.
    next_move: Option<Instant>,
    rekey: Rekeying,
    audit: AuditTrail,
    /// Packets held while no session exists.
    queue: VecDeque<Vec<u8>>,
    out: Outputs,
    drops: DropCounters,
    shut_down: bool,
}

/// What the core hands to its caller, queued until polled. A borrow of its own, so code that
/// works on the session or the paths can report without borrowing the whole client.
#[derive(Debug, Default)]
struct Outputs {
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    /// Events the lifecycle wrote, not queued yet.
    state_events: Vec<Event>,
}

impl Outputs {
    fn transmit(&mut self, via: UplinkId, dst: SocketAddr, payload: Vec<u8>) {
        self.transmits.push_back(OwnedTransmit {
            via,
            src_ip: None,
            dst,
            payload,
        });
    }

    fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Queues what the lifecycle wrote since the last call.
    fn flush_state_events(&mut self) {
        self.events.extend(self.state_events.drain(..));
    }
}

/// The earliest of several deadlines and the timer that explains it (the first one given wins
/// a tie).
struct Earliest(Option<(Instant, Timer)>);

impl Earliest {
    fn consider(&mut self, t: Instant, why: Timer) {
        if self.0.is_none_or(|(b, _)| t < b) {
            self.0 = Some((t, why));
        }
    }
}

impl Client {
    /// Creates the core; the first handshake initiation goes out at the first timeout (now).
    pub fn new(cfg: ClientConfig, seed: Seed, now: Instant, wall: Timestamp) -> Self {
        let mut routes = IpTable::default();
        for r in &cfg.routes {
            routes.insert(*r, ());
        }
        let paths = PathManager::new(cfg.proto.paths.clone(), now);
        Self {
            cfg,
            routes,
            rng: seed.rng(),
            clock: WallClock::new(now, wall),
            handshake: Handshaking::starting_at(now),
            session: None,
            life: None,
            previous: None,
            bad_controls: 0,
            paths,
            actions: Vec::new(),
            slots: PathSlots::default(),
            sockets: OpenSockets::default(),
            next_move: None,
            rekey: Rekeying::default(),
            audit: AuditTrail::default(),
            queue: VecDeque::new(),
            out: Outputs::default(),
            drops: DropCounters::default(),
            shut_down: false,
        }
    }
}

/// The laptop's side of the contract ([`Core`]); the module doc says what each input does here.
impl Core for Client {
    /// To the gateway by the active uplink; held in a short queue while no session exists.
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        inner::to_seal(buf, len, &mut self.drops)?;
        if let Some(s) = self.session.as_mut() {
            if let Some(n) = s.seal_data(buf, len, now) {
                return Some(Transmit {
                    via: self.paths.active(),
                    src_ip: None,
                    dst: self.cfg.endpoint,
                    len: n,
                });
            }
            self.drops.count(DropReason::CounterExhausted);
            self.end_session(CloseReason::CounterExhausted, now);
        }
        if self.queue.len() >= QUEUE_LIMIT {
            self.drops.count(DropReason::QueueFull);
        } else {
            self.queue
                .push_back(buf[HEADER_LEN..HEADER_LEN + len].to_vec());
        }
        None
    }

    fn handle_datagram(
        &mut self,
        via: UplinkId,
        _local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        let len = len.min(buf.len());
        match wire::parse(&buf[..len]) {
            Err(_) => self.drops.count(DropReason::Malformed),
            Ok(Packet::HandshakeResp {
                sender,
                receiver,
                noise,
            }) => {
                let noise = noise.to_vec();
                self.on_response(sender, receiver, &noise, remote, now);
            }
            Ok(Packet::HandshakeInit { .. }) => self.drops.count(DropReason::UnexpectedResponse),
            Ok(Packet::Sealed { kind, receiver }) => {
                return self.on_sealed(kind, receiver, &mut buf[..len], via, now)
            }
        }
        Received::Nothing
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        self.handshake_timers(now);
        self.drive_paths(now, |paths, actions| paths.on_timeout(now, actions));
        self.key_timers(now);
        if let Some(life) = self.life.as_mut() {
            let end = life.on_timeout(now, &mut self.out.state_events);
            self.out.flush_state_events();
            if let Some(reason) = end {
                self.terminate_current(reason, now);
            }
        }
        self.resend_audit_records(now);
        if self.next_move.is_some_and(|t| now >= t) {
            self.move_transport(now);
        }
        let Some(s) = self.session.as_ref() else {
            return;
        };
        if now >= s.last_recv + self.cfg.proto.peer_silent_after {
            self.end_session(CloseReason::PeerSilent, now);
        } else if now >= s.last_send + self.cfg.proto.keepalive {
            self.send_keepalive(now);
        }
    }

    /// The sockets follow the snapshot itself, not the path logic's debounced view of it: a vanished uplink's sockets
    /// close at once, a new one's opens at once.
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant) {
        self.audit.note_uplinks(&snapshot);
        self.sockets.follow(&snapshot);
        self.drive_paths(now, |paths, actions| {
            paths.set_uplinks(snapshot, now, actions)
        });
        self.retire_paths(false);
    }

    fn handle_send_error(&mut self, via: UplinkId, now: Instant) {
        self.drive_paths(now, |paths, actions| paths.on_send_error(via, now, actions));
    }

    fn shutdown(&mut self, now: Instant) {
        if self.session.is_some() {
            self.send_close(now);
            self.end_session_quietly(CloseReason::LocalShutdown, now);
        }
        self.handshake.pending = None;
        self.shut_down = true;
    }

    /// The laptop has one session: ending it starts a new one.
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        match self.session() {
            Some(s) if s.id() == session_id => {
                self.terminate_current(Reason::OperatorTerminated, now);
                Ok(format!(
                    "session {} terminated (operator_terminated); a new session follows",
                    session_id.to_hex()
                ))
            }
            _ => Err(format!("no session {} on this laptop", session_id.to_hex())),
        }
    }

    /// Path and session bounds from now on; key limits too,
    /// and a changed key policy rotates the keys at once (`policy_trigger`). The replay window
    /// size applies to sessions and key epochs created from now on.
    fn set_proto(&mut self, proto: ProtoConfig, now: Instant) {
        let keys_changed = proto.keys != self.cfg.proto.keys;
        self.paths.set_config(proto.paths.clone());
        if let Some(life) = self.life.as_mut() {
            life.set_config(proto.lifecycle.clone());
        }
        let moving_changed = proto.paths.moving_target != self.cfg.proto.paths.moving_target;
        self.cfg.proto = proto;
        if moving_changed {
            self.next_move = self.move_deadline(now);
        }
        if keys_changed {
            self.start_rekey(RekeyTrigger::PolicyTrigger, now);
        }
    }

    /// Sent to the gateway, and again every `audit::RESEND`
    /// until it is acknowledged. A record of a session that has ended is dropped (counted).
    fn send_audit_record(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant) {
        if self.session.as_ref().map(|s| s.id()) != Some(session_id) {
            self.audit.outbox.counters.undelivered += 1;
            return;
        }
        self.send_audit_bytes(&bytes, now);
        self.audit.outbox.push(session_id, bytes, now);
    }

    /// An uplink that appeared or vanished, a moving-target move.
    fn poll_socket_change(&mut self) -> Option<SocketChange> {
        self.sockets.poll()
    }

    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.out.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// A completed re-anchor to sign and record (E5).
    fn poll_audit(&mut self) -> Option<AuditItem> {
        self.audit.drafts.pop_front().map(AuditItem::Draft)
    }

    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if self.shut_down {
            return None;
        }
        let mut next = Earliest(self.paths.poll_timeout());
        self.handshake
            .deadlines(self.cfg.proto.handshake_timeout, &mut next);
        if let Some(life) = &self.life {
            next.consider(life.poll_timeout(), Timer::Lifecycle);
        }
        self.rekey_deadlines(&mut next);
        if let Some(t) = self.audit.outbox.next_deadline() {
            next.consider(t, Timer::Audit);
        }
        if let Some(t) = self.next_move {
            next.consider(t, Timer::MovingTarget);
        }
        if let Some(s) = &self.session {
            next.consider(s.last_send + self.cfg.proto.keepalive, Timer::Keepalive);
            next.consider(
                s.last_recv + self.cfg.proto.peer_silent_after,
                Timer::PeerSilent,
            );
        }
        next.0
    }

    /// The one session, carried by the active uplink.
    fn sessions(&self, now: Instant) -> Vec<SessionSummary> {
        let Some(s) = self.session() else {
            return Vec::new();
        };
        let active = self.paths().active().interface();
        vec![SessionSummary {
            session_id: s.id(),
            peer: None,
            state: self.state(),
            remote: None,
            bearer: self.paths().uplinks().find(|u| u.id == active).cloned(),
            stats: s.stats,
            key_epoch: s.epoch(),
            key_age: now.saturating_duration_since(s.key_installed()),
            age: now.saturating_duration_since(s.created),
            since_last_recv: now.saturating_duration_since(s.last_recv),
        }]
    }

    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        match (self.session(), self.state()) {
            (Some(s), Some((_, v))) if s.id() == session_id => Some(v),
            _ => None,
        }
    }

    fn drop_counts(&self) -> &DropCounters {
        &self.drops
    }

    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.audit_traffic();
        vec![
            ("acknowledged", c.acknowledged),
            ("undelivered", c.undelivered),
            ("draft_overflow", c.draft_overflow),
        ]
    }
}

impl Client {
    /// Ends the current session for `reason` (TERMINATED, reason-coded, and the gateway is
    /// told), then starts a new one unless shutting down.
    pub fn terminate_current(&mut self, reason: Reason, now: Instant) {
        if self.session.is_none() {
            return;
        }
        self.send_close(now);
        self.end_session_with(CloseReason::LocalShutdown, reason, now);
        self.restart_handshake(now);
    }

    /// Starts a rekey for `trigger` (bounded: one at a time, at most one per
    /// `min_rekey_interval`; a refusal is reported as `RekeyDenied`).
    pub fn start_rekey(&mut self, trigger: RekeyTrigger, now: Instant) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let session_id = s.id();
        let min_interval = self.cfg.proto.keys.min_rekey_interval;
        if let Some(reason) = self.rekey.denial(s.key_installed(), min_interval, now) {
            self.out.event(Event::RekeyDenied {
                session_id,
                trigger,
                reason,
            });
            return;
        }
        let epoch = s.epoch() + 1;
        self.send_rekey_init(epoch, trigger, now);
    }

    /// The session's state and state_version, if there is a session.
    pub fn state(&self) -> Option<(State, u64)> {
        self.life.as_ref().map(|l| (l.state(), l.version()))
    }

    /// The current session, if established.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The path logic (active uplink, uplinks in use).
    pub fn paths(&self) -> &PathManager {
        &self.paths
    }

    /// Audit traffic counters (records acknowledged, undelivered, drafts dropped).
    pub fn audit_traffic(&self) -> AuditCounters {
        self.audit.outbox.counters
    }

    /// Tells the gateway the session ends (authenticated close) on the active path.
    fn send_close(&mut self, now: Instant) {
        self.send_control(
            self.paths.active(),
            ControlMessage::Close(CloseReason::LocalShutdown),
            now,
        );
    }
}
