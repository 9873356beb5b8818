//! The laptop's bearers: which uplink carries the session, when to probe, when to jump.
//!
//! Rules this module enforces:
//! - the first bearer change is acted on at once; changes after it are coalesced for
//!   `debounce`, except that losing the active uplink is always acted on at once (J1);
//! - a dead or silent active path is replaced at once by the best usable standby, announced by
//!   a reattach even when there is no data to send (J5, J6);
//! - a preferred bearer is taken make-before-break: the old path carries traffic until the
//!   gateway acknowledges the reattach on the new one (J7);
//! - at most `max_switches_per_min` switch attempts in any 60 s and `switch_cooldown` between
//!   attempts; a denied switch is reported and retried when allowed (J8);
//! - a reattach that is not acknowledged within `recovery_window` is given up (M4).
//!
//! Pure decision logic: no crypto, no I/O. The client turns [`PathAction`]s into packets.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::bearer::BearerClass;
use super::control::RejectReason;
use super::{PathConfig, Timer, UplinkId};

/// A usable bearer as the system reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Uplink {
    pub id: UplinkId,
    /// Interface name: kept for logs at DEBUG, never put in events.
    pub name: String,
    pub class: BearerClass,
    /// Preference rank from the policy: lower is better.
    pub rank: usize,
}

/// Why the session moved (or tried to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// The active uplink disappeared (link down, address or route gone, send failure).
    TransportDead,
    /// The active path went silent (no authenticated packet for `heartbeat_volatile`).
    HeartbeatTimeout,
    /// `max_consecutive_drops` probes on the active path went unanswered in a row.
    ConsecutiveDrops,
    /// Downlink loss on the active path passed `loss_volatile_threshold` in `loss_window`.
    LossThreshold,
    /// A more preferred bearer became available.
    PreferredAvailable,
    /// The policy's moving target: a new source port on the same bearer (J10).
    MovingTarget,
}

impl SwitchReason {
    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SwitchReason::TransportDead => "transport_dead",
            SwitchReason::HeartbeatTimeout => "heartbeat_timeout",
            SwitchReason::ConsecutiveDrops => "consecutive_drop_exceeded",
            SwitchReason::LossThreshold => "loss_threshold_exceeded",
            SwitchReason::PreferredAvailable => "preferred_bearer_available",
            SwitchReason::MovingTarget => "moving_target",
        }
    }
}

/// Why a switch was not attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    SwitchRateLimited,
    CooldownActive,
}

impl DenyReason {
    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            DenyReason::SwitchRateLimited => "switch_rate_limited",
            DenyReason::CooldownActive => "cooldown_active",
        }
    }
}

/// How a reattach ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReattachStatus {
    Accepted,
    Rejected(RejectReason),
    TimedOut,
}

/// What the path logic wants done or reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathAction {
    Probe {
        via: UplinkId,
        seq: u32,
    },
    Reattach {
        via: UplinkId,
        seq: u32,
        old_path_alive: bool,
    },
    Attempt {
        to: BearerClass,
        attempt: u32,
        make_before_break: bool,
        reason: SwitchReason,
    },
    Switched {
        from: Option<BearerClass>,
        to: BearerClass,
        reason: SwitchReason,
        /// The uplinks data left by before and leaves by now (audit detail).
        from_via: UplinkId,
        to_via: UplinkId,
    },
    /// A switch was not made; `dead` says the active path is dead (so the session is
    /// unstable), `None` that it was only a preferred bearer.
    Denied {
        reason: DenyReason,
        dead: Option<SwitchReason>,
    },
    Result {
        status: ReattachStatus,
        make_before_break: bool,
        /// The socket the reattach went by.
        via: UplinkId,
    },
    /// The gateway refused the session itself (expired or denied): start over.
    SessionRefused(RejectReason),
    /// No uplink at all can carry the session (its active one died for `reason`).
    NoUplink {
        reason: SwitchReason,
    },
}

#[derive(Debug)]
struct UplinkState {
    info: Uplink,
    /// Continuously present since (a returning bearer must stay this long before it is
    /// preferred: flapping Wi-Fi never takes the session back and forth).
    present_since: Instant,
    next_probe: Instant,
    last_ack: Option<Instant>,
    /// Declared silent or failed; cleared by a probe answer through it.
    failed: bool,
    /// Which generation of the interface's socket carries it (moving target).
    generation: u32,
}

impl UplinkState {
    /// The socket this uplink is used by.
    fn transport(&self) -> UplinkId {
        self.info.id.with_generation(self.generation)
    }
}

#[derive(Debug)]
struct Migration {
    to: UplinkId,
    from: UplinkId,
    from_class: Option<BearerClass>,
    seq: u32,
    started: Instant,
    next_retry: Instant,
    old_alive: bool,
    reason: SwitchReason,
    attempt: u32,
}

/// The laptop's uplinks and the decisions about them.
#[derive(Debug)]
pub struct PathManager {
    cfg: PathConfig,
    /// False until the first snapshot: then everything goes by `UplinkId::DEFAULT`.
    managed: bool,
    uplinks: BTreeMap<UplinkId, UplinkState>,
    active: UplinkId,
    latest: Vec<Uplink>,
    dirty: bool,
    quiet_until: Option<Instant>,
    attempts: VecDeque<Instant>,
    retry_switch_at: Option<Instant>,
    migration: Option<Migration>,
    last_recv_active: Instant,
    last_probe_active: Option<Instant>,
    silent_reported: bool,
    seq: u32,
    /// The class of the active uplink, remembered after the uplink itself is gone.
    active_class: Option<BearerClass>,
    /// The gateway's state_version from its last acknowledgement.
    pub acked_state_version: u64,
    /// Whether a session exists (probes and reattaches need one).
    live: bool,
    /// Probes sent on the active path since anything authenticated came back on it.
    probes_unanswered: u32,
    loss: LossMeter,
}

/// Fewest expected packets in a loss window for its loss fraction to count.
const LOSS_MIN_SAMPLE: u64 = 10;

/// Downlink loss of the active path over one window, from the peer's data counters.
#[derive(Debug, Default, Clone, Copy)]
struct LossMeter {
    started: Option<Instant>,
    first: Option<u64>,
    last: u64,
    received: u64,
}

impl LossMeter {
    fn start(counter: u64, now: Instant) -> Self {
        Self {
            started: Some(now),
            first: Some(counter),
            last: counter,
            received: 1,
        }
    }
}

impl PathManager {
    /// A manager with no uplinks yet (the unbound socket carries everything).
    pub fn new(cfg: PathConfig, now: Instant) -> Self {
        Self {
            cfg,
            managed: false,
            uplinks: BTreeMap::new(),
            active: UplinkId::DEFAULT,
            latest: Vec::new(),
            dirty: false,
            quiet_until: None,
            attempts: VecDeque::new(),
            retry_switch_at: None,
            migration: None,
            last_recv_active: now,
            last_probe_active: None,
            silent_reported: false,
            active_class: None,
            seq: 0,
            acked_state_version: 0,
            live: false,
            probes_unanswered: 0,
            loss: LossMeter::default(),
        }
    }

    /// New timing and bounds (a policy reload); decisions under way keep their deadlines.
    pub fn set_config(&mut self, cfg: PathConfig) {
        self.cfg = cfg;
    }

    /// The uplink that carries data now.
    pub fn active(&self) -> UplinkId {
        self.active
    }

    /// The bearer class of an uplink, if known.
    pub fn class_of(&self, id: UplinkId) -> Option<BearerClass> {
        self.uplinks.get(&id.interface()).map(|u| u.info.class)
    }

    /// The socket each present uplink is used by (its current generation).
    pub fn transports(&self) -> impl Iterator<Item = UplinkId> + '_ {
        self.uplinks.values().map(UplinkState::transport)
    }

    /// Moving target (J10): moves the session to a new socket (a new source port) of the
    /// active uplink, make-before-break, within the switch bounds. Returns the new socket, or
    /// `None` when no move can start now (no session, a move under way, a failed path).
    pub fn move_transport(&mut self, now: Instant, out: &mut Vec<PathAction>) -> Option<UplinkId> {
        if !self.live || !self.managed || self.migration.is_some() {
            return None;
        }
        let u = self.uplinks.get(&self.active.interface())?;
        if u.failed || u.transport() != self.active {
            return None;
        }
        let to = self.active.next_generation();
        if !self.allowed(now, None, out) {
            return None;
        }
        self.start_migration(to, SwitchReason::MovingTarget, true, now, out);
        Some(to)
    }

    /// The uplinks in the last snapshot acted on.
    pub fn uplinks(&self) -> impl Iterator<Item = &Uplink> {
        self.uplinks.values().map(|u| &u.info)
    }

    /// Whether a reattach is outstanding.
    pub fn migrating(&self) -> bool {
        self.migration.is_some()
    }

    /// A session now exists (or not): probing and reattaching apply only with one.
    pub fn set_live(&mut self, live: bool, now: Instant) {
        self.live = live;
        self.migration = None;
        // A gateway that confirmed the session is at state_version 1 (BIRTH → ATTACHED).
        self.acked_state_version = u64::from(live);
        self.last_recv_active = now;
        self.last_probe_active = None;
        self.silent_reported = false;
        self.probes_unanswered = 0;
        self.loss = LossMeter::default();
    }

    /// A new snapshot of usable uplinks from the system.
    pub fn set_uplinks(
        &mut self,
        mut snapshot: Vec<Uplink>,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        snapshot.sort();
        self.latest = snapshot;
        let active_gone =
            self.managed && !self.latest.iter().any(|u| u.id == self.active.interface());
        if !self.managed || active_gone || self.quiet_until.is_none_or(|q| now >= q) {
            self.reconcile(now, out);
        } else {
            self.dirty = true;
        }
    }

    /// An authenticated packet arrived through `via`.
    pub fn on_authenticated(&mut self, via: UplinkId, now: Instant) {
        if via == self.active {
            self.last_recv_active = now;
            self.silent_reported = false;
            self.probes_unanswered = 0;
        }
        if let Some(u) = self.uplinks.get_mut(&via.interface()) {
            u.last_ack = Some(now);
            u.failed = false;
        }
    }

    /// Sending through `via` failed at the socket: the uplink is unusable.
    pub fn on_send_error(&mut self, via: UplinkId, now: Instant, out: &mut Vec<PathAction>) {
        match self.uplinks.get_mut(&via.interface()) {
            Some(u) if u.transport() == via => u.failed = true,
            // A socket of a move that has not happened yet, or of one that is over: the
            // uplink itself is fine (the move times out and the next one tries again).
            Some(_) => return,
            None => {}
        }
        if self.managed && via == self.active && self.live && self.migration.is_none() {
            self.jump_from_dead(SwitchReason::TransportDead, now, out);
        }
    }

    /// The gateway acknowledged reattach `seq`.
    pub fn on_reattach_ack(
        &mut self,
        seq: u32,
        state_version: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        // Acknowledgements are authenticated; versions only grow.
        self.acked_state_version = self.acked_state_version.max(state_version);
        let Some(m) = self.migration.take_if(|m| seq != 0 && m.seq == seq) else {
            return;
        };
        let from = m.from_class;
        if let Some(u) = self.uplinks.get_mut(&m.to.interface()) {
            u.generation = m.to.generation();
        }
        self.set_active(m.to);
        self.last_recv_active = now;
        self.silent_reported = false;
        out.push(PathAction::Result {
            status: ReattachStatus::Accepted,
            make_before_break: m.old_alive,
            via: m.to,
        });
        if let Some(to) = self.class_of(m.to) {
            out.push(PathAction::Switched {
                from,
                to,
                reason: m.reason,
                from_via: m.from,
                to_via: m.to,
            });
        }
    }

    /// The gateway refused reattach `seq`.
    pub fn on_reattach_reject(
        &mut self,
        seq: u32,
        reason: RejectReason,
        state_version: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        let Some(m) = self.migration.take_if(|m| m.seq == seq) else {
            return;
        };
        let transient =
            reason == RejectReason::StaleStateVersion && state_version > self.acked_state_version;
        if !transient {
            out.push(PathAction::Result {
                status: ReattachStatus::Rejected(reason),
                make_before_break: m.old_alive,
                via: m.to,
            });
        }
        match reason {
            RejectReason::SessionExpired | RejectReason::PolicyDenied => {
                out.push(PathAction::SessionRefused(reason))
            }
            RejectReason::StaleStateVersion if state_version > self.acked_state_version => {
                // The gateway moved the binding without us (a NAT rebinding whose notice was
                // lost): adopt its version and ask again at once, within the same bounds.
                self.acked_state_version = state_version;
                self.resume_migration(m, now, out);
            }
            _ if !m.old_alive => {
                // Still without a working path: try again (fresh timestamp, same bounds).
                self.resume_migration(m, now, out);
            }
            _ => {}
        }
    }

    /// Sends a refused reattach again under a new sequence number, keeping its deadline.
    fn resume_migration(&mut self, mut m: Migration, now: Instant, out: &mut Vec<PathAction>) {
        if now >= m.started + self.cfg.recovery_window {
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
            return;
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        m.seq = self.seq;
        m.attempt += 1;
        if let Some(class) = self.class_of(m.to) {
            out.push(PathAction::Attempt {
                to: class,
                attempt: m.attempt,
                make_before_break: m.old_alive,
                reason: m.reason,
            });
        }
        m.next_retry = now + self.cfg.reattach_retry;
        out.push(PathAction::Reattach {
            via: m.to,
            seq: m.seq,
            old_path_alive: m.old_alive,
        });
        self.migration = Some(m);
    }

    /// Runs due timers.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if self.dirty && self.quiet_until.is_some_and(|q| now >= q) {
            self.reconcile(now, out);
        }
        if self.retry_switch_at.is_some_and(|t| now >= t) {
            self.retry_switch_at = None;
            self.decide(now, out);
        }
        if !self.live || !self.managed {
            return;
        }
        self.migration_timers(now, out);
        self.probe_timers(now, out);
        if self.migration.is_none() && !self.silent_reported {
            if now >= self.last_recv_active + self.cfg.heartbeat_volatile {
                self.path_failed(SwitchReason::HeartbeatTimeout, now, out);
            } else if self.cfg.max_consecutive_drops > 0
                && self.probes_unanswered > self.cfg.max_consecutive_drops
            {
                // More than `max_consecutive_drops` probes sent since anything came back: the
                // last `max_consecutive_drops` of them are lost.
                self.path_failed(SwitchReason::ConsecutiveDrops, now, out);
            }
        }
    }

    /// An authenticated data packet with `counter` arrived through `via`: feeds the downlink
    /// loss measurement of the active path (gaps in the peer's counters within `loss_window`).
    pub fn on_data_counter(
        &mut self,
        via: UplinkId,
        counter: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        if via != self.active || !self.live || !self.managed {
            return;
        }
        if self.migration.is_some() {
            // Not measured while a move is under way; the window restarts after it (a window
            // spanning the move would count everything in between as lost).
            self.loss = LossMeter::default();
            return;
        }
        let m = &mut self.loss;
        match m.first {
            Some(first) if counter >= first => {
                m.received += 1;
                m.last = m.last.max(counter);
            }
            // First packet of a window, or a new key epoch (counters restart).
            _ => *m = LossMeter::start(counter, now),
        }
        if m.started.is_none_or(|t| now < t + self.cfg.loss_window) {
            return;
        }
        let expected = m.last - m.first.unwrap_or(m.last) + 1;
        let loss = 1.0 - m.received as f64 / expected as f64;
        self.loss = LossMeter::default();
        if expected >= LOSS_MIN_SAMPLE && loss > self.cfg.loss_threshold && !self.silent_reported {
            tracing::debug!(
                loss,
                expected,
                "downlink loss over the threshold on the active path"
            );
            self.path_failed(SwitchReason::LossThreshold, now, out);
        }
    }

    /// The active path is unusable for `reason`: mark it and jump (or re-anchor).
    fn path_failed(&mut self, reason: SwitchReason, now: Instant, out: &mut Vec<PathAction>) {
        self.silent_reported = true;
        if let Some(u) = self.uplinks.get_mut(&self.active.interface()) {
            u.failed = true;
        }
        self.jump_from_dead(reason, now, out);
    }

    /// The next deadline and why.
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |t: Option<Instant>, why: Timer| {
            if let Some(t) = t {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, why));
                }
            }
        };
        consider(self.quiet_until.filter(|_| self.dirty), Timer::Reevaluate);
        consider(self.retry_switch_at, Timer::Reevaluate);
        if self.live && self.managed {
            if let Some(m) = &self.migration {
                consider(
                    Some(m.next_retry.min(m.started + self.cfg.recovery_window)),
                    Timer::Reattach,
                );
            } else if !self.silent_reported {
                consider(
                    Some(self.last_recv_active + self.cfg.heartbeat_volatile),
                    Timer::PathSilent,
                );
            }
            consider(Some(self.next_active_probe()), Timer::Probe);
            for u in self
                .uplinks
                .values()
                .filter(|u| u.info.id != self.active.interface())
            {
                consider(Some(u.next_probe), Timer::Probe);
            }
        }
        best
    }

    /// Applies the latest snapshot.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        self.dirty = false;
        self.quiet_until = Some(now + self.cfg.debounce);
        let first = !self.managed;
        self.managed = true;
        let latest = std::mem::take(&mut self.latest);
        self.uplinks
            .retain(|id, _| latest.iter().any(|u| u.id == *id));
        for u in &latest {
            match self.uplinks.get_mut(&u.id) {
                Some(s) => s.info = u.clone(),
                None => {
                    self.uplinks.insert(
                        u.id,
                        UplinkState {
                            info: u.clone(),
                            present_since: now,
                            next_probe: now,
                            last_ack: None,
                            failed: false,
                            generation: 0,
                        },
                    );
                }
            }
        }
        self.latest = latest;
        if self
            .migration
            .as_ref()
            .is_some_and(|m| !self.uplinks.contains_key(&m.to.interface()))
        {
            let m = self.migration.take().expect("checked above");
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
        }
        if first || !self.live {
            // Before a session exists there is nothing to reattach: just pick the best.
            let best = self.best(None).unwrap_or(UplinkId::DEFAULT);
            self.set_active(best);
            return;
        }
        self.decide(now, out);
    }

    /// Jumps from a dead active uplink, or towards a preferred one.
    fn decide(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if !self.live || !self.managed || self.migration.is_some() {
            return;
        }
        match self.uplinks.get(&self.active.interface()) {
            None => self.jump_from_dead(SwitchReason::TransportDead, now, out),
            Some(u) if u.failed => self.jump_from_dead(SwitchReason::HeartbeatTimeout, now, out),
            Some(_) => self.evaluate(now, out),
        }
    }

    /// Make-before-break towards a more preferred uplink, if there is one.
    fn evaluate(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if !self.live || self.migration.is_some() {
            return;
        }
        let Some(current) = self.uplinks.get(&self.active.interface()) else {
            return;
        };
        let current_rank = current.info.rank;
        let Some(best) = self
            .best(Some(self.active))
            .filter(|b| self.uplinks[&b.interface()].info.rank < current_rank)
        else {
            return;
        };
        let stable_at = self.uplinks[&best.interface()].present_since + self.cfg.switch_cooldown;
        if now < stable_at {
            self.retry_switch_at =
                Some(self.retry_switch_at.map_or(stable_at, |t| t.min(stable_at)));
            return;
        }
        if self.allowed(now, None, out) {
            self.start_migration(best, SwitchReason::PreferredAvailable, true, now, out);
        }
    }

    /// The active path is dead: move at once to the best other uplink.
    fn jump_from_dead(&mut self, reason: SwitchReason, now: Instant, out: &mut Vec<PathAction>) {
        let target = match self.best(Some(self.active)) {
            Some(t) => t,
            // Silent but still present and nothing else: re-anchor on the same bearer (its
            // NAT binding may have changed under us).
            None if matches!(
                reason,
                SwitchReason::HeartbeatTimeout
                    | SwitchReason::ConsecutiveDrops
                    | SwitchReason::LossThreshold
            ) && self.uplinks.contains_key(&self.active.interface()) =>
            {
                self.active
            }
            None => {
                out.push(PathAction::NoUplink { reason });
                return;
            }
        };
        if self.allowed(now, Some(reason), out) {
            self.start_migration(target, reason, false, now, out);
        }
    }

    fn start_migration(
        &mut self,
        to: UplinkId,
        reason: SwitchReason,
        old_alive: bool,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let from = self.active;
        let from_class = self.active_class;
        if !old_alive {
            // Break-before-make: data goes the new way at once.
            self.set_active(to);
            self.last_recv_active = now;
        }
        let attempt = self.migration.as_ref().map_or(1, |m| m.attempt + 1);
        self.migration = Some(Migration {
            to,
            from,
            from_class,
            seq: self.seq,
            started: now,
            next_retry: now + self.cfg.reattach_retry,
            old_alive,
            reason,
            attempt,
        });
        if let Some(class) = self.class_of(to) {
            out.push(PathAction::Attempt {
                to: class,
                attempt,
                make_before_break: old_alive,
                reason,
            });
        }
        out.push(PathAction::Reattach {
            via: to,
            seq: self.seq,
            old_path_alive: old_alive,
        });
    }

    fn migration_timers(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        let Some(m) = self.migration.as_mut() else {
            return;
        };
        if now >= m.started + self.cfg.recovery_window {
            let m = self.migration.take().expect("checked above");
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
            // A moving-target move that failed says nothing against the bearer.
            if m.reason != SwitchReason::MovingTarget {
                if let Some(u) = self.uplinks.get_mut(&m.to.interface()) {
                    u.failed = true;
                }
            }
            if !m.old_alive {
                self.active = m.from;
                self.active_class = m.from_class;
                self.jump_from_dead(m.reason, now, out);
            }
        } else if now >= m.next_retry {
            m.next_retry = now + self.cfg.reattach_retry;
            out.push(PathAction::Reattach {
                via: m.to,
                seq: m.seq,
                old_path_alive: m.old_alive,
            });
        }
    }

    fn next_active_probe(&self) -> Instant {
        let since = self
            .last_probe_active
            .map_or(self.last_recv_active, |p| p.max(self.last_recv_active));
        since + self.cfg.heartbeat_interval
    }

    fn probe_timers(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if now >= self.next_active_probe() {
            self.last_probe_active = Some(now);
            self.probes_unanswered += 1;
            self.seq = self.seq.wrapping_add(1);
            out.push(PathAction::Probe {
                via: self.active,
                seq: self.seq,
            });
        }
        let active = self.active.interface();
        let mut due = Vec::new();
        for u in self
            .uplinks
            .values_mut()
            .filter(|u| u.info.id != active && now >= u.next_probe)
        {
            let every = self
                .cfg
                .standby_probe
                .get(&u.info.class)
                .copied()
                .unwrap_or(Duration::from_secs(2));
            u.next_probe = now + every;
            due.push(u.transport());
        }
        for via in due {
            self.seq = self.seq.wrapping_add(1);
            out.push(PathAction::Probe { via, seq: self.seq });
        }
    }

    fn set_active(&mut self, id: UplinkId) {
        self.active = id;
        self.active_class = self.class_of(id);
        self.probes_unanswered = 0;
        self.loss = LossMeter::default();
    }

    /// The socket of the best usable uplink other than `except`'s: not failed first, then by
    /// rank.
    fn best(&self, except: Option<UplinkId>) -> Option<UplinkId> {
        let except = except.map(UplinkId::interface);
        self.uplinks
            .values()
            .filter(|u| Some(u.info.id) != except)
            .min_by_key(|u| (u.failed, u.info.rank, u.info.id))
            .map(UplinkState::transport)
    }

    /// Applies the switch bounds; reports a denial and schedules the retry.
    fn allowed(
        &mut self,
        now: Instant,
        dead: Option<SwitchReason>,
        out: &mut Vec<PathAction>,
    ) -> bool {
        let minute = Duration::from_secs(60);
        while self.attempts.front().is_some_and(|t| now >= *t + minute) {
            self.attempts.pop_front();
        }
        let denied = if let Some(last) = self
            .attempts
            .back()
            .filter(|t| now < **t + self.cfg.switch_cooldown)
        {
            Some((DenyReason::CooldownActive, *last + self.cfg.switch_cooldown))
        } else if self.attempts.len() >= self.cfg.max_switches_per_min as usize {
            Some((DenyReason::SwitchRateLimited, self.attempts[0] + minute))
        } else {
            None
        };
        match denied {
            Some((reason, retry)) => {
                out.push(PathAction::Denied { reason, dead });
                self.retry_switch_at = Some(retry);
                false
            }
            None => {
                self.attempts.push_back(now);
                true
            }
        }
    }
}
