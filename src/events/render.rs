//! The core's [`Event`]s as JSON event records (`docs/EVENTS.md`, REQUIREMENTS E1–E2) and as
//! log lines, both rendered from the one [`Description`] of each event, so the two carry the
//! same fields under the same keys. Only bearer classes leave the node; addresses and interface
//! names never do.

use std::fmt::Write as _;

use serde_json::Value;

use super::EventRecord;
use crate::proto::event::{Description, FieldValue, Level};
use crate::proto::Event;

/// The record for `e`. `state_version` is the session's current version; it applies when the
/// event is about a session and does not carry a version itself.
pub fn record_of(
    e: &Event,
    node_id: &str,
    policy_version: &str,
    state_version: Option<u64>,
) -> EventRecord {
    let d = e.describe();
    let mut rec = EventRecord::new(d.name, node_id, policy_version);
    if let Some(id) = d.session {
        rec = rec.session(id);
    }
    if let Some(v) = d.state_version.or(d.session.and(state_version)) {
        rec = rec.state_version(v);
    }
    if let Some(code) = d.reason {
        rec = rec.reason(code);
    }
    for (key, value) in d.fields {
        rec = rec.field(key, json(value));
    }
    rec
}

/// Logs `e` at its level: the summary, then `key=value` for the session, the version the event
/// carries, the reason code and every field. `peer_name` names a peer by its index.
pub fn log_event(e: &Event, peer_name: &dyn Fn(usize) -> String) {
    let d = e.describe();
    let line = log_line(&d, peer_name);
    match d.level {
        Level::Debug => tracing::debug!("{line}"),
        Level::Info => tracing::info!("{line}"),
        Level::Warn => tracing::warn!("{line}"),
    }
}

fn json(value: FieldValue) -> Value {
    match value {
        FieldValue::Uint(n) => n.into(),
        FieldValue::Bool(b) => b.into(),
        FieldValue::Name(s) => s.into(),
        FieldValue::Session(id) => id.to_hex().into(),
        FieldValue::Peer(i) => (i as u64).into(),
        FieldValue::Absent => Value::Null,
    }
}

fn log_line(d: &Description, peer_name: &dyn Fn(usize) -> String) -> String {
    // Writing into a String cannot fail.
    let mut line = d.summary.to_owned();
    if let Some(id) = d.session {
        let _ = write!(line, " session_id={id}");
    }
    if let Some(v) = d.state_version {
        let _ = write!(line, " state_version={v}");
    }
    if let Some(code) = d.reason {
        let _ = write!(line, " reason_code={code}");
    }
    for (key, value) in &d.fields {
        let _ = match *value {
            FieldValue::Uint(n) => write!(line, " {key}={n}"),
            FieldValue::Bool(b) => write!(line, " {key}={b}"),
            FieldValue::Name(s) => write!(line, " {key}={s}"),
            FieldValue::Session(id) => write!(line, " {key}={id}"),
            FieldValue::Peer(i) => write!(line, " {key}={}", peer_name(i)),
            FieldValue::Absent => write!(line, " {key}=none"),
        };
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::policy::BearerClass;
    use crate::proto::control::RejectReason;
    use crate::proto::path::{DenyReason, ReattachStatus, SwitchReason};
    use crate::proto::rekey::{RekeyDenial, RekeyTrigger};
    use crate::proto::state::{Reason, State};
    use crate::proto::{CloseReason, SessionId};

    /// The lines [`SAMPLES`] gave before events were described once (frozen from that code):
    /// the description must not change a byte of the events file.
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
    const SAMPLES: &[(Event, Option<u64>)] = &[
        (Event::HandshakeInitiated { attempt: 3 }, Some(5)),
        (
            Event::HandshakeStalled {
                elapsed: Duration::from_millis(12_345),
            },
            None,
        ),
        (
            Event::SessionEstablished {
                session_id: ID,
                peer: 2,
                previous: None,
            },
            Some(1),
        ),
        (
            Event::SessionEstablished {
                session_id: ID,
                peer: 0,
                previous: Some(OTHER),
            },
            Some(1),
        ),
        (
            Event::TransportAttached {
                session_id: ID,
                class: Some(BearerClass::Wifi),
            },
            Some(2),
        ),
        (
            Event::TransportAttached {
                session_id: ID,
                class: None,
            },
            Some(2),
        ),
        (
            Event::TransportSwitch {
                session_id: ID,
                from: Some(BearerClass::Wifi),
                to: BearerClass::Cellular,
                reason: SwitchReason::HeartbeatTimeout,
            },
            Some(4),
        ),
        (
            Event::TransportSwitch {
                session_id: ID,
                from: None,
                to: BearerClass::Wired,
                reason: SwitchReason::MovingTarget,
            },
            Some(4),
        ),
        (
            Event::TransportSwitchDenied {
                session_id: ID,
                reason: DenyReason::CooldownActive,
            },
            Some(5),
        ),
        (
            Event::ReattachAttempt {
                session_id: ID,
                to: BearerClass::Cellular,
                attempt: 2,
                make_before_break: true,
            },
            Some(6),
        ),
        (
            Event::ReattachResult {
                session_id: ID,
                status: ReattachStatus::Accepted,
            },
            Some(7),
        ),
        (
            Event::ReattachResult {
                session_id: ID,
                status: ReattachStatus::Rejected(RejectReason::ValidationFailed),
            },
            Some(7),
        ),
        (
            Event::ReattachResult {
                session_id: ID,
                status: ReattachStatus::TimedOut,
            },
            Some(7),
        ),
        (
            Event::BindingMoved {
                session_id: ID,
                state_version: 11,
                reattach: true,
            },
            Some(99),
        ),
        (Event::BindingReverted { session_id: ID }, Some(8)),
        (
            Event::SecurityValidationFailed {
                session_id: Some(ID),
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
        (Event::SecurityReplayDetected { session_id: ID }, Some(8)),
        (
            Event::NoUplink {
                session_id: Some(ID),
            },
            Some(9),
        ),
        (Event::NoUplink { session_id: None }, Some(5)),
        (
            Event::SessionStateChange {
                session_id: ID,
                previous_state: State::Attached,
                new_state: State::Volatile,
                reason: Reason::LossThresholdExceeded,
                state_version: 12,
            },
            Some(99),
        ),
        (
            Event::SessionTerminated {
                session_id: ID,
                reason: Reason::RecoveryWindowExpired,
                state_version: 13,
                session_age: Duration::from_millis(60_001),
                transportless_age: Some(Duration::from_millis(5_500)),
            },
            Some(99),
        ),
        (
            Event::SessionTerminated {
                session_id: ID,
                reason: Reason::OperatorTerminated,
                state_version: 14,
                session_age: Duration::from_secs(2),
                transportless_age: None,
            },
            Some(99),
        ),
        (
            Event::KeyRotated {
                session_id: ID,
                epoch: 4,
                trigger: RekeyTrigger::TransportChange,
            },
            Some(10),
        ),
        (
            Event::RekeyDenied {
                session_id: ID,
                trigger: RekeyTrigger::TimeElapsed,
                reason: RekeyDenial::RateLimited,
            },
            Some(10),
        ),
        (
            Event::KeyExpired {
                session_id: ID,
                epoch: 5,
            },
            Some(10),
        ),
        (
            Event::SecurityKeyCompromiseSuspected {
                session_id: ID,
                evidence: "epoch_regression",
            },
            Some(10),
        ),
        (
            Event::SessionClosed {
                session_id: ID,
                peer: 1,
                reason: CloseReason::Replaced,
            },
            Some(10),
        ),
    ];
    const ID: SessionId = SessionId([0xab; 16]);
    const OTHER: SessionId = SessionId([0x01; 16]);

    /// Which variant `e` is; no wildcard, so a new variant cannot be left out of [`SAMPLES`].
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
        for (e, _) in SAMPLES {
            seen[variant(e)] = true;
        }
        let missing: Vec<usize> = (0..20).filter(|&i| !seen[i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    }

    #[test]
    fn every_event_writes_the_golden_line() {
        let expected: Vec<&str> = GOLDEN.lines().collect();
        assert_eq!(SAMPLES.len(), expected.len());
        for ((e, v), want) in SAMPLES.iter().zip(expected) {
            let line = record_of(e, "node-key", "default-1", *v)
                .at(1_700_000_000_000)
                .to_json_line();
            assert_eq!(line.trim_end(), want, "{e:?}");
        }
    }

    #[test]
    fn the_session_lookup_names_the_session_the_record_names() {
        for (e, v) in SAMPLES {
            let rec = record_of(e, "n", "p", *v);
            assert_eq!(e.session().map(|id| id.to_hex()), rec.session_id, "{e:?}");
        }
    }

    #[test]
    fn the_log_line_carries_the_record_fields_at_the_event_level() {
        let lines = logged(|| {
            for (e, _) in SAMPLES {
                log_event(e, &|i| format!("peer-{i}"));
            }
        });
        assert_eq!(lines.len(), SAMPLES.len(), "{lines:#?}");
        for ((e, v), line) in SAMPLES.iter().zip(&lines) {
            let (level, message) = line.trim_start().split_once(' ').unwrap();
            assert_eq!(level, level_before(e), "{line}");
            let logged: Vec<&str> = message.split(' ').filter(|w| w.contains('=')).collect();
            assert_eq!(logged, record_fields(e, *v), "{line}");
        }
    }

    /// The record's `key=value`s in its order, as a log line writes them: without the node's
    /// envelope or a state version the event does not carry itself, absent values as `none`,
    /// peers by name.
    fn record_fields(e: &Event, state_version: Option<u64>) -> Vec<String> {
        let rec = record_of(e, "n", "p", state_version);
        let mut want = Vec::new();
        if let Some(id) = &rec.session_id {
            want.push(format!("session_id={id}"));
        }
        if let (Some(v), Some(_)) = (rec.state_version, e.describe().state_version) {
            want.push(format!("state_version={v}"));
        }
        if let Some(code) = rec.reason_code {
            want.push(format!("reason_code={code}"));
        }
        for (key, value) in rec.fields {
            let text = match value {
                Value::String(s) => s,
                Value::Null => "none".to_owned(),
                v if key == "peer" => format!("peer-{v}"),
                v => v.to_string(),
            };
            want.push(format!("{key}={text}"));
        }
        want
    }

    /// The level each event was logged at before it was described once.
    fn level_before(e: &Event) -> &'static str {
        match e {
            Event::HandshakeInitiated { .. } => "DEBUG",
            Event::HandshakeStalled { .. }
            | Event::SecurityValidationFailed { .. }
            | Event::SecurityReplayDetected { .. }
            | Event::NoUplink { .. }
            | Event::KeyExpired { .. }
            | Event::SecurityKeyCompromiseSuspected { .. } => "WARN",
            _ => "INFO",
        }
    }

    /// The lines `f` logs, as `LEVEL message fields`.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || Capture(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        out.lines().map(str::to_owned).collect()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
