//! Events the core reports: plain data, drained with `poll_event()`. The driver logs them
//! and writes them to event sinks; emitting never changes the data path.
//!
//! Each event is described once, in [`Event::describe`]: its name, log level and summary, the
//! session it is about, its reason code and its fields in order. The JSON event record, the log
//! line and the state-version lookup all read that description (`crate::events` renders it),
//! so a field added there appears in all of them.

mod describe;

use std::time::Duration;

use super::bearer::BearerClass;
use super::keys::SessionId;
use super::path::{DenyReason, ReattachStatus, SwitchReason};
use super::rekey::{RekeyDenial, RekeyTrigger};
use super::state::{Reason, State};

pub use describe::{Description, FieldValue, Level};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent an authenticated close.
    PeerClosed,
    /// This node is shutting down.
    LocalShutdown,
    /// Nothing was heard from the peer for too long.
    PeerSilent,
    /// The gateway's idle expiry removed the session.
    IdleExpired,
    /// A newer handshake from the same peer replaced it.
    Replaced,
    /// The sending counter ran out.
    CounterExhausted,
}

impl CloseReason {
    /// The state machine's reason code for a session that ended this way.
    pub fn state_reason(self) -> super::state::Reason {
        use super::state::Reason;
        match self {
            CloseReason::PeerClosed => Reason::PeerTerminated,
            CloseReason::LocalShutdown => Reason::LocalShutdown,
            CloseReason::PeerSilent | CloseReason::IdleExpired => Reason::TransportTtlExceeded,
            CloseReason::Replaced => Reason::Rehandshake,
            CloseReason::CounterExhausted => Reason::KeyExpired,
        }
    }

    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::LocalShutdown => "local_shutdown",
            CloseReason::PeerSilent => "peer_silent",
            CloseReason::IdleExpired => "idle_expired",
            CloseReason::Replaced => "replaced",
            CloseReason::CounterExhausted => "counter_exhausted",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            CloseReason::PeerClosed => 1,
            CloseReason::LocalShutdown => 2,
            CloseReason::PeerSilent => 3,
            CloseReason::IdleExpired => 4,
            CloseReason::Replaced => 5,
            CloseReason::CounterExhausted => 6,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => CloseReason::PeerClosed,
            2 => CloseReason::LocalShutdown,
            3 => CloseReason::PeerSilent,
            4 => CloseReason::IdleExpired,
            5 => CloseReason::Replaced,
            6 => CloseReason::CounterExhausted,
            _ => return None,
        })
    }
}

/// Something that happened to a session. Outward-visible data only: bearer classes, never
/// addresses or interface names (those are logged at DEBUG by the core that knows them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The laptop sent a handshake initiation (attempt counts from 1).
    HandshakeInitiated { attempt: u32 },
    /// The laptop has heard nothing from the gateway for `elapsed`; it keeps retrying.
    HandshakeStalled { elapsed: Duration },
    /// A session is established and carries traffic. `peer` is the peer's index in the
    /// configuration (always 0 on the laptop).
    SessionEstablished {
        session_id: SessionId,
        peer: usize,
        /// The session this one replaces (after a termination or rehandshake), if any.
        previous: Option<SessionId>,
    },
    /// The session is bound to a bearer for the first time (laptop).
    TransportAttached {
        session_id: SessionId,
        class: Option<BearerClass>,
    },
    /// The laptop moved the session to another bearer (after the gateway acknowledged).
    TransportSwitch {
        session_id: SessionId,
        from: Option<BearerClass>,
        to: BearerClass,
        reason: SwitchReason,
    },
    /// A switch was not attempted because of the switching bounds.
    TransportSwitchDenied {
        session_id: SessionId,
        reason: DenyReason,
    },
    /// The laptop sent a reattach over a new bearer.
    ReattachAttempt {
        session_id: SessionId,
        to: BearerClass,
        attempt: u32,
        make_before_break: bool,
    },
    /// How a reattach ended (laptop), or how the gateway answered one.
    ReattachResult {
        session_id: SessionId,
        status: ReattachStatus,
    },
    /// The gateway moved a session's binding to a validated new path (`state_version` after).
    BindingMoved {
        session_id: SessionId,
        state_version: u64,
        reattach: bool,
    },
    /// The gateway gave a tentative path back because it never answered its challenge.
    BindingReverted { session_id: SessionId },
    /// Packets failed authentication from one source; `suppressed` once the source passed
    /// the policy limit (further failures are only counted).
    SecurityValidationFailed {
        session_id: Option<SessionId>,
        failures: u32,
        suppressed: bool,
    },
    /// An authenticated control packet was replayed.
    SecurityReplayDetected { session_id: SessionId },
    /// No uplink can carry the session (laptop).
    NoUplink { session_id: Option<SessionId> },
    /// The session state machine made a transition (exactly one per state_version).
    SessionStateChange {
        session_id: SessionId,
        previous_state: State,
        new_state: State,
        reason: Reason,
        state_version: u64,
    },
    /// The session reached TERMINATED.
    SessionTerminated {
        session_id: SessionId,
        reason: Reason,
        state_version: u64,
        session_age: Duration,
        /// How long it had been without any usable bearer, if it was.
        transportless_age: Option<Duration>,
    },
    /// The session moved to a new key epoch (same SessionID).
    KeyRotated {
        session_id: SessionId,
        epoch: u32,
        trigger: RekeyTrigger,
    },
    /// A rekey was not made.
    RekeyDenied {
        session_id: SessionId,
        trigger: RekeyTrigger,
        reason: RekeyDenial,
    },
    /// The keys passed `key_max_age_ms` without a rekey; the session ends (`key_expired`).
    KeyExpired { session_id: SessionId, epoch: u32 },
    /// Something only a holder of the session's keys could do went wrong (S9); the session
    /// ends with `security_failure`.
    SecurityKeyCompromiseSuspected {
        session_id: SessionId,
        evidence: &'static str,
    },
    /// A session ended.
    SessionClosed {
        session_id: SessionId,
        peer: usize,
        reason: CloseReason,
    },
}
