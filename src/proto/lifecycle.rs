//! A laptop session's life: the state machine driven by the path logic's decisions and by the
//! session's own bounds (lifetime, time without any bearer, time spent VOLATILE). It turns
//! [`PathAction`]s into transitions, so a jump is always VOLATILE → RECOVERING → ATTACHED, a
//! refused or timed-out reattach is RECOVERING → DEGRADED, and every bound ends in an explicit,
//! reason-coded TERMINATED (never a silent stop).
//!
//! A make-before-break move to a preferred bearer is not instability: the session stays
//! ATTACHED (one active binding; the gateway moves it atomically once the new path validates)
//! and only a `TransportSwitch` event is reported.

use std::time::{Duration, Instant};

use super::keys::SessionId;
use super::path::{PathAction, ReattachStatus, SwitchReason};
use super::state::{Machine, Reason, State, Transition};
use super::Event;
use crate::proto::control::RejectReason;

/// Bounds from the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub max_lifetime: Duration,
    pub transport_lost_ttl: Duration,
    pub volatile_to_degraded: Duration,
    /// `on_recovery_expiry = "terminated"`.
    pub terminate_on_recovery_expiry: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            max_lifetime: Duration::from_secs(8 * 3600),
            transport_lost_ttl: Duration::from_secs(15),
            volatile_to_degraded: Duration::from_secs(4),
            terminate_on_recovery_expiry: false,
        }
    }
}

/// One session's life on the laptop.
#[derive(Debug)]
pub struct Lifecycle {
    session_id: SessionId,
    machine: Machine,
    cfg: LifecycleConfig,
    created: Instant,
    transportless_since: Option<Instant>,
}

impl Lifecycle {
    /// A new session in BIRTH.
    pub fn new(session_id: SessionId, cfg: LifecycleConfig, now: Instant) -> Self {
        Self {
            session_id,
            machine: Machine::new(now),
            cfg,
            created: now,
            transportless_since: None,
        }
    }

    pub fn state(&self) -> State {
        self.machine.state()
    }

    /// New bounds (a policy reload); they apply from now on to this session.
    pub fn set_config(&mut self, cfg: LifecycleConfig) {
        self.cfg = cfg;
    }

    pub fn version(&self) -> u64 {
        self.machine.version()
    }

    /// BIRTH → ATTACHED: the handshake finished and the first binding exists.
    pub fn attach(&mut self, now: Instant, events: &mut Vec<Event>) {
        self.go(State::Attached, Reason::AttachedToTransport, now, events);
    }

    /// Applies what the path logic decided. Returns a termination reason when the session
    /// must end.
    pub fn on_path_action(
        &mut self,
        a: &PathAction,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Reason> {
        match *a {
            PathAction::Attempt {
                make_before_break: false,
                reason,
                ..
            } => {
                self.transportless_since = None;
                self.unstable_for(reason, now, events);
                let recovery = match reason {
                    SwitchReason::HeartbeatTimeout
                    | SwitchReason::ConsecutiveDrops
                    | SwitchReason::LossThreshold => Reason::LossRecovery,
                    SwitchReason::TransportDead => Reason::DeadTransportRecovery,
                    SwitchReason::PreferredAvailable | SwitchReason::MovingTarget => {
                        Reason::PolicyForcedRecovery
                    }
                };
                if matches!(self.state(), State::Volatile | State::Degraded) {
                    self.go(State::Recovering, recovery, now, events);
                }
            }
            PathAction::Denied {
                dead: Some(reason), ..
            } => {
                self.unstable_for(reason, now, events);
                if self.state() == State::Volatile {
                    // Both bounds (rate and cooldown) are switch rate limits in M1's terms.
                    self.go(State::Degraded, Reason::SwitchRateLimited, now, events);
                }
            }
            PathAction::NoUplink { reason } => {
                self.unstable_for(reason, now, events);
                self.transportless_since.get_or_insert(now);
            }
            PathAction::Result {
                status,
                make_before_break: false,
                ..
            } => return self.on_result(status, now, events),
            _ => {}
        }
        None
    }

    /// Runs the session's own bounds. Returns a termination reason when one is reached.
    pub fn on_timeout(&mut self, now: Instant, events: &mut Vec<Event>) -> Option<Reason> {
        if now >= self.created + self.cfg.max_lifetime {
            return Some(Reason::SessionLifetimeExceeded);
        }
        if self
            .transportless_since
            .is_some_and(|t| now >= t + self.cfg.transport_lost_ttl)
        {
            return Some(Reason::TransportTtlExceeded);
        }
        if self.state() == State::Volatile
            && self.machine.in_state(now) >= self.cfg.volatile_to_degraded
        {
            self.go(State::Degraded, Reason::VolatilePersisted, now, events);
        }
        None
    }

    /// The next deadline of the session's own bounds.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.created + self.cfg.max_lifetime;
        if let Some(since) = self.transportless_since {
            t = t.min(since + self.cfg.transport_lost_ttl);
        }
        if self.state() == State::Volatile {
            t = t.min(self.machine.entered() + self.cfg.volatile_to_degraded);
        }
        t
    }

    /// Any state → TERMINATED; reports `SessionTerminated` with the session's ages.
    pub fn terminate(&mut self, reason: Reason, now: Instant, events: &mut Vec<Event>) {
        if self.go(State::Terminated, reason, now, events).is_some() {
            events.push(Event::SessionTerminated {
                session_id: self.session_id,
                reason,
                state_version: self.version(),
                session_age: now.saturating_duration_since(self.created),
                transportless_age: self
                    .transportless_since
                    .map(|t| now.saturating_duration_since(t)),
            });
        }
    }

    fn on_result(
        &mut self,
        status: ReattachStatus,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Reason> {
        if self.state() != State::Recovering {
            return None;
        }
        match status {
            ReattachStatus::Accepted => {
                self.go(State::Attached, Reason::ReattachSuccess, now, events);
            }
            ReattachStatus::Rejected(RejectReason::PolicyDenied) => {
                self.go(State::Degraded, Reason::PolicyDenied, now, events);
            }
            ReattachStatus::Rejected(RejectReason::SessionExpired) => {
                return Some(Reason::SessionLifetimeExceeded)
            }
            ReattachStatus::Rejected(_) => {
                self.go(
                    State::Degraded,
                    Reason::ReattachValidationFailed,
                    now,
                    events,
                );
            }
            ReattachStatus::TimedOut if self.cfg.terminate_on_recovery_expiry => {
                return Some(Reason::RecoveryWindowExpired);
            }
            ReattachStatus::TimedOut => {
                self.go(State::Degraded, Reason::RecoveryWindowExpired, now, events);
            }
        }
        None
    }

    /// ATTACHED → VOLATILE for `reason` (no-op in any other state).
    fn unstable_for(&mut self, reason: SwitchReason, now: Instant, events: &mut Vec<Event>) {
        if self.state() == State::Attached {
            let r = match reason {
                SwitchReason::HeartbeatTimeout => Reason::HeartbeatTimeout,
                SwitchReason::ConsecutiveDrops => Reason::ConsecutiveDropExceeded,
                SwitchReason::LossThreshold => Reason::LossThresholdExceeded,
                _ => Reason::TransportDead,
            };
            self.go(State::Volatile, r, now, events);
        }
    }

    fn go(
        &mut self,
        to: State,
        reason: Reason,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Transition> {
        let t = self.machine.apply(to, reason, now).ok()?;
        events.push(Event::SessionStateChange {
            session_id: self.session_id,
            previous_state: t.from,
            new_state: t.to,
            reason: t.reason,
            state_version: t.version,
        });
        Some(t)
    }
}
