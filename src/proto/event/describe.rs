//! The one description of each [`Event`]: what the JSON event record, the log line and the
//! state-version lookup read. Plain data; the renderings live in `crate::events`.

use std::time::Duration;

use super::Event;
use crate::proto::bearer::BearerClass;
use crate::proto::keys::SessionId;
use crate::proto::path::ReattachStatus;

/// What an event says, as plain data: the one description of each [`Event`] variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The CamelCase event type (`docs/EVENTS.md`).
    pub name: &'static str,
    /// How loud its log line is.
    pub level: Level,
    /// The log line's text, for a person.
    pub summary: &'static str,
    /// The session it is about, if any.
    pub session: Option<SessionId>,
    /// The state version the event carries itself. `None`: the session's version when the
    /// node drains its events applies (if there is a session).
    pub state_version: Option<u64>,
    /// The lower_snake_case reason code, if one applies.
    pub reason: Option<&'static str>,
    /// Event-specific fields, lower_snake_case keys, in the order they are written.
    pub fields: Vec<(&'static str, FieldValue)>,
}

/// How loud an event's log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// One field's value, typed so that each rendering writes it its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A count, an epoch, or a duration in milliseconds (the key says `_ms`).
    Uint(u64),
    Bool(bool),
    /// A stable name: a bearer class, a state, a trigger, a status.
    Name(&'static str),
    /// Another session, by its SessionID.
    Session(SessionId),
    /// A peer, by its index in the configuration (a log line may name it).
    Peer(usize),
    /// Nothing applies (no bearer, no previous session): `null` in the record.
    Absent,
}

impl Event {
    /// The session this event is about, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.describe().session
    }

    /// The event's one description; every rendering reads it.
    pub fn describe(&self) -> Description {
        match self {
            Event::HandshakeInitiated { .. }
            | Event::HandshakeStalled { .. }
            | Event::SessionEstablished { .. }
            | Event::SessionStateChange { .. }
            | Event::SessionTerminated { .. }
            | Event::SessionClosed { .. } => self.describe_lifecycle(),
            Event::TransportAttached { .. }
            | Event::TransportSwitch { .. }
            | Event::TransportSwitchDenied { .. }
            | Event::NoUplink { .. } => self.describe_transport(),
            Event::ReattachAttempt { .. }
            | Event::ReattachResult { .. }
            | Event::BindingMoved { .. }
            | Event::BindingReverted { .. } => self.describe_move(),
            Event::SecurityValidationFailed { .. }
            | Event::SecurityReplayDetected { .. }
            | Event::SecurityKeyCompromiseSuspected { .. } => self.describe_security(),
            Event::KeyRotated { .. } | Event::RekeyDenied { .. } | Event::KeyExpired { .. } => {
                self.describe_keys()
            }
        }
    }

    /// Handshakes and the session's life: established, state changes, the end.
    fn describe_lifecycle(&self) -> Description {
        use Level::{Debug, Info, Warn};
        let d = Description::new;
        match *self {
            Event::HandshakeInitiated { attempt } => {
                d("HandshakeInitiated", Debug, "handshake initiation sent")
                    .field("attempt", attempt)
            }
            Event::HandshakeStalled { elapsed } => {
                d("HandshakeStalled", Warn, STALLED).field("elapsed_ms", ms(elapsed))
            }
            Event::SessionEstablished {
                session_id,
                peer,
                previous,
            } => established(session_id, peer, previous),
            Event::SessionStateChange {
                session_id,
                previous_state,
                new_state,
                reason,
                state_version,
            } => d("SessionStateChange", Info, "session state change")
                .about(session_id)
                .own_version(state_version)
                .reason(reason.code())
                .field("previous_state", previous_state.name())
                .field("new_state", new_state.name()),
            Event::SessionTerminated {
                session_id,
                reason,
                state_version,
                session_age,
                transportless_age,
            } => d("SessionTerminated", Info, "session terminated")
                .about(session_id)
                .own_version(state_version)
                .reason(reason.code())
                .field("session_age_ms", ms(session_age))
                .field("transportless_age_ms", transportless_age.map(ms)),
            Event::SessionClosed {
                session_id,
                peer,
                reason,
            } => d("SessionClosed", Info, "session closed")
                .about(session_id)
                .reason(reason.name())
                .field("peer", FieldValue::Peer(peer)),
            // `describe` sends only the variants above here.
            _ => unreachable!("not a lifecycle event: {self:?}"),
        }
    }

    /// Which bearer carries the session: attached, switched, denied, none left.
    fn describe_transport(&self) -> Description {
        use Level::{Info, Warn};
        let d = Description::new;
        match *self {
            Event::TransportAttached { session_id, class } => {
                d("TransportAttached", Info, "transport attached")
                    .about(session_id)
                    .field("transport_class", class)
            }
            Event::TransportSwitch {
                session_id,
                from,
                to,
                reason,
            } => d("TransportSwitch", Info, "transport switch")
                .about(session_id)
                .reason(reason.name())
                .field("previous_transport", from)
                .field("new_transport", to),
            Event::TransportSwitchDenied { session_id, reason } => {
                d("TransportSwitchDenied", Info, "transport switch denied")
                    .about(session_id)
                    .reason(reason.name())
            }
            Event::NoUplink { session_id } => {
                d("NoUplink", Warn, "no usable uplink; waiting for one")
                    .about(session_id)
                    .reason("no_candidate_transports")
            }
            // `describe` sends only the variants above here.
            _ => unreachable!("not a transport event: {self:?}"),
        }
    }

    /// Moving a session to a new path: the laptop's reattach, the gateway's binding.
    fn describe_move(&self) -> Description {
        use Level::Info;
        let d = Description::new;
        match *self {
            Event::ReattachAttempt {
                session_id,
                to,
                attempt,
                make_before_break,
            } => d("ReattachAttempt", Info, "reattach attempt")
                .about(session_id)
                .field("new_transport", to)
                .field("attempt", attempt)
                .field("make_before_break", make_before_break),
            Event::ReattachResult { session_id, status } => reattach_result(session_id, status),
            Event::BindingMoved {
                session_id,
                state_version,
                reattach,
            } => d(
                "BindingMoved",
                Info,
                "session binding moved to a validated path",
            )
            .about(session_id)
            .own_version(state_version)
            .field("reattach", reattach),
            Event::BindingReverted { session_id } => d(
                "BindingReverted",
                Info,
                "unvalidated path abandoned; binding reverted",
            )
            .about(session_id),
            // `describe` sends only the variants above here.
            _ => unreachable!("not a path move event: {self:?}"),
        }
    }

    /// Checks that only a holder of the session's keys passes.
    fn describe_security(&self) -> Description {
        use Level::Warn;
        let d = Description::new;
        match *self {
            Event::SecurityValidationFailed {
                session_id,
                failures,
                suppressed,
            } => d(
                "SecurityValidationFailed",
                Warn,
                "packets failed authentication",
            )
            .about(session_id)
            .reason("authentication_failed")
            .field("failures", failures)
            .field("suppressed", suppressed),
            Event::SecurityReplayDetected { session_id } => d(
                "SecurityReplayDetected",
                Warn,
                "replayed control packet dropped",
            )
            .about(session_id)
            .reason("replay"),
            Event::SecurityKeyCompromiseSuspected {
                session_id,
                evidence,
            } => d("SecurityKeyCompromiseSuspected", Warn, COMPROMISE)
                .about(session_id)
                .reason("security_failure")
                .field("evidence", evidence),
            // `describe` sends only the variants above here.
            _ => unreachable!("not a security event: {self:?}"),
        }
    }

    /// The session's keys: rotated, refused a rotation, expired.
    fn describe_keys(&self) -> Description {
        use Level::{Info, Warn};
        let d = Description::new;
        match *self {
            Event::KeyRotated {
                session_id,
                epoch,
                trigger,
            } => d("KeyRotated", Info, "keys rotated")
                .about(session_id)
                .reason(trigger.code())
                .field("key_epoch", epoch),
            Event::RekeyDenied {
                session_id,
                trigger,
                reason,
            } => d("RekeyDenied", Info, "rekey denied")
                .about(session_id)
                .reason(reason.code())
                .field("trigger", trigger.code()),
            Event::KeyExpired { session_id, epoch } => {
                d("KeyExpired", Warn, "keys expired without a rekey")
                    .about(session_id)
                    .reason("key_expired")
                    .field("key_epoch", epoch)
            }
            // `describe` sends only the variants above here.
            _ => unreachable!("not a key event: {self:?}"),
        }
    }
}

fn established(id: SessionId, peer: usize, previous: Option<SessionId>) -> Description {
    let summary = match previous {
        Some(_) => "session established (a new session replaces the previous one)",
        None => "session established",
    };
    Description::new("SessionEstablished", Level::Info, summary)
        .about(id)
        .field("peer", FieldValue::Peer(peer))
        .field("previous_session_id", previous)
}

fn reattach_result(id: SessionId, status: ReattachStatus) -> Description {
    let d = Description::new("ReattachResult", Level::Info, "reattach result").about(id);
    match status {
        ReattachStatus::Accepted => d.field("status", "accepted"),
        ReattachStatus::Rejected(why) => d.field("status", "rejected").reason(why.name()),
        ReattachStatus::TimedOut => d
            .field("status", "timed_out")
            .reason("recovery_window_expired"),
    }
}

const STALLED: &str = "no answer from the gateway yet; check its endpoint, its public key, \
    and that it lists this laptop as a peer; still retrying";
const COMPROMISE: &str = "key compromise suspected; session terminated";

impl Description {
    fn new(name: &'static str, level: Level, summary: &'static str) -> Self {
        Description {
            name,
            level,
            summary,
            session: None,
            state_version: None,
            reason: None,
            fields: Vec::new(),
        }
    }

    fn about(mut self, session: impl Into<Option<SessionId>>) -> Self {
        self.session = session.into();
        self
    }

    fn own_version(mut self, v: u64) -> Self {
        self.state_version = Some(v);
        self
    }

    fn reason(mut self, code: &'static str) -> Self {
        self.reason = Some(code);
        self
    }

    fn field(mut self, key: &'static str, value: impl Into<FieldValue>) -> Self {
        self.fields.push((key, value.into()));
        self
    }
}

impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        FieldValue::Uint(v.into())
    }
}

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}

impl From<&'static str> for FieldValue {
    fn from(v: &'static str) -> Self {
        FieldValue::Name(v)
    }
}

impl From<BearerClass> for FieldValue {
    fn from(c: BearerClass) -> Self {
        FieldValue::Name(c.as_str())
    }
}

impl From<SessionId> for FieldValue {
    fn from(id: SessionId) -> Self {
        FieldValue::Session(id)
    }
}

impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Absent, Into::into)
    }
}

/// A duration as whole milliseconds.
fn ms(d: Duration) -> FieldValue {
    FieldValue::Uint(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
