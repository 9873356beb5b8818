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
    use std::time::Duration;

    use super::*;
    use crate::policy::BearerClass;
    use crate::proto::control::RejectReason;
    use crate::proto::path::{DenyReason, ReattachStatus, SwitchReason};
    use crate::proto::rekey::{RekeyDenial, RekeyTrigger};
    use crate::proto::state::{Reason, State};
    use crate::proto::{CloseReason, SessionId};

    /// The line each of `samples()` writes, frozen: the events file format must not change
    /// a byte while the code that writes it does.
    const GOLDEN: &str = r#"{"ts_ms":1700000000000,"event_type":"HandshakeInitiated","session_id":null,"node_id":"node-key","policy_version":"default-1","state_version":null,"attempt":3}
{"ts_ms":1700000000000,"event_type":"HandshakeStalled","session_id":null,"node_id":"node-key","policy_version":"default-1","state_version":null,"elapsed_ms":12345}
{"ts_ms":1700000000000,"event_type":"SessionEstablished","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":1,"peer":2,"previous_session_id":null}
{"ts_ms":1700000000000,"event_type":"SessionEstablished","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":1,"peer":0,"previous_session_id":"01010101010101010101010101010101"}
{"ts_ms":1700000000000,"event_type":"TransportAttached","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":2,"transport_class":"wifi"}
{"ts_ms":1700000000000,"event_type":"TransportAttached","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":2,"transport_class":null}
{"ts_ms":1700000000000,"event_type":"TransportSwitch","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":4,"reason_code":"heartbeat_timeout","previous_transport":"wifi","new_transport":"cellular"}
{"ts_ms":1700000000000,"event_type":"TransportSwitch","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":4,"reason_code":"moving_target","previous_transport":null,"new_transport":"wired"}
{"ts_ms":1700000000000,"event_type":"TransportSwitchDenied","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":5,"reason_code":"cooldown_active"}
{"ts_ms":1700000000000,"event_type":"ReattachAttempt","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":6,"new_transport":"cellular","attempt":2,"make_before_break":true}
{"ts_ms":1700000000000,"event_type":"ReattachResult","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":7,"status":"accepted"}
{"ts_ms":1700000000000,"event_type":"ReattachResult","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":7,"reason_code":"reattach_validation_failed","status":"rejected"}
{"ts_ms":1700000000000,"event_type":"ReattachResult","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":7,"reason_code":"recovery_window_expired","status":"timed_out"}
{"ts_ms":1700000000000,"event_type":"BindingMoved","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":11,"reattach":true}
{"ts_ms":1700000000000,"event_type":"BindingReverted","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":8}
{"ts_ms":1700000000000,"event_type":"SecurityValidationFailed","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":8,"reason_code":"authentication_failed","failures":17,"suppressed":true}
{"ts_ms":1700000000000,"event_type":"SecurityValidationFailed","session_id":null,"node_id":"node-key","policy_version":"default-1","state_version":null,"reason_code":"authentication_failed","failures":1,"suppressed":false}
{"ts_ms":1700000000000,"event_type":"SecurityReplayDetected","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":8,"reason_code":"replay"}
{"ts_ms":1700000000000,"event_type":"NoUplink","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":9,"reason_code":"no_candidate_transports"}
{"ts_ms":1700000000000,"event_type":"NoUplink","session_id":null,"node_id":"node-key","policy_version":"default-1","state_version":null,"reason_code":"no_candidate_transports"}
{"ts_ms":1700000000000,"event_type":"SessionStateChange","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":12,"reason_code":"loss_threshold_exceeded","previous_state":"ATTACHED","new_state":"VOLATILE"}
{"ts_ms":1700000000000,"event_type":"SessionTerminated","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":13,"reason_code":"recovery_window_expired","session_age_ms":60001,"transportless_age_ms":5500}
{"ts_ms":1700000000000,"event_type":"SessionTerminated","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":14,"reason_code":"operator_terminated","session_age_ms":2000,"transportless_age_ms":null}
{"ts_ms":1700000000000,"event_type":"KeyRotated","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":10,"reason_code":"transport_change","key_epoch":4}
{"ts_ms":1700000000000,"event_type":"RekeyDenied","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":10,"reason_code":"rekey_rate_limited","trigger":"time_elapsed"}
{"ts_ms":1700000000000,"event_type":"KeyExpired","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":10,"reason_code":"key_expired","key_epoch":5}
{"ts_ms":1700000000000,"event_type":"SecurityKeyCompromiseSuspected","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":10,"reason_code":"security_failure","evidence":"epoch_regression"}
{"ts_ms":1700000000000,"event_type":"SessionClosed","session_id":"abababababababababababababababab","node_id":"node-key","policy_version":"default-1","state_version":10,"reason_code":"replaced","peer":1}
"#;

    /// One instance of every `Event` variant, plus one per branch that renders differently
    /// (an absent session, bearer, previous session or transportless age; each reattach status),
    /// each with the `state_version` the driver would pass.
    fn samples() -> Vec<(Event, Option<u64>)> {
        let id = SessionId([0xab; 16]);
        let other = SessionId([0x01; 16]);
        vec![
            (Event::HandshakeInitiated { attempt: 3 }, Some(5)),
            (
                Event::HandshakeStalled {
                    elapsed: Duration::from_millis(12_345),
                },
                None,
            ),
            (
                Event::SessionEstablished {
                    session_id: id,
                    peer: 2,
                    previous: None,
                },
                Some(1),
            ),
            (
                Event::SessionEstablished {
                    session_id: id,
                    peer: 0,
                    previous: Some(other),
                },
                Some(1),
            ),
            (
                Event::TransportAttached {
                    session_id: id,
                    class: Some(BearerClass::Wifi),
                },
                Some(2),
            ),
            (
                Event::TransportAttached {
                    session_id: id,
                    class: None,
                },
                Some(2),
            ),
            (
                Event::TransportSwitch {
                    session_id: id,
                    from: Some(BearerClass::Wifi),
                    to: BearerClass::Cellular,
                    reason: SwitchReason::HeartbeatTimeout,
                },
                Some(4),
            ),
            (
                Event::TransportSwitch {
                    session_id: id,
                    from: None,
                    to: BearerClass::Wired,
                    reason: SwitchReason::MovingTarget,
                },
                Some(4),
            ),
            (
                Event::TransportSwitchDenied {
                    session_id: id,
                    reason: DenyReason::CooldownActive,
                },
                Some(5),
            ),
            (
                Event::ReattachAttempt {
                    session_id: id,
                    to: BearerClass::Cellular,
                    attempt: 2,
                    make_before_break: true,
                },
                Some(6),
            ),
            (
                Event::ReattachResult {
                    session_id: id,
                    status: ReattachStatus::Accepted,
                },
                Some(7),
            ),
            (
                Event::ReattachResult {
                    session_id: id,
                    status: ReattachStatus::Rejected(RejectReason::ValidationFailed),
                },
                Some(7),
            ),
            (
                Event::ReattachResult {
                    session_id: id,
                    status: ReattachStatus::TimedOut,
                },
                Some(7),
            ),
            (
                Event::BindingMoved {
                    session_id: id,
                    state_version: 11,
                    reattach: true,
                },
                Some(99),
            ),
            (Event::BindingReverted { session_id: id }, Some(8)),
            (
                Event::SecurityValidationFailed {
                    session_id: Some(id),
                    failures: 17,
                    suppressed: true,
                },
                Some(8),
            ),
            (
                Event::SecurityValidationFailed {
                    session_id: None,
                    failures: 1,
                    suppressed: false,
                },
                Some(5),
            ),
            (Event::SecurityReplayDetected { session_id: id }, Some(8)),
            (
                Event::NoUplink {
                    session_id: Some(id),
                },
                Some(9),
            ),
            (Event::NoUplink { session_id: None }, Some(5)),
            (
                Event::SessionStateChange {
                    session_id: id,
                    previous_state: State::Attached,
                    new_state: State::Volatile,
                    reason: Reason::LossThresholdExceeded,
                    state_version: 12,
                },
                Some(99),
            ),
            (
                Event::SessionTerminated {
                    session_id: id,
                    reason: Reason::RecoveryWindowExpired,
                    state_version: 13,
                    session_age: Duration::from_millis(60_001),
                    transportless_age: Some(Duration::from_millis(5_500)),
                },
                Some(99),
            ),
            (
                Event::SessionTerminated {
                    session_id: id,
                    reason: Reason::OperatorTerminated,
                    state_version: 14,
                    session_age: Duration::from_secs(2),
                    transportless_age: None,
                },
                Some(99),
            ),
            (
                Event::KeyRotated {
                    session_id: id,
                    epoch: 4,
                    trigger: RekeyTrigger::TransportChange,
                },
                Some(10),
            ),
            (
                Event::RekeyDenied {
                    session_id: id,
                    trigger: RekeyTrigger::TimeElapsed,
                    reason: RekeyDenial::RateLimited,
                },
                Some(10),
            ),
            (
                Event::KeyExpired {
                    session_id: id,
                    epoch: 5,
                },
                Some(10),
            ),
            (
                Event::SecurityKeyCompromiseSuspected {
                    session_id: id,
                    evidence: "epoch_regression",
                },
                Some(10),
            ),
            (
                Event::SessionClosed {
                    session_id: id,
                    peer: 1,
                    reason: CloseReason::Replaced,
                },
                Some(10),
            ),
        ]
    }

    /// Which variant `e` is; no wildcard, so a new variant cannot be left out of `samples`.
    fn variant(e: &Event) -> usize {
        match e {
            Event::HandshakeInitiated { .. } => 0,
            Event::HandshakeStalled { .. } => 1,
            Event::SessionEstablished { .. } => 2,
            Event::TransportAttached { .. } => 3,
            Event::TransportSwitch { .. } => 4,
            Event::TransportSwitchDenied { .. } => 5,
            Event::ReattachAttempt { .. } => 6,
            Event::ReattachResult { .. } => 7,
            Event::BindingMoved { .. } => 8,
            Event::BindingReverted { .. } => 9,
            Event::SecurityValidationFailed { .. } => 10,
            Event::SecurityReplayDetected { .. } => 11,
            Event::NoUplink { .. } => 12,
            Event::SessionStateChange { .. } => 13,
            Event::SessionTerminated { .. } => 14,
            Event::KeyRotated { .. } => 15,
            Event::RekeyDenied { .. } => 16,
            Event::KeyExpired { .. } => 17,
            Event::SecurityKeyCompromiseSuspected { .. } => 18,
            Event::SessionClosed { .. } => 19,
        }
    }

    #[test]
    fn the_samples_hold_every_variant() {
        let mut seen = [false; 20];
        for (e, _) in samples() {
            seen[variant(&e)] = true;
        }
        let missing: Vec<usize> = (0..20).filter(|&i| !seen[i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    }

    #[test]
    fn every_event_writes_the_golden_line() {
        let expected: Vec<&str> = GOLDEN.lines().collect();
        let samples = samples();
        assert_eq!(samples.len(), expected.len());
        for ((e, v), want) in samples.iter().zip(expected) {
            let line = record(e, "node-key", "default-1", *v)
                .at(1_700_000_000_000)
                .to_json_line();
            assert_eq!(line.trim_end(), want, "{e:?}");
        }
    }

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
