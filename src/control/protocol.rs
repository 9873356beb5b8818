//! The control protocol: newline-delimited JSON requests and responses, and the status report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Longest request line the server reads (bytes, without the newline).
pub const MAX_REQUEST_BYTES: usize = 4096;

/// A request, as parsed by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `{"cmd":"status"}`
    Status,
    /// `{"cmd":"events"}`: acknowledge, then stream event lines until the client disconnects.
    Events,
    /// `{"cmd":"terminate","session_id":"<32 hex>"}`
    Terminate {
        /// Normalized to lowercase.
        session_id: String,
    },
}

impl Request {
    /// The request's JSON line (with its `\n`), as the client sends it.
    pub fn to_line(&self) -> String {
        let v = match self {
            Request::Status => json!({"cmd": "status"}),
            Request::Events => json!({"cmd": "events"}),
            Request::Terminate { session_id } => {
                json!({"cmd": "terminate", "session_id": session_id})
            }
        };
        format!("{v}\n")
    }

    /// Parses one request line. The error is the message for the `{"ok":false}` response.
    /// Keys other than `cmd` and `session_id` are ignored.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| {
            format!("malformed request ({e}); send one JSON object per line, e.g. {{\"cmd\":\"status\"}}")
        })?;
        let Some(obj) = v.as_object() else {
            return Err("a request must be a JSON object, e.g. {\"cmd\":\"status\"}".to_string());
        };
        let cmd = match obj.get("cmd") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err("\"cmd\" must be a string".to_string()),
            None => return Err("missing \"cmd\" (status, events or terminate)".to_string()),
        };
        match cmd {
            "status" => Ok(Request::Status),
            "events" => Ok(Request::Events),
            "terminate" => match obj.get("session_id") {
                Some(Value::String(id)) => Ok(Request::Terminate {
                    session_id: parse_session_id(id)?,
                }),
                _ => Err(
                    "terminate needs \"session_id\": the SessionID as 32 hex digits".to_string(),
                ),
            },
            other => Err(format!(
                "unknown command {other:?} (expected status, events or terminate)"
            )),
        }
    }
}

/// Checks a SessionID as typed by an operator: 32 hex digits; returns it in lowercase.
pub fn parse_session_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a SessionID: expected 32 hex digits as `jvpn status` shows them"
        ))
    }
}

/// `{"ok":false,"error":...}` with its newline.
pub fn error_line(message: &str) -> String {
    format!("{}\n", json!({"ok": false, "error": message}))
}

/// `{"ok":true, key: value}` with its newline.
pub fn ok_line(key: &str, value: Value) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("ok".to_string(), Value::Bool(true));
    obj.insert(key.to_string(), value);
    format!("{}\n", Value::Object(obj))
}

/// Which kind of node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// `jvpn up`.
    Laptop,
    /// `jvpn gateway`.
    Gateway,
}

impl NodeRole {
    /// `laptop` or `gateway`.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Laptop => "laptop",
            NodeRole::Gateway => "gateway",
        }
    }
}

/// What `jvpn status` shows. **Local only**: it may carry interface names and addresses, which
/// events never do; the socket is mode 0600 (root), so only the node's operator sees them.
///
/// Every field the driver may not know is an `Option` (`null` in JSON, `-` in the table), and
/// missing fields deserialize as `None`, so old and new versions read each other's reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `laptop` or `gateway`.
    pub role: NodeRole,
    /// The node's identity (public key), as in events.
    pub node_id: String,
    /// The `version` of the policy in force.
    pub policy_version: String,
    /// The TUN device's name (local only).
    #[serde(default)]
    pub tunnel: Option<String>,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// Packets dropped by the core, by `DropReason` name (lower_snake_case).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Event lines lost by all sinks and followers. Filled in by the control server from the
    /// `EventHub`; the driver leaves it `None`.
    #[serde(default)]
    pub events_dropped: Option<u64>,
    /// Event lines lost, by sink (`stdout`, `file:PATH`, `followers`). Filled in by the control
    /// server.
    #[serde(default)]
    pub event_sinks_dropped: BTreeMap<String, u64>,
    /// The audit trail's counters (`appended`, `failed`, `rejected`, and the laptop's
    /// `acknowledged`, `undelivered`, `draft_overflow` or the gateway's `received_overflow`);
    /// `None` when the node has no `audit` file.
    #[serde(default)]
    pub audit: Option<BTreeMap<String, u64>>,
    /// One entry per session (on a laptop: at most one, or none while handshaking).
    #[serde(default)]
    pub sessions: Vec<SessionStatus>,
    /// When the core's next deadline is due and which timer it is; `None` when the core has
    /// no deadline (it waits for input only).
    #[serde(default)]
    pub next_wakeup: Option<Wakeup>,
}

/// The core's next deadline, as of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeup {
    /// Milliseconds from the report to the deadline (0: due now).
    pub in_ms: u64,
    /// Why: the timer's name (`keepalive`, `handshake_retry`, `rekey`, ...).
    pub timer: String,
}

impl StatusReport {
    /// A report without sessions or counters.
    pub fn new(
        role: NodeRole,
        node_id: impl Into<String>,
        policy_version: impl Into<String>,
        uptime_ms: u64,
    ) -> StatusReport {
        StatusReport {
            role,
            node_id: node_id.into(),
            policy_version: policy_version.into(),
            tunnel: None,
            uptime_ms,
            drops: BTreeMap::new(),
            events_dropped: None,
            event_sinks_dropped: BTreeMap::new(),
            audit: None,
            sessions: Vec::new(),
            next_wakeup: None,
        }
    }
}

/// One session in `jvpn status`. Durations are milliseconds *before now* ("age"), so the
/// report needs no clock to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// SessionID, 32 lowercase hex digits.
    pub session_id: String,
    /// The peer's configured name, else its public key.
    #[serde(default)]
    pub peer: Option<String>,
    /// `BIRTH`, `ATTACHED`, `VOLATILE`, `DEGRADED`, `RECOVERING` or `TERMINATED`.
    #[serde(default)]
    pub state: Option<String>,
    /// The session's `state_version`.
    #[serde(default)]
    pub state_version: Option<u64>,
    /// **Local only**: the interface carrying the session (laptop), e.g. `wlan0`.
    #[serde(default)]
    pub bearer: Option<String>,
    /// The bearer's class (`wifi`, `cellular`, `wired`, ...).
    #[serde(default)]
    pub bearer_class: Option<String>,
    /// **Local only**: the peer's current address and port.
    #[serde(default)]
    pub remote: Option<String>,
    /// Data packets sent.
    #[serde(default)]
    pub tx_packets: Option<u64>,
    /// Data bytes sent (payload).
    #[serde(default)]
    pub tx_bytes: Option<u64>,
    /// Data packets received and authenticated.
    #[serde(default)]
    pub rx_packets: Option<u64>,
    /// Data bytes received (payload).
    #[serde(default)]
    pub rx_bytes: Option<u64>,
    /// Packets rejected by the replay window.
    #[serde(default)]
    pub replays: Option<u64>,
    /// Packets that failed authentication.
    #[serde(default)]
    pub auth_failures: Option<u64>,
    /// Current key epoch (0 before the first rekey).
    #[serde(default)]
    pub key_epoch: Option<u64>,
    /// Milliseconds since the current keys were installed.
    #[serde(default)]
    pub key_age_ms: Option<u64>,
    /// Milliseconds since the last authenticated packet from the peer.
    #[serde(default)]
    pub last_authenticated_ms: Option<u64>,
    /// Milliseconds since the session was established.
    #[serde(default)]
    pub age_ms: Option<u64>,
}

impl SessionStatus {
    /// A session with only its id known.
    pub fn new(session_id: impl Into<String>) -> SessionStatus {
        SessionStatus {
            session_id: session_id.into(),
            ..SessionStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        for r in [
            Request::Status,
            Request::Events,
            Request::Terminate {
                session_id: "00112233445566778899aabbccddeeff".into(),
            },
        ] {
            let line = r.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::parse(line.trim_end().as_bytes()), Ok(r));
        }
        assert_eq!(
            Request::parse(
                br#"{"cmd":"terminate","session_id":"00112233445566778899AABBCCDDEEFF","x":1}"#
            ),
            Ok(Request::Terminate {
                session_id: "00112233445566778899aabbccddeeff".into()
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: [(&[u8], &str); 7] = [
            (b"{", "malformed"),
            (b"[1]", "must be a JSON object"),
            (b"{}", "missing \"cmd\""),
            (br#"{"cmd":1}"#, "must be a string"),
            (br#"{"cmd":"reboot"}"#, "unknown command \"reboot\""),
            (br#"{"cmd":"terminate"}"#, "needs \"session_id\""),
            (
                br#"{"cmd":"terminate","session_id":"xyz"}"#,
                "not a SessionID",
            ),
        ];
        for (line, want) in cases {
            let err = Request::parse(line).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn a_report_with_unknown_fields_round_trips_and_missing_options_read_as_none() {
        let mut r = StatusReport::new(NodeRole::Gateway, "key", "default-1", 5);
        r.sessions
            .push(SessionStatus::new("00112233445566778899aabbccddeeff"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["role"], "gateway");
        assert_eq!(v["sessions"][0]["state"], Value::Null);
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let minimal: StatusReport = serde_json::from_str(
            r#"{"role":"laptop","node_id":"k","policy_version":"p","uptime_ms":1,"sessions":[{"session_id":"ab"}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.sessions[0].tx_packets, None);
    }
}
