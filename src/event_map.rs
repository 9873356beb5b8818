//! Turns the core's [`Event`]s into the JSON event records of `docs/EVENTS.md` (REQUIREMENTS
//! E1–E2). Only bearer classes leave the node; addresses and interface names never do.

use crate::events::EventRecord;
use crate::proto::path::ReattachStatus;
use crate::proto::Event;

/// The record for `e`; `state_version` is the session's current version when the event does
/// not carry one itself.
pub fn record(
    e: &Event,
    node_id: &str,
    policy_version: &str,
    state_version: Option<u64>,
) -> EventRecord {
    let r = |ty: &'static str| EventRecord::new(ty, node_id, policy_version);
    let class = |c: &Option<crate::policy::BearerClass>| {
        c.map_or(serde_json::Value::Null, |c| c.as_str().into())
    };
    let with = |rec: EventRecord| match state_version {
        Some(v) => rec.state_version(v),
        None => rec,
    };
    match e {
        Event::HandshakeInitiated { attempt } => r("HandshakeInitiated").field("attempt", *attempt),
        Event::HandshakeStalled { elapsed } => {
            r("HandshakeStalled").field("elapsed_ms", elapsed.as_millis() as u64)
        }
        Event::SessionEstablished {
            session_id,
            peer,
            previous,
        } => with(
            r("SessionEstablished")
                .session(session_id)
                .field("peer", *peer as u64)
                .field(
                    "previous_session_id",
                    previous.map_or(serde_json::Value::Null, |p| p.to_hex().into()),
                ),
        ),
        Event::TransportAttached {
            session_id,
            class: c,
        } => with(
            r("TransportAttached")
                .session(session_id)
                .field("transport_class", class(c)),
        ),
        Event::TransportSwitch {
            session_id,
            from,
            to,
            reason,
        } => with(
            r("TransportSwitch")
                .session(session_id)
                .reason(reason.name())
                .field("previous_transport", class(from))
                .field("new_transport", to.as_str()),
        ),
        Event::TransportSwitchDenied { session_id, reason } => with(
            r("TransportSwitchDenied")
                .session(session_id)
                .reason(reason.name()),
        ),
        Event::ReattachAttempt {
            session_id,
            to,
            attempt,
            make_before_break,
        } => with(
            r("ReattachAttempt")
                .session(session_id)
                .field("new_transport", to.as_str())
                .field("attempt", *attempt)
                .field("make_before_break", *make_before_break),
        ),
        Event::ReattachResult { session_id, status } => {
            let rec = r("ReattachResult").session(session_id);
            let rec = match status {
                ReattachStatus::Accepted => rec.field("status", "accepted"),
                ReattachStatus::Rejected(why) => rec.field("status", "rejected").reason(why.name()),
                ReattachStatus::TimedOut => rec
                    .field("status", "timed_out")
                    .reason("recovery_window_expired"),
            };
            with(rec)
        }
        Event::BindingMoved {
            session_id,
            state_version: v,
            reattach,
        } => r("BindingMoved")
            .session(session_id)
            .state_version(*v)
            .field("reattach", *reattach),
        Event::BindingReverted { session_id } => with(r("BindingReverted").session(session_id)),
        Event::SecurityValidationFailed {
            session_id,
            failures,
            suppressed,
        } => {
            let rec = r("SecurityValidationFailed")
                .reason("authentication_failed")
                .field("failures", *failures)
                .field("suppressed", *suppressed);
            match session_id {
                Some(id) => with(rec.session(id)),
                None => rec,
            }
        }
        Event::SecurityReplayDetected { session_id } => with(
            r("SecurityReplayDetected")
                .session(session_id)
                .reason("replay"),
        ),
        Event::NoUplink { session_id } => {
            let rec = r("NoUplink").reason("no_candidate_transports");
            match session_id {
                Some(id) => with(rec.session(id)),
                None => rec,
            }
        }
        Event::SessionStateChange {
            session_id,
            previous_state,
            new_state,
            reason,
            state_version: v,
        } => r("SessionStateChange")
            .session(session_id)
            .state_version(*v)
            .reason(reason.code())
            .field("previous_state", previous_state.name())
            .field("new_state", new_state.name()),
        Event::SessionTerminated {
            session_id,
            reason,
            state_version: v,
            session_age,
            transportless_age,
        } => r("SessionTerminated")
            .session(session_id)
            .state_version(*v)
            .reason(reason.code())
            .field("session_age_ms", session_age.as_millis() as u64)
            .field(
                "transportless_age_ms",
                transportless_age
                    .map_or(serde_json::Value::Null, |d| (d.as_millis() as u64).into()),
            ),
        Event::KeyRotated {
            session_id,
            epoch,
            trigger,
        } => with(
            r("KeyRotated")
                .session(session_id)
                .reason(trigger.code())
                .field("key_epoch", *epoch),
        ),
        Event::RekeyDenied {
            session_id,
            trigger,
            reason,
        } => with(
            r("RekeyDenied")
                .session(session_id)
                .reason(reason.code())
                .field("trigger", trigger.code()),
        ),
        Event::KeyExpired { session_id, epoch } => with(
            r("KeyExpired")
                .session(session_id)
                .reason("key_expired")
                .field("key_epoch", *epoch),
        ),
        Event::SecurityKeyCompromiseSuspected {
            session_id,
            evidence,
        } => with(
            r("SecurityKeyCompromiseSuspected")
                .session(session_id)
                .reason("security_failure")
                .field("evidence", *evidence),
        ),
        Event::SessionClosed {
            session_id,
            peer,
            reason,
        } => with(
            r("SessionClosed")
                .session(session_id)
                .reason(reason.name())
                .field("peer", *peer as u64),
        ),
    }
}

/// The session an event is about, if any.
pub fn session_of(e: &Event) -> Option<crate::proto::SessionId> {
    match e {
        Event::HandshakeInitiated { .. } | Event::HandshakeStalled { .. } => None,
        Event::SecurityValidationFailed { session_id, .. } | Event::NoUplink { session_id } => {
            *session_id
        }
        Event::SessionEstablished { session_id, .. }
        | Event::TransportAttached { session_id, .. }
        | Event::TransportSwitch { session_id, .. }
        | Event::TransportSwitchDenied { session_id, .. }
        | Event::ReattachAttempt { session_id, .. }
        | Event::ReattachResult { session_id, .. }
        | Event::BindingMoved { session_id, .. }
        | Event::BindingReverted { session_id }
        | Event::SecurityReplayDetected { session_id }
        | Event::SessionStateChange { session_id, .. }
        | Event::SessionTerminated { session_id, .. }
        | Event::KeyRotated { session_id, .. }
        | Event::RekeyDenied { session_id, .. }
        | Event::KeyExpired { session_id, .. }
        | Event::SecurityKeyCompromiseSuspected { session_id, .. }
        | Event::SessionClosed { session_id, .. } => Some(*session_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::state::{Reason, State};
    use crate::proto::SessionId;

    #[test]
    fn a_state_change_carries_every_common_field() {
        let e = Event::SessionStateChange {
            session_id: SessionId([7; 16]),
            previous_state: State::Attached,
            new_state: State::Volatile,
            reason: Reason::TransportDead,
            state_version: 2,
        };
        let line = record(&e, "node", "default-1", None).to_json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], "SessionStateChange");
        assert_eq!(v["session_id"], SessionId([7; 16]).to_hex());
        assert_eq!(v["state_version"], 2);
        assert_eq!(v["reason_code"], "transport_dead");
        assert_eq!(v["previous_state"], "ATTACHED");
        assert_eq!(v["new_state"], "VOLATILE");
        assert_eq!(v["policy_version"], "default-1");
        assert!(v["ts_ms"].as_u64().unwrap() > 0);
    }
}
