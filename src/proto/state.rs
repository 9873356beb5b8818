//! The session state machine (REQUIREMENTS M1–M5): six states, a fixed table of allowed
//! transitions with their reason codes, and a `state_version` that grows by exactly one per
//! accepted transition. Anything not in the table is refused and changes nothing; TERMINATED
//! is absorbing. Pure and deterministic: the same inputs give the same versions and reasons.

use std::fmt;
use std::time::{Duration, Instant};

/// A session state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Birth,
    Attached,
    Volatile,
    Degraded,
    Recovering,
    Terminated,
}

impl State {
    /// The upper-case name used in events and status.
    pub fn name(self) -> &'static str {
        match self {
            State::Birth => "BIRTH",
            State::Attached => "ATTACHED",
            State::Volatile => "VOLATILE",
            State::Degraded => "DEGRADED",
            State::Recovering => "RECOVERING",
            State::Terminated => "TERMINATED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a transition happened: stable lower_snake_case reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    AttachedToTransport,
    LossThresholdExceeded,
    ConsecutiveDropExceeded,
    HeartbeatTimeout,
    TransportDead,
    LatencyThresholdExceeded,
    LossRecovery,
    DeadTransportRecovery,
    PolicyForcedRecovery,
    VolatilePersisted,
    SwitchRateLimited,
    ReattachSuccess,
    ReattachValidationFailed,
    NoCandidateTransports,
    PolicyDenied,
    RecoveryWindowExpired,
    SessionLifetimeExceeded,
    TransportTtlExceeded,
    SecurityFailure,
    OperatorTerminated,
    /// Extension: keys passed `key_max_age_ms` without a rekey.
    KeyExpired,
    /// Extension: the peer ended the session (authenticated close or trusted status frame).
    PeerTerminated,
    /// Extension: this node is shutting down.
    LocalShutdown,
    /// Extension: a new handshake replaced the session (S7).
    Rehandshake,
}

impl Reason {
    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::AttachedToTransport => "attached_to_transport",
            Reason::LossThresholdExceeded => "loss_threshold_exceeded",
            Reason::ConsecutiveDropExceeded => "consecutive_drop_exceeded",
            Reason::HeartbeatTimeout => "heartbeat_timeout",
            Reason::TransportDead => "transport_dead",
            Reason::LatencyThresholdExceeded => "latency_threshold_exceeded",
            Reason::LossRecovery => "loss_recovery",
            Reason::DeadTransportRecovery => "dead_transport_recovery",
            Reason::PolicyForcedRecovery => "policy_forced_recovery",
            Reason::VolatilePersisted => "volatile_persisted",
            Reason::SwitchRateLimited => "switch_rate_limited",
            Reason::ReattachSuccess => "reattach_success",
            Reason::ReattachValidationFailed => "reattach_validation_failed",
            Reason::NoCandidateTransports => "no_candidate_transports",
            Reason::PolicyDenied => "policy_denied",
            Reason::RecoveryWindowExpired => "recovery_window_expired",
            Reason::SessionLifetimeExceeded => "session_lifetime_exceeded",
            Reason::TransportTtlExceeded => "transport_ttl_exceeded",
            Reason::SecurityFailure => "security_failure",
            Reason::OperatorTerminated => "operator_terminated",
            Reason::KeyExpired => "key_expired",
            Reason::PeerTerminated => "peer_terminated",
            Reason::LocalShutdown => "local_shutdown",
            Reason::Rehandshake => "rehandshake",
        }
    }

    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 24] = [
        Reason::AttachedToTransport,
        Reason::LossThresholdExceeded,
        Reason::ConsecutiveDropExceeded,
        Reason::HeartbeatTimeout,
        Reason::TransportDead,
        Reason::LatencyThresholdExceeded,
        Reason::LossRecovery,
        Reason::DeadTransportRecovery,
        Reason::PolicyForcedRecovery,
        Reason::VolatilePersisted,
        Reason::SwitchRateLimited,
        Reason::ReattachSuccess,
        Reason::ReattachValidationFailed,
        Reason::NoCandidateTransports,
        Reason::PolicyDenied,
        Reason::RecoveryWindowExpired,
        Reason::SessionLifetimeExceeded,
        Reason::TransportTtlExceeded,
        Reason::SecurityFailure,
        Reason::OperatorTerminated,
        Reason::KeyExpired,
        Reason::PeerTerminated,
        Reason::LocalShutdown,
        Reason::Rehandshake,
    ];
}

/// Whether `(from, to, reason)` is in the table (M1).
pub fn allowed(from: State, to: State, reason: Reason) -> bool {
    use Reason as R;
    use State as S;
    match (from, to) {
        (S::Terminated, _) => false,
        (_, S::Terminated) => {
            matches!(
                reason,
                R::SessionLifetimeExceeded
                    | R::TransportTtlExceeded
                    | R::SecurityFailure
                    | R::OperatorTerminated
                    | R::KeyExpired
                    | R::PeerTerminated
                    | R::LocalShutdown
                    | R::Rehandshake
            ) || (from == S::Recovering && reason == R::RecoveryWindowExpired)
        }
        (S::Birth, S::Attached) => reason == R::AttachedToTransport,
        (S::Attached, S::Volatile) => matches!(
            reason,
            R::LossThresholdExceeded
                | R::ConsecutiveDropExceeded
                | R::HeartbeatTimeout
                | R::TransportDead
                | R::LatencyThresholdExceeded
        ),
        (S::Volatile, S::Recovering) | (S::Degraded, S::Recovering) => {
            matches!(
                reason,
                R::LossRecovery | R::DeadTransportRecovery | R::PolicyForcedRecovery
            )
        }
        (S::Volatile, S::Degraded) => matches!(reason, R::VolatilePersisted | R::SwitchRateLimited),
        (S::Recovering, S::Attached) => reason == R::ReattachSuccess,
        (S::Recovering, S::Degraded) => matches!(
            reason,
            R::ReattachValidationFailed
                | R::NoCandidateTransports
                | R::PolicyDenied
                | R::RecoveryWindowExpired
        ),
        _ => false,
    }
}

/// An accepted transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// The state_version after the transition.
    pub version: u64,
}

/// A refused transition (logged by the caller; nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub state: State,
    pub to: State,
    pub reason: Reason,
}

/// One session's machine.
#[derive(Clone, Debug)]
pub struct Machine {
    state: State,
    version: u64,
    entered: Instant,
}

impl Machine {
    /// A machine in BIRTH at version 0.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Birth,
            version: 0,
            entered: now,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// How long the machine has been in its current state.
    pub fn in_state(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.entered)
    }

    /// When the current state was entered.
    pub fn entered(&self) -> Instant {
        self.entered
    }

    /// Applies a transition if the table allows it.
    pub fn apply(
        &mut self,
        to: State,
        reason: Reason,
        now: Instant,
    ) -> Result<Transition, Refused> {
        if !allowed(self.state, to, reason) {
            tracing::debug!(state = %self.state, to = %to, reason = reason.code(), "refused state transition");
            return Err(Refused {
                state: self.state,
                to,
                reason,
            });
        }
        let from = self.state;
        self.state = to;
        self.version = self
            .version
            .checked_add(1)
            .expect("a u64 version never wraps in practice");
        self.entered = now;
        Ok(Transition {
            from,
            to,
            reason,
            version: self.version,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() is a test's epoch, nothing more.
mod tests {
    use super::*;

    const STATES: [State; 6] = [
        State::Birth,
        State::Attached,
        State::Volatile,
        State::Degraded,
        State::Recovering,
        State::Terminated,
    ];

    #[test]
    fn the_documented_path_of_a_jump() {
        let now = Instant::now();
        let mut m = Machine::new(now);
        let steps = [
            (State::Attached, Reason::AttachedToTransport),
            (State::Volatile, Reason::TransportDead),
            (State::Recovering, Reason::DeadTransportRecovery),
            (State::Attached, Reason::ReattachSuccess),
        ];
        for (i, (to, r)) in steps.into_iter().enumerate() {
            let t = m.apply(to, r, now).unwrap();
            assert_eq!(t.version, i as u64 + 1);
        }
        assert_eq!(m.state(), State::Attached);
    }

    #[test]
    fn refused_transitions_change_nothing() {
        let now = Instant::now();
        let mut m = Machine::new(now);
        assert!(m
            .apply(State::Recovering, Reason::LossRecovery, now)
            .is_err());
        assert!(m
            .apply(State::Attached, Reason::ReattachSuccess, now)
            .is_err());
        assert_eq!((m.state(), m.version()), (State::Birth, 0));
    }

    #[test]
    fn terminated_is_absorbing() {
        let now = Instant::now();
        let mut m = Machine::new(now);
        m.apply(State::Terminated, Reason::OperatorTerminated, now)
            .unwrap();
        for to in STATES {
            for r in Reason::ALL {
                assert!(m.apply(to, r, now).is_err(), "{to:?} {r:?}");
            }
        }
        assert_eq!(m.version(), 1);
    }

    #[test]
    fn every_state_but_terminated_can_terminate_for_the_four_required_reasons() {
        for from in STATES.into_iter().filter(|s| *s != State::Terminated) {
            for r in [
                Reason::SessionLifetimeExceeded,
                Reason::TransportTtlExceeded,
                Reason::SecurityFailure,
                Reason::OperatorTerminated,
            ] {
                assert!(allowed(from, State::Terminated, r), "{from:?} {r:?}");
            }
        }
    }

    #[test]
    fn the_table_has_exactly_the_documented_edges() {
        // Count allowed (from, to, reason) triples: a change to the table must be deliberate.
        let mut n = 0;
        for from in STATES {
            for to in STATES {
                for r in Reason::ALL {
                    n += usize::from(allowed(from, to, r));
                }
            }
        }
        // Birth→Attached 1; Attached→Volatile 5; Volatile/Degraded→Recovering 3+3;
        // Volatile→Degraded 2; Recovering→Attached 1; Recovering→Degraded 4;
        // →Terminated: 5 states × 8 reasons + Recovering's window expiry 1.
        assert_eq!(n, 1 + 5 + 6 + 2 + 1 + 4 + 5 * 8 + 1);
    }

    #[test]
    fn reason_codes_are_lower_snake_and_unique() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        for c in &codes {
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
        }
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }
}
