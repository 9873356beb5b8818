//! One event as plain data, and its JSON line.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The keys every event line starts with, in this order (`reason_code` only when one applies).
/// Extra fields must not reuse them.
pub const COMMON_KEYS: [&str; 7] = [
    "ts_ms",
    "event_type",
    "session_id",
    "node_id",
    "policy_version",
    "state_version",
    "reason_code",
];

/// One event, ready to be written as one JSON line (REQUIREMENTS E1).
///
/// **Privacy contract (J11):** the caller guarantees that no field, common or extra, carries an
/// IP address, a port, an interface name or a secret. Events leave the machine (files shipped to
/// a collector, `jvpn events --follow`); bearers appear only as their class (`wifi`, `cellular`,
/// ...). Addresses and interface names belong in the local `jvpn status` and in DEBUG logs.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// CamelCase event name, e.g. `SessionStateChange`.
    pub event_type: &'static str,
    /// The SessionID as 32 lowercase hex digits, or `None` for events about no session yet
    /// (written as `null`).
    pub session_id: Option<String>,
    /// The emitting node's identity (its public key as `jvpn pubkey` prints it).
    pub node_id: String,
    /// The `version` of the policy in force.
    pub policy_version: String,
    /// The session's `state_version` when the event happened, `None` when there is no session
    /// state (written as `null`).
    pub state_version: Option<u64>,
    /// lower_snake_case reason code; the key is left out of the line when `None`.
    pub reason_code: Option<&'static str>,
    /// Event-specific fields, written after the common ones in this order. Keys are
    /// lower_snake_case and never one of [`COMMON_KEYS`].
    pub fields: Vec<(&'static str, Value)>,
}

impl EventRecord {
    /// A record stamped with the current wall-clock time, without session, state version,
    /// reason or fields; add them with the builder methods.
    pub fn new(
        event_type: &'static str,
        node_id: impl Into<String>,
        policy_version: impl Into<String>,
    ) -> EventRecord {
        EventRecord {
            ts_ms: unix_ms(),
            event_type,
            session_id: None,
            node_id: node_id.into(),
            policy_version: policy_version.into(),
            state_version: None,
            reason_code: None,
            fields: Vec::new(),
        }
    }

    /// Sets `session_id` (32 hex digits; anything `Display` such as `proto::SessionId`).
    pub fn session(mut self, session_id: impl ToString) -> Self {
        self.session_id = Some(session_id.to_string());
        self
    }

    /// Sets `state_version`.
    pub fn state_version(mut self, v: u64) -> Self {
        self.state_version = Some(v);
        self
    }

    /// Sets `reason_code` (lower_snake_case).
    pub fn reason(mut self, code: &'static str) -> Self {
        self.reason_code = Some(code);
        self
    }

    /// Appends an event-specific field.
    pub fn field(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((key, value.into()));
        self
    }

    /// Sets `ts_ms` (tests and replays; `new` already stamps the current time).
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = ts_ms;
        self
    }

    /// The event as one JSON object on one line, with a trailing `\n`.
    ///
    /// Keys in order: `ts_ms`, `event_type`, `session_id`, `node_id`, `policy_version`,
    /// `state_version` (always present; `null` when unknown), then `reason_code` (only when one
    /// applies), then the extra fields in their order. An extra field that reuses a common key
    /// or repeats an earlier extra key is left out (and trips a debug assertion), so the line
    /// never holds a duplicate key.
    pub fn to_json_line(&self) -> String {
        debug_assert!(
            is_event_type_name(self.event_type),
            "event_type {:?} is not CamelCase",
            self.event_type
        );
        if let Some(code) = self.reason_code {
            debug_assert!(
                is_reason_code(code),
                "reason_code {code:?} is not lower_snake_case"
            );
        }
        let mut out = Vec::with_capacity(256 + 32 * self.fields.len());
        out.push(b'{');
        let mut w = ObjectWriter {
            out: &mut out,
            first: true,
        };
        w.key_value("ts_ms", &Value::from(self.ts_ms));
        w.key_str("event_type", self.event_type);
        match &self.session_id {
            Some(s) => w.key_str("session_id", s),
            None => w.key_value("session_id", &Value::Null),
        }
        w.key_str("node_id", &self.node_id);
        w.key_str("policy_version", &self.policy_version);
        w.key_value(
            "state_version",
            &self.state_version.map_or(Value::Null, Value::from),
        );
        if let Some(code) = self.reason_code {
            w.key_str("reason_code", code);
        }
        for (i, (key, value)) in self.fields.iter().enumerate() {
            let reused = COMMON_KEYS.contains(key);
            let repeated = self.fields[..i].iter().any(|(k, _)| k == key);
            debug_assert!(
                !reused && !repeated && is_reason_code(key),
                "bad extra field key {key:?} in {}",
                self.event_type
            );
            if !reused && !repeated {
                w.key_value(key, value);
            }
        }
        out.extend_from_slice(b"}\n");
        // serde_json writes valid UTF-8 and everything else pushed is ASCII.
        String::from_utf8(out).expect("serde_json output is UTF-8")
    }
}

struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl ObjectWriter<'_> {
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json(self.out, &Value::from(key));
        self.out.push(b':');
    }

    fn key_value(&mut self, key: &str, value: &Value) {
        self.key(key);
        write_json(self.out, value);
    }

    fn key_str(&mut self, key: &str, value: &str) {
        self.key(key);
        // Serializing a &str directly avoids building a Value (an allocation) per string.
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            self.out.extend_from_slice(b"null");
        }
    }
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing a Value into a Vec cannot fail (no I/O, and Value has only string keys).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// True for a CamelCase event name: an ASCII capital first, then ASCII letters and digits.
pub fn is_event_type_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// True for a lower_snake_case name (reason codes and field keys): `[a-z][a-z0-9]*` words
/// joined by single underscores.
pub fn is_reason_code(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('_')
        && !s.contains("__")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> EventRecord {
        EventRecord::new("SessionStateChange", "node-key", "default-1")
            .at(1_700_000_000_123)
            .session("00112233445566778899aabbccddeeff")
            .state_version(3)
            .reason("reattach_success")
            .field("previous_state", "RECOVERING")
            .field("new_state", "ATTACHED")
    }

    #[test]
    fn a_line_is_one_object_with_the_common_keys_first_then_the_fields_in_order() {
        let line = sample().to_json_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "ts_ms": 1_700_000_000_123u64,
                "event_type": "SessionStateChange",
                "session_id": "00112233445566778899aabbccddeeff",
                "node_id": "node-key",
                "policy_version": "default-1",
                "state_version": 3,
                "reason_code": "reattach_success",
                "previous_state": "RECOVERING",
                "new_state": "ATTACHED",
            })
        );
        let order = [
            "\"ts_ms\"",
            "\"event_type\"",
            "\"session_id\"",
            "\"node_id\"",
            "\"policy_version\"",
            "\"state_version\"",
            "\"reason_code\"",
            "\"previous_state\"",
            "\"new_state\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| line.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    }

    #[test]
    fn unknown_session_and_state_are_null_and_a_missing_reason_is_left_out() {
        let line = EventRecord::new("HandshakeInitiated", "n", "p")
            .field("attempt", 1)
            .to_json_line();
        let v: Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj["session_id"], Value::Null);
        assert_eq!(obj["state_version"], Value::Null);
        assert!(!obj.contains_key("reason_code"));
        assert_eq!(obj["attempt"], 1);
        assert!(obj["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn strings_are_escaped() {
        let line = EventRecord::new("X", "a\"b\n\\c", "v\u{1}")
            .field("note", "line1\nline2 \u{e9}")
            .to_json_line();
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["node_id"], "a\"b\n\\c");
        assert_eq!(v["policy_version"], "v\u{1}");
        assert_eq!(v["note"], "line1\nline2 \u{e9}");
    }

    #[test]
    fn names_are_checked() {
        for ok in ["reattach_success", "a", "key_max_age_ms", "x2_y"] {
            assert!(is_reason_code(ok), "{ok}");
        }
        for bad in [
            "",
            "Reattach",
            "reattach-success",
            "_a",
            "a_",
            "a__b",
            "2a",
            "a b",
        ] {
            assert!(!is_reason_code(bad), "{bad}");
        }
        for ok in ["SessionStateChange", "X", "KeyRotated2"] {
            assert!(is_event_type_name(ok), "{ok}");
        }
        for bad in ["", "sessionStateChange", "Session_State", "Session State"] {
            assert!(!is_event_type_name(bad), "{bad}");
        }
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn a_field_reusing_a_common_key_is_left_out() {
        let line = EventRecord::new("X", "n", "p")
            .field("node_id", "other")
            .field("a", 1)
            .field("a", 2)
            .to_json_line();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["node_id"], "n");
        assert_eq!(v["a"], 1);
    }

    #[test]
    #[should_panic(expected = "bad extra field key")]
    #[cfg(debug_assertions)]
    fn a_field_reusing_a_common_key_trips_the_debug_assertion() {
        let _ = EventRecord::new("X", "n", "p")
            .field("state_version", 1)
            .to_json_line();
    }
}
