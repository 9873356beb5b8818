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

mod probing;
mod reattach;
mod switching;
#[cfg(test)]
mod tests;
mod uplinks;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use probing::LossMeter;
use reattach::Migration;

use super::control::RejectReason;
use super::{PathConfig, Timer, UplinkId};
use crate::proto::bearer::BearerClass;

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
}
