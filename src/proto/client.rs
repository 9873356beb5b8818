//! The laptop side: one session to one gateway, carried by whichever uplink the path logic
//! ([`super::path`]) chooses. It starts the handshake at construction, retransmits with
//! exponential backoff and jitter, queues a few packets while it has no session, keeps the path
//! alive, reattaches over a new bearer without a new handshake, and replaces a session that has
//! gone silent on every path (a new handshake means a new SessionID, reported as such).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use zeroize::Zeroizing;

use super::audit::{AuditCounters, Outbox, PathEndDraft, RebindDraft};
use super::control::{self, ControlMessage, Reattach, RejectReason};
use super::handshake::{Initiator, StaticKeys, Timestamp};
use super::iptable::IpTable;
use super::keys::SessionId;
use super::lifecycle::Lifecycle;
use super::path::{PathAction, PathManager, ReattachStatus, Uplink};
use super::rekey::{self, Ephemeral, RekeyDenial, RekeyTrigger};
use super::session::Session;
use super::state::{Reason, State};
use super::status_frame::{SenderAction, StatusFrame};
use super::wire::{self, Packet, RoutingTag, SealedKind, DATA_OVERHEAD, HEADER_LEN, TAG_LEN};
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

/// A local socket (path) the session has used and its routing tags (J11): every path gets
/// its own pair, so captures of two bearers share no tag.
#[derive(Clone, Copy, Debug)]
struct PathSlot {
    via: UplinkId,
    index: u32,
    local: RoutingTag,
    remote: RoutingTag,
}

#[derive(Debug)]
struct Pending {
    initiator: Initiator,
    first_sent: Instant,
    next_retry: Instant,
    attempt: u32,
    stall_reported: bool,
}

/// The laptop core.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    routes: IpTable<()>,
    rng: ChaCha20Rng,
    clock: WallClock,
    last_timestamp: Timestamp,
    pending: Option<Pending>,
    session: Option<Session>,
    paths: PathManager,
    actions: Vec<PathAction>,
    queue: VecDeque<Vec<u8>>,
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    shut_down: bool,
    start_at: Option<Instant>,
    /// The current session's state machine and bounds.
    life: Option<Lifecycle>,
    /// A rekey this laptop started and the gateway has not answered yet.
    rekey: Option<rekey::Pending>,
    /// No rekey before this (after one that got no answer).
    next_rekey_allowed: Option<Instant>,
    /// Authenticated control packets that made no sense (S9 evidence).
    bad_controls: u32,
    /// The last session that ended (reported as `previous` of the next one).
    previous: Option<SessionId>,
    events_buf: Vec<Event>,
    /// Completed re-anchors waiting to be signed (only with `cfg.audit`).
    audit_drafts: VecDeque<RebindDraft>,
    /// Signed records on their way to the gateway.
    outbox: Outbox,
    /// The uplink data last went out by, and (epoch, first data counter) when it became so.
    last_active: UplinkId,
    switch_point: (u32, u64),
    /// Interface names of the uplinks seen (audit detail: the old one may be gone).
    uplink_names: BTreeMap<UplinkId, String>,
    /// The paths of the current session and their tags; the next path index to give out.
    path_slots: Vec<PathSlot>,
    next_path: u32,
    /// The next moving-target move (J10), when the policy asks for them.
    next_move: Option<Instant>,
    socket_changes: VecDeque<SocketChange>,
}

impl Client {
    /// Creates the core; the first handshake initiation goes out at the first timeout (now).
    pub fn new(cfg: ClientConfig, seed: Seed, now: Instant, wall: Timestamp) -> Self {
        let mut routes = IpTable::default();
        for r in &cfg.routes {
            routes.insert(*r, ());
        }
        let paths = PathManager::new(cfg.proto.paths.clone(), now);
        let mut c = Self {
            cfg,
            routes,
            rng: seed.rng(),
            clock: WallClock::new(now, wall),
            last_timestamp: Timestamp::default(),
            pending: None,
            session: None,
            paths,
            actions: Vec::new(),
            queue: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            shut_down: false,
            start_at: None,
            life: None,
            rekey: None,
            next_rekey_allowed: None,
            bad_controls: 0,
            previous: None,
            events_buf: Vec::new(),
            audit_drafts: VecDeque::new(),
            outbox: Outbox::default(),
            last_active: UplinkId::DEFAULT,
            switch_point: (0, 0),
            uplink_names: BTreeMap::new(),
            path_slots: Vec::new(),
            next_path: 1,
            next_move: None,
            socket_changes: VecDeque::new(),
        };
        // The first initiation goes out at the first timeout, so that uplinks reported right
        // after construction carry it (the gateway first sees the address the session uses).
        c.start_at = Some(now);
        c
    }

    /// Hot path: `buf[TUN_HEADROOM..TUN_HEADROOM + len]` holds an IP packet from the TUN
    /// device. On success the datagram is `buf[..t.len]`.
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
        if wire::ip_ends(&buf[HEADER_LEN..HEADER_LEN + len]).is_none() {
            self.drops.count(DropReason::NotIp);
            return None;
        }
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

    /// A datagram arrived through uplink `via` from `remote`: `buf[..len]`. Data is opened in
    /// place.
    pub fn handle_datagram(
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

    /// The system's usable uplinks changed (a snapshot, not a delta).
    pub fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant) {
        if self.uplink_names.len() > 64 {
            self.uplink_names.clear();
        }
        for u in &snapshot {
            tracing::debug!(uplink = %u.name, id = u.id.0, class = %u.class, rank = u.rank, "usable uplink");
            self.uplink_names.insert(u.id, u.name.clone());
        }
        let mut actions = std::mem::take(&mut self.actions);
        self.paths.set_uplinks(snapshot, now, &mut actions);
        self.run_actions(&mut actions, now);
        self.actions = actions;
        self.retire_paths(false);
    }

    /// Forgets the tags of paths that are gone (a returning bearer gets a fresh pair); with
    /// `all_but_active`, of every path but the active one (after a failed move, so a retry
    /// never reuses a pair the gateway could not place).
    fn retire_paths(&mut self, all_but_active: bool) {
        let active = self.paths.active();
        let present: Vec<UplinkId> = self.paths.transports().collect();
        self.path_slots.retain(|p| {
            p.via == active
                || (!all_but_active && (p.via == UplinkId::DEFAULT || present.contains(&p.via)))
        });
    }

    /// The tags of path `via`, giving it a fresh index on first use.
    fn path_slot(&mut self, via: UplinkId) -> Option<PathSlot> {
        if let Some(p) = self.path_slots.iter().find(|p| p.via == via) {
            return Some(*p);
        }
        let s = self.session.as_ref()?;
        let index = self.next_path;
        let (local, remote) = s.path_tags().pair(index);
        self.next_path += 1;
        let slot = PathSlot {
            via,
            index,
            local,
            remote,
        };
        self.path_slots.push(slot);
        Some(slot)
    }

    /// Sending through `via` failed at the socket (no route, link down).
    pub fn handle_send_error(&mut self, via: UplinkId, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        self.paths.on_send_error(via, now, &mut actions);
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// Runs whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        if self.start_at.is_some_and(|t| now >= t) {
            self.start_at = None;
            self.send_initiation(now, 1, now);
        }
        if let Some(p) = self.pending.as_mut() {
            if !p.stall_reported && now >= p.first_sent + self.cfg.proto.handshake_timeout {
                p.stall_reported = true;
                self.events.push_back(Event::HandshakeStalled {
                    elapsed: now - p.first_sent,
                });
            }
            if now >= p.next_retry {
                let (first, attempt) = (p.first_sent, p.attempt + 1);
                self.send_initiation(first, attempt, now);
            }
        }
        let mut actions = std::mem::take(&mut self.actions);
        self.paths.on_timeout(now, &mut actions);
        self.run_actions(&mut actions, now);
        self.actions = actions;
        self.key_timers(now);
        if let Some(life) = self.life.as_mut() {
            let end = life.on_timeout(now, &mut self.events_buf);
            self.events.extend(self.events_buf.drain(..));
            if let Some(reason) = end {
                self.terminate(reason, now);
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

    /// Ends the current session for `reason` (TERMINATED, reason-coded, and the gateway is
    /// told), then starts a new one unless shutting down.
    pub fn terminate(&mut self, reason: Reason, now: Instant) {
        if self.session.is_none() {
            return;
        }
        self.send_control(
            self.paths.active(),
            ControlMessage::Close(CloseReason::LocalShutdown),
            now,
        );
        self.end_session_with(CloseReason::LocalShutdown, reason, now);
        if self.pending.is_none() && !self.shut_down {
            self.send_initiation(now, 1, now);
        }
    }

    /// Shuts down: tells the gateway (authenticated close) and stops all timers.
    pub fn shutdown(&mut self, now: Instant) {
        if self.session.is_some() {
            self.send_control(
                self.paths.active(),
                ControlMessage::Close(CloseReason::LocalShutdown),
                now,
            );
            self.end_session_quietly(CloseReason::LocalShutdown, now);
        }
        self.pending = None;
        self.shut_down = true;
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
        if self.shut_down {
            return None;
        }
        let mut best = self.paths.poll_timeout();
        let mut consider = |t: Instant, why: Timer| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, why));
            }
        };
        if let Some(t) = self.start_at {
            consider(t, Timer::HandshakeRetry);
        }
        if let Some(p) = &self.pending {
            consider(p.next_retry, Timer::HandshakeRetry);
            if !p.stall_reported {
                consider(
                    p.first_sent + self.cfg.proto.handshake_timeout,
                    Timer::HandshakeRetry,
                );
            }
        }
        if let Some(life) = &self.life {
            consider(life.poll_timeout(), Timer::Lifecycle);
        }
        if let Some(s) = &self.session {
            let k = &self.cfg.proto.keys;
            consider(s.key_installed() + k.key_max_age, Timer::Rekey);
            match &self.rekey {
                Some(p) => consider(p.next_retry, Timer::Rekey),
                None => consider(
                    (s.key_installed() + k.rekey_after)
                        .max(self.next_rekey_allowed.unwrap_or(s.created)),
                    Timer::Rekey,
                ),
            }
        }
        if let Some(t) = self.outbox.next_deadline() {
            consider(t, Timer::Audit);
        }
        if let Some(t) = self.next_move {
            consider(t, Timer::MovingTarget);
        }
        if let Some(s) = &self.session {
            consider(s.last_send + self.cfg.proto.keepalive, Timer::Keepalive);
            consider(
                s.last_recv + self.cfg.proto.peer_silent_after,
                Timer::PeerSilent,
            );
        }
        best
    }

    /// Next socket to open or close (moving target). Drain it before the transmits: a move's
    /// reattach goes out by the socket it opens.
    pub fn poll_socket_change(&mut self) -> Option<SocketChange> {
        self.socket_changes.pop_front()
    }

    /// Moving target (J10): a make-before-break move to a new socket of the active uplink,
    /// then the next one scheduled.
    fn move_transport(&mut self, now: Instant) {
        self.next_move = self.move_deadline(now);
        let mut actions = std::mem::take(&mut self.actions);
        if let Some(to) = self.paths.move_transport(now, &mut actions) {
            self.socket_changes.push_back(SocketChange::Open(to));
        }
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// When the next moving-target move is due (`None`: off or no session).
    fn move_deadline(&mut self, now: Instant) -> Option<Instant> {
        let (interval, jitter) = self.cfg.proto.paths.moving_target?;
        self.session.as_ref()?;
        let spread = jitter.as_millis() as u64 * 2 + 1;
        let offset = self.rng.next_u64() % spread;
        Some(now + interval - jitter + Duration::from_millis(offset))
    }

    /// Next completed re-anchor to sign and record (E5). Drain it after the events.
    pub fn poll_audit(&mut self) -> Option<RebindDraft> {
        self.audit_drafts.pop_front()
    }

    /// Sends a signed record (wire form) to the gateway, and again every `audit::RESEND`
    /// until it is acknowledged. A record of a session that has ended is dropped (counted).
    pub fn send_audit_record(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant) {
        if self.session.as_ref().map(|s| s.id()) != Some(session_id) {
            self.outbox.counters.undelivered += 1;
            return;
        }
        self.send_control_bytes(&control::audit_record_plaintext(&bytes), now);
        self.outbox.push(session_id, bytes, now);
    }

    /// Audit traffic counters.
    pub fn audit_counters(&self) -> AuditCounters {
        self.outbox.counters
    }

    fn resend_audit_records(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.outbox.due(now, &mut due);
        for bytes in due {
            self.send_control_bytes(&control::audit_record_plaintext(&bytes), now);
        }
    }

    fn send_control_bytes(&mut self, plain: &[u8], now: Instant) {
        let via = self.paths.active();
        self.send_sealed(via, |s, tag| s.control_packet_bytes(plain, tag, now));
    }

    /// Seals a packet for path `via` (with that path's tag) and queues it.
    fn send_sealed(
        &mut self,
        via: UplinkId,
        seal: impl FnOnce(&mut Session, RoutingTag) -> Option<Vec<u8>>,
    ) {
        let Some(slot) = self.path_slot(via) else {
            return;
        };
        let Some(payload) = self.session.as_mut().and_then(|s| seal(s, slot.remote)) else {
            return;
        };
        self.transmits.push_back(OwnedTransmit {
            via,
            src_ip: None,
            dst: self.cfg.endpoint,
            payload,
        });
    }

    /// The current session, if established.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The path logic (active uplink, uplinks in use).
    pub fn paths(&self) -> &PathManager {
        &self.paths
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    fn on_response(
        &mut self,
        sender: RoutingTag,
        receiver: RoutingTag,
        noise: &[u8],
        remote: SocketAddr,
        now: Instant,
    ) {
        let matches = self
            .pending
            .as_ref()
            .is_some_and(|p| p.initiator.local_tag == receiver);
        if !matches {
            self.drops.count(DropReason::UnexpectedResponse);
            return;
        }
        let p = self.pending.take().expect("checked just above");
        let local_tag = p.initiator.local_tag;
        let root = match p.initiator.finish(noise) {
            Ok(r) => r,
            Err(_) => {
                // A forged or corrupted response: keep waiting for the real one.
                self.drops.count(DropReason::HandshakeFailed);
                self.send_initiation(p.first_sent, p.attempt, now);
                if let Some(q) = self.pending.as_mut() {
                    q.next_retry = p.next_retry.max(now);
                }
                return;
            }
        };
        if self.session.is_some() {
            self.end_session_quietly(CloseReason::Replaced, now);
        }
        let session = Session::new(
            root,
            true,
            local_tag,
            sender,
            self.cfg.proto.replay_window_bits,
            now,
        );
        let session_id = session.id();
        tracing::debug!(%session_id, %remote, "handshake response accepted");
        self.events.push_back(Event::SessionEstablished {
            session_id,
            peer: 0,
            previous: self.previous,
        });
        self.events.push_back(Event::TransportAttached {
            session_id,
            class: self.paths.class_of(self.paths.active()),
        });
        let mut session = session;
        session.set_grace(self.cfg.proto.keys.grace);
        self.rekey = None;
        self.next_rekey_allowed = None;
        self.bad_controls = 0;
        // Path 0 is the one the handshake went by, with the handshake's tags.
        self.last_active = self.paths.active();
        self.path_slots = vec![PathSlot {
            via: self.last_active,
            index: 0,
            local: local_tag,
            remote: sender,
        }];
        self.next_path = 1;
        let mut life = Lifecycle::new(session_id, self.cfg.proto.lifecycle.clone(), now);
        life.attach(now, &mut self.events_buf);
        self.events.extend(self.events_buf.drain(..));
        self.life = Some(life);
        self.session = Some(session);
        self.paths.set_live(true, now);
        self.next_move = self.move_deadline(now);
        self.flush_queue(now);
    }

    fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        datagram: &mut [u8],
        via: UplinkId,
        now: Instant,
    ) -> Received {
        let known = self.path_slots.iter().any(|p| p.local == receiver);
        let Some(s) = self.session.as_mut().filter(|_| known) else {
            self.drops.count(DropReason::UnknownTag);
            return Received::Nothing;
        };
        // Control duplicates are authenticated before they count as a replay: only a real
        // copy of an authenticated control packet is a security event.
        let opened = match s.open(kind, datagram, now, kind == SealedKind::Control) {
            Ok(o) if o.duplicate => {
                self.drops.count(DropReason::Replay);
                // A replayer must not be able to flood RekeyDenied events: rekey only when one
                // may start now, else stay quiet (the replay is counted).
                let installed = s.key_installed();
                let may = self.rekey.is_none()
                    && now >= installed + self.cfg.proto.keys.min_rekey_interval
                    && self.next_rekey_allowed.is_none_or(|t| now >= t);
                if may {
                    self.start_rekey(RekeyTrigger::SecurityEvent, now);
                }
                return Received::Nothing;
            }
            Ok(o) => o,
            Err(reason) => {
                self.drops.count(reason);
                return Received::Nothing;
            }
        };
        self.paths.on_authenticated(via, now);
        if kind == SealedKind::Data {
            let mut actions = std::mem::take(&mut self.actions);
            self.paths
                .on_data_counter(via, opened.counter, now, &mut actions);
            if !actions.is_empty() {
                self.run_actions(&mut actions, now);
            }
            self.actions = actions;
        }
        match kind {
            SealedKind::Data if opened.plaintext.is_empty() => Received::Nothing,
            SealedKind::Data => {
                let inner = &datagram[opened.plaintext.clone()];
                match wire::ip_ends(inner) {
                    Some(ends) if self.routes.lookup(ends.src).is_some() => {
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
                    Some(m) => self.on_control(m, via, now),
                    None => self.bad_control(now),
                }
                Received::Nothing
            }
        }
    }

    fn on_control(&mut self, msg: ControlMessage, via: UplinkId, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        match msg {
            ControlMessage::Close(_) => self.end_session(CloseReason::PeerClosed, now),
            ControlMessage::PathChallenge(token) => {
                self.send_control(via, ControlMessage::PathResponse(token), now)
            }
            ControlMessage::ReattachAck { seq, state_version } => {
                self.paths
                    .on_reattach_ack(seq, state_version, now, &mut actions)
            }
            ControlMessage::ReattachReject {
                seq,
                reason,
                state_version,
            } => self
                .paths
                .on_reattach_reject(seq, reason, state_version, now, &mut actions),
            ControlMessage::ProbeAck(_) => {}
            ControlMessage::RekeyResp { epoch, public } => self.on_rekey_resp(epoch, &public, now),
            ControlMessage::StatusFrame(octets) => self.on_status_frame(octets, now),
            ControlMessage::AuditAck(digest) => self.outbox.ack(digest),
            ControlMessage::Probe(_)
            | ControlMessage::PathResponse(_)
            | ControlMessage::Reattach(_)
            | ControlMessage::RekeyInit { .. } => self.bad_control(now),
        }
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// Turns the path logic's decisions into packets and events.
    fn run_actions(&mut self, actions: &mut Vec<PathAction>, now: Instant) {
        let session_id = self.session.as_ref().map(|s| s.id());
        if self.paths.active() != self.last_active {
            // Data leaves by another uplink from the next packet on: the media window, and
            // that path's tags.
            self.last_active = self.paths.active();
            if let Some(slot) = self.path_slot(self.last_active) {
                if let Some(s) = self.session.as_mut() {
                    self.switch_point = (s.epoch(), s.data_sent());
                    s.path_tags_mut().choose(slot.index);
                }
            }
        }
        for a in actions.drain(..) {
            let Some(session_id) = session_id else {
                if matches!(a, PathAction::NoUplink { .. }) {
                    self.events.push_back(Event::NoUplink { session_id: None });
                }
                continue;
            };
            let mut end = None;
            if let Some(life) = self.life.as_mut() {
                end = life.on_path_action(&a, now, &mut self.events_buf);
            }
            // Report what was decided first, then the state change it caused.
            let state_events: Vec<Event> = self.events_buf.drain(..).collect();
            let switched = matches!(a, PathAction::Switched { .. });
            self.report_action(session_id, a, now);
            self.events.extend(state_events);
            if switched && self.cfg.proto.keys.on_transport_change {
                self.start_rekey(RekeyTrigger::TransportChange, now);
            }
            if let Some(reason) = end {
                self.terminate(reason, now);
                return;
            }
        }
    }

    fn report_action(&mut self, session_id: SessionId, a: PathAction, now: Instant) {
        {
            match a {
                PathAction::Probe { via, seq } => {
                    self.send_control(via, ControlMessage::Probe(seq), now)
                }
                PathAction::Reattach {
                    via,
                    seq,
                    old_path_alive,
                } => {
                    let Some(s) = self.session.as_ref() else {
                        return;
                    };
                    let r = Reattach {
                        seq,
                        old_path_alive,
                        state_version: self.paths.acked_state_version,
                        elapsed_ms: now.saturating_duration_since(s.created).as_millis() as u64,
                        last_data_counter: s.data_sent().saturating_sub(1),
                    };
                    self.send_control(via, ControlMessage::Reattach(r), now);
                }
                PathAction::Attempt {
                    to,
                    attempt,
                    make_before_break,
                    ..
                } => self.events.push_back(Event::ReattachAttempt {
                    session_id,
                    to,
                    attempt,
                    make_before_break,
                }),
                PathAction::Switched {
                    from,
                    to,
                    reason,
                    from_via,
                    to_via,
                } => {
                    self.events.push_back(Event::TransportSwitch {
                        session_id,
                        from,
                        to,
                        reason,
                    });
                    if self.cfg.audit {
                        self.draft_rebind(
                            session_id,
                            reason.name(),
                            (from, from_via),
                            (to, to_via),
                            now,
                        );
                    }
                    if from_via != to_via && from_via.interface() == to_via.interface() {
                        // A moving-target move is done: the old port is closed for good.
                        self.socket_changes.push_back(SocketChange::Close(from_via));
                    }
                    self.retire_paths(false);
                }
                PathAction::Denied { reason, .. } => self
                    .events
                    .push_back(Event::TransportSwitchDenied { session_id, reason }),
                PathAction::Result { status, via, .. } => {
                    if status != ReattachStatus::Accepted
                        && via.generation() != 0
                        && !self.paths.transports().any(|t| t == via)
                        && via != self.paths.active()
                    {
                        // A move to a new socket that did not happen: close that socket.
                        self.socket_changes.push_back(SocketChange::Close(via));
                    }
                    if matches!(
                        status,
                        ReattachStatus::TimedOut
                            | ReattachStatus::Rejected(RejectReason::ValidationFailed)
                    ) {
                        self.retire_paths(true);
                    }
                    self.events
                        .push_back(Event::ReattachResult { session_id, status })
                }
                PathAction::NoUplink { .. } => self.events.push_back(Event::NoUplink {
                    session_id: Some(session_id),
                }),
                PathAction::SessionRefused(_) => self.end_session(CloseReason::PeerClosed, now),
            }
        }
    }

    fn draft_rebind(
        &mut self,
        session_id: SessionId,
        reason: &'static str,
        (from, from_via): (Option<crate::policy::BearerClass>, UplinkId),
        (to, to_via): (crate::policy::BearerClass, UplinkId),
        now: Instant,
    ) {
        let name = |id: UplinkId| {
            self.uplink_names
                .get(&id.interface())
                .cloned()
                .unwrap_or_default()
        };
        let (epoch, resume) = self.switch_point;
        let ts = self.clock.at(now);
        let draft = RebindDraft {
            session_id,
            reason,
            old: PathEndDraft {
                class: from,
                via: from_via,
                iface: name(from_via),
            },
            new: PathEndDraft {
                class: Some(to),
                via: to_via,
                iface: name(to_via),
            },
            epoch,
            last_seq: resume.saturating_sub(1),
            resume_seq: resume,
            at_ms: ts.secs * 1000 + u64::from(ts.nanos / 1_000_000),
        };
        self.outbox.counters.drafted += 1;
        if self.audit_drafts.len() >= super::audit::QUEUE_LIMIT {
            self.audit_drafts.pop_front();
            self.outbox.counters.draft_overflow += 1;
        }
        self.audit_drafts.push_back(draft);
    }

    fn flush_queue(&mut self, now: Instant) {
        let via = self.paths.active();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut sent_any = false;
        while let Some(pkt) = self.queue.pop_front() {
            let mut buf = vec![0u8; pkt.len() + DATA_OVERHEAD];
            buf[HEADER_LEN..HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
            if let Some(n) = s.seal_data(&mut buf, pkt.len(), now) {
                buf.truncate(n);
                self.transmits.push_back(OwnedTransmit {
                    via,
                    src_ip: None,
                    dst: self.cfg.endpoint,
                    payload: buf,
                });
                sent_any = true;
            }
        }
        // The gateway treats a session as confirmed on our first data packet.
        if !sent_any {
            self.send_keepalive(now);
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        let via = self.paths.active();
        self.send_sealed(via, |s, tag| s.keepalive_packet(tag, now));
    }

    fn send_control(&mut self, via: UplinkId, msg: ControlMessage, now: Instant) {
        self.send_sealed(via, |s, tag| s.control_packet(msg, tag, now));
    }

    fn end_session(&mut self, reason: CloseReason, now: Instant) {
        self.end_session_quietly(reason, now);
        if self.pending.is_none() && !self.shut_down {
            self.send_initiation(now, 1, now);
        }
    }

    fn end_session_quietly(&mut self, reason: CloseReason, now: Instant) {
        self.end_session_with(reason, reason.state_reason(), now);
    }

    /// Drops the session: TERMINATED with `state_reason`, then `SessionClosed`.
    fn end_session_with(&mut self, reason: CloseReason, state_reason: Reason, now: Instant) {
        if let Some(s) = self.session.take() {
            if let Some(mut life) = self.life.take() {
                life.terminate(state_reason, now, &mut self.events_buf);
                self.events.extend(self.events_buf.drain(..));
            }
            self.paths.set_live(false, now);
            self.outbox.keep_session(None);
            self.previous = Some(s.id());
            self.events.push_back(Event::SessionClosed {
                session_id: s.id(),
                peer: 0,
                reason,
            });
        }
    }

    /// Applies a reloaded policy (P3): path and session bounds from now on; key limits too,
    /// and a changed key policy rotates the keys at once (`policy_trigger`). The replay window
    /// size applies to sessions and key epochs created from now on.
    pub fn set_proto(&mut self, proto: ProtoConfig, now: Instant) {
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

    /// Starts a rekey for `trigger` (bounded: one at a time, at most one per
    /// `min_rekey_interval`; a refusal is reported as `RekeyDenied`).
    pub fn start_rekey(&mut self, trigger: RekeyTrigger, now: Instant) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let session_id = s.id();
        let limits = &self.cfg.proto.keys;
        let denial = if self.rekey.is_some() {
            Some(RekeyDenial::InProgress)
        } else if now < s.key_installed() + limits.min_rekey_interval
            || self.next_rekey_allowed.is_some_and(|t| now < t)
        {
            Some(RekeyDenial::RateLimited)
        } else {
            None
        };
        if let Some(reason) = denial {
            self.events.push_back(Event::RekeyDenied {
                session_id,
                trigger,
                reason,
            });
            return;
        }
        let epoch = s.epoch() + 1;
        let ephemeral = Ephemeral::generate(&mut self.rng);
        let msg = ControlMessage::RekeyInit {
            epoch,
            public: ephemeral.public,
        };
        self.rekey = Some(rekey::Pending {
            epoch,
            ephemeral,
            trigger,
            started: now,
            next_retry: now + rekey::RETRY,
            tries: 1,
        });
        self.send_control(self.paths.active(), msg, now);
    }

    /// Key expiry, rekey thresholds and RekeyInit retransmissions.
    fn key_timers(&mut self, now: Instant) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let (session_id, epoch) = (s.id(), s.epoch());
        let limits = self.cfg.proto.keys.clone();
        let age = now.saturating_duration_since(s.key_installed());
        if age >= limits.key_max_age {
            self.events
                .push_back(Event::KeyExpired { session_id, epoch });
            self.terminate(Reason::KeyExpired, now);
            return;
        }
        let due = age >= limits.rekey_after || s.epoch_packets() >= limits.rekey_after_packets;
        match self.rekey.as_mut() {
            Some(p) if now >= p.next_retry && p.tries >= rekey::MAX_TRIES => {
                let trigger = p.trigger;
                self.rekey = None;
                self.next_rekey_allowed = Some(now + limits.min_rekey_interval);
                self.events.push_back(Event::RekeyDenied {
                    session_id,
                    trigger,
                    reason: RekeyDenial::NoResponse,
                });
            }
            Some(p) if now >= p.next_retry => {
                p.tries += 1;
                p.next_retry = now + rekey::RETRY;
                let msg = ControlMessage::RekeyInit {
                    epoch: p.epoch,
                    public: p.ephemeral.public,
                };
                self.send_control(self.paths.active(), msg, now);
            }
            Some(_) => {}
            None if due && self.next_rekey_allowed.is_none_or(|t| now >= t) => {
                self.start_rekey(RekeyTrigger::TimeElapsed, now)
            }
            None => {}
        }
    }

    fn on_rekey_resp(&mut self, epoch: u32, public: &[u8; 32], now: Instant) {
        let Some(p) = self.rekey.take_if(|p| p.epoch == epoch) else {
            // A retransmitted answer for an epoch already installed.
            return;
        };
        let Some(shared) = p.ephemeral.shared(public) else {
            self.bad_control(now);
            return;
        };
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.install_epoch(epoch, &shared, now);
        let session_id = s.id();
        self.events.push_back(Event::KeyRotated {
            session_id,
            epoch,
            trigger: p.trigger,
        });
    }

    /// F3: a trusted status frame (it arrived sealed under this session's keys). "Dead / do not
    /// retry" ends the session at once and starts a fresh handshake without waiting for timers.
    fn on_status_frame(&mut self, octets: [u8; 2], now: Instant) {
        let action = match StatusFrame::decode(octets) {
            Ok(frame) => frame.sender_action(),
            Err(_) => return self.bad_control(now),
        };
        if action == SenderAction::FreshHandshake {
            self.end_session_with(CloseReason::PeerClosed, Reason::PeerTerminated, now);
            if self.pending.is_none() && !self.shut_down {
                self.send_initiation(now, 1, now);
            }
        }
    }

    /// An authenticated control packet that makes no sense: only a holder of the session's
    /// keys can produce one, so past a small bound it is evidence of compromise (S9).
    fn bad_control(&mut self, now: Instant) {
        self.drops.count(DropReason::BadControl);
        self.bad_controls += 1;
        if self.bad_controls > BAD_CONTROL_LIMIT {
            if let Some(s) = self.session.as_ref() {
                self.events
                    .push_back(Event::SecurityKeyCompromiseSuspected {
                        session_id: s.id(),
                        evidence: "malformed_authenticated_control",
                    });
            }
            self.terminate(Reason::SecurityFailure, now);
        }
    }

    /// The session's state and state_version, if there is a session.
    pub fn state(&self) -> Option<(State, u64)> {
        self.life.as_ref().map(|l| (l.state(), l.version()))
    }

    /// Sends initiation number `attempt` of a handshake first sent at `first`.
    fn send_initiation(&mut self, first: Instant, attempt: u32, now: Instant) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let tag = RoutingTag(self.rng.next_u32());
        // Strictly increasing even if the wall clock stands still or steps back.
        let mut ts = self.clock.at(now);
        if ts <= self.last_timestamp {
            ts = Timestamp {
                secs: self.last_timestamp.secs
                    + u64::from(self.last_timestamp.nanos == 999_999_999),
                nanos: (self.last_timestamp.nanos + 1) % 1_000_000_000,
            };
        }
        self.last_timestamp = ts;
        let mut buf = vec![0u8; wire::INIT_LEN];
        let started = Initiator::start(
            &self.cfg.keys,
            &self.cfg.gateway_public,
            &self.cfg.psk,
            seed,
            ts,
            tag,
            &mut buf,
        );
        let (initiator, n) = match started {
            Ok(v) => v,
            Err(e) => {
                // Only a bad static key can make this fail; config validation prevents it.
                tracing::error!(error = %e, "failed to build handshake initiation");
                return;
            }
        };
        buf.truncate(n);
        self.transmits.push_back(OwnedTransmit {
            via: self.paths.active(),
            src_ip: None,
            dst: self.cfg.endpoint,
            payload: buf,
        });
        self.events.push_back(Event::HandshakeInitiated { attempt });
        let delay = self.backoff(attempt);
        self.pending = Some(Pending {
            initiator,
            first_sent: first,
            next_retry: now + delay,
            attempt,
            stall_reported: self.pending.as_ref().is_some_and(|p| p.stall_reported),
        });
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.cfg.proto.handshake_retry_initial;
        let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.cfg.proto.handshake_retry_max);
        let jitter_ms = (base.as_millis() as u64 / 4).max(1);
        capped + Duration::from_millis(self.rng.next_u64() % jitter_ms)
    }
}
