//! Control messages: the plaintext of Control packets, sealed under the control keys. All
//! integers little-endian. Probing messages (`PathChallenge`, `PathResponse`, `Probe`,
//! `ProbeAck`) never move a session's binding; `Reattach` asks for a move.
//!
//! ```text
//! Close           0:type=1 1:reason
//! Reattach        0:type=2 1:flags(bit0 = old path still alive) 2..6:seq u32
//!                 6..14:state_version u64 14..22:elapsed_ms u64 22..30:last_data_counter u64
//!                 30..:zero padding up to REATTACH_LEN (raises the anti-amplification budget)
//! ReattachAck     0:type=3 1..5:seq u32 5..13:state_version u64   (seq 0: unsolicited, after
//!                 the gateway validated a move it was not asked for, e.g. a NAT rebinding)
//! ReattachReject  0:type=4 1..5:seq u32 5:reason 6..14:state_version u64
//! PathChallenge   0:type=5 1..9:token
//! PathResponse    0:type=6 1..9:token
//! Probe           0:type=7 1..5:seq u32
//! ProbeAck        0:type=8 1..5:seq u32
//! RekeyInit       0:type=9 1..5:epoch u32 5..37:X25519 public key (initiator's ephemeral)
//! RekeyResp       0:type=10 1..5:epoch u32 5..37:X25519 public key (responder's ephemeral)
//! StatusFrame     0:type=11 1..3:the two-octet MUX status frame (gateway → laptop, only to a
//!                 peer that proved the session's keys; see `status_frame`)
//! AuditRecord     0:type=12 1..:a signed transport.rebind record, canonical bytes ‖ signature
//!                 (laptop → gateway; variable length, at most AUDIT_RECORD_MAX; see `crate::audit`)
//! AuditAck        0:type=13 1..9:first 8 bytes of SHA-256 over the AuditRecord body
//! ```

use super::CloseReason;

const TYPE_CLOSE: u8 = 1;
const TYPE_REATTACH: u8 = 2;
const TYPE_REATTACH_ACK: u8 = 3;
const TYPE_REATTACH_REJECT: u8 = 4;
const TYPE_PATH_CHALLENGE: u8 = 5;
const TYPE_PATH_RESPONSE: u8 = 6;
const TYPE_PROBE: u8 = 7;
const TYPE_PROBE_ACK: u8 = 8;
const TYPE_REKEY_INIT: u8 = 9;
const TYPE_REKEY_RESP: u8 = 10;
const TYPE_STATUS_FRAME: u8 = 11;
const TYPE_AUDIT_RECORD: u8 = 12;
const TYPE_AUDIT_ACK: u8 = 13;

/// Longest AuditRecord body accepted (a record with every string at its bound is ~700 bytes).
pub const AUDIT_RECORD_MAX: usize = 1024;

/// The body of an AuditRecord control plaintext, if `plain` is one. It is variable-length, so
/// it is not a [`ControlMessage`] (those are fixed-size and `Copy`).
pub fn audit_record_body(plain: &[u8]) -> Option<&[u8]> {
    match plain.split_first() {
        Some((&TYPE_AUDIT_RECORD, body)) if !body.is_empty() && body.len() <= AUDIT_RECORD_MAX => {
            Some(body)
        }
        _ => None,
    }
}

/// The control plaintext of an AuditRecord carrying `body`.
pub fn audit_record_plaintext(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + body.len());
    v.push(TYPE_AUDIT_RECORD);
    v.extend_from_slice(body);
    v
}

/// Plaintext length of a Reattach (padded).
pub const REATTACH_LEN: usize = 256;

/// A reattach request: proof of possession is the control key that seals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reattach {
    pub seq: u32,
    /// The old path still works: validate the new one before moving (make-before-break).
    pub old_path_alive: bool,
    /// The gateway's `state_version` the laptop last saw acknowledged.
    pub state_version: u64,
    /// Milliseconds since the session was established, by the laptop's clock (freshness).
    pub elapsed_ms: u64,
    /// The last data counter the laptop sent on the old path (the media window).
    pub last_data_counter: u64,
}

/// Why the gateway refused a reattach (J3). The binding is never changed by a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    StaleRequest,
    StaleStateVersion,
    SessionExpired,
    PolicyDenied,
    ValidationFailed,
}

impl RejectReason {
    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::StaleRequest => "stale_request",
            RejectReason::StaleStateVersion => "stale_state_version",
            RejectReason::SessionExpired => "session_expired",
            RejectReason::PolicyDenied => "policy_denied",
            RejectReason::ValidationFailed => "reattach_validation_failed",
        }
    }

    fn code(self) -> u8 {
        match self {
            RejectReason::StaleRequest => 1,
            RejectReason::StaleStateVersion => 2,
            RejectReason::SessionExpired => 3,
            RejectReason::PolicyDenied => 4,
            RejectReason::ValidationFailed => 5,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => RejectReason::StaleRequest,
            2 => RejectReason::StaleStateVersion,
            3 => RejectReason::SessionExpired,
            4 => RejectReason::PolicyDenied,
            5 => RejectReason::ValidationFailed,
            _ => return None,
        })
    }
}

/// A control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// The sender ends the session.
    Close(CloseReason),
    Reattach(Reattach),
    ReattachAck {
        seq: u32,
        state_version: u64,
    },
    ReattachReject {
        seq: u32,
        reason: RejectReason,
        /// The gateway's current state_version (so a laptop that missed a move can retry).
        state_version: u64,
    },
    PathChallenge([u8; 8]),
    PathResponse([u8; 8]),
    Probe(u32),
    ProbeAck(u32),
    /// Rekey: the initiator's ephemeral public key for key epoch `epoch`.
    RekeyInit {
        epoch: u32,
        public: [u8; 32],
    },
    /// Rekey: the responder's ephemeral public key for key epoch `epoch`.
    RekeyResp {
        epoch: u32,
        public: [u8; 32],
    },
    /// The gateway's honest word on a session it will not honour (F1).
    StatusFrame([u8; 2]),
    /// The gateway received the AuditRecord with this digest (`proto::audit::digest`).
    AuditAck([u8; 8]),
}

impl ControlMessage {
    /// Whether this message may never move a binding.
    pub fn is_probing(&self) -> bool {
        matches!(
            self,
            ControlMessage::PathChallenge(_)
                | ControlMessage::PathResponse(_)
                | ControlMessage::Probe(_)
                | ControlMessage::ProbeAck(_)
        )
    }

    /// Encodes the message into `out`, returning its length (`out` ≥ REATTACH_LEN).
    pub fn encode(self, out: &mut [u8]) -> usize {
        match self {
            ControlMessage::Close(r) => put(out, &[&[TYPE_CLOSE, r.code()]]),
            ControlMessage::Reattach(r) => {
                out[..REATTACH_LEN].fill(0);
                put(
                    out,
                    &[
                        &[TYPE_REATTACH, u8::from(r.old_path_alive)],
                        &r.seq.to_le_bytes(),
                        &r.state_version.to_le_bytes(),
                        &r.elapsed_ms.to_le_bytes(),
                        &r.last_data_counter.to_le_bytes(),
                    ],
                );
                REATTACH_LEN
            }
            ControlMessage::ReattachAck { seq, state_version } => put(
                out,
                &[
                    &[TYPE_REATTACH_ACK],
                    &seq.to_le_bytes(),
                    &state_version.to_le_bytes(),
                ],
            ),
            ControlMessage::ReattachReject {
                seq,
                reason,
                state_version,
            } => put(
                out,
                &[
                    &[TYPE_REATTACH_REJECT],
                    &seq.to_le_bytes(),
                    &[reason.code()],
                    &state_version.to_le_bytes(),
                ],
            ),
            ControlMessage::PathChallenge(t) => put(out, &[&[TYPE_PATH_CHALLENGE], &t]),
            ControlMessage::PathResponse(t) => put(out, &[&[TYPE_PATH_RESPONSE], &t]),
            ControlMessage::Probe(s) => put(out, &[&[TYPE_PROBE], &s.to_le_bytes()]),
            ControlMessage::ProbeAck(s) => put(out, &[&[TYPE_PROBE_ACK], &s.to_le_bytes()]),
            ControlMessage::RekeyInit { epoch, public } => {
                put(out, &[&[TYPE_REKEY_INIT], &epoch.to_le_bytes(), &public])
            }
            ControlMessage::RekeyResp { epoch, public } => {
                put(out, &[&[TYPE_REKEY_RESP], &epoch.to_le_bytes(), &public])
            }
            ControlMessage::StatusFrame(f) => put(out, &[&[TYPE_STATUS_FRAME], &f]),
            ControlMessage::AuditAck(d) => put(out, &[&[TYPE_AUDIT_ACK], &d]),
        }
    }

    /// Decodes a message; `None` for anything unknown or malformed.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let (&ty, rest) = b.split_first()?;
        Some(match (ty, rest.len()) {
            (TYPE_CLOSE, 1) => ControlMessage::Close(CloseReason::from_code(rest[0])?),
            (TYPE_REATTACH, n) if n == REATTACH_LEN - 1 => {
                if rest[0] > 1 || rest[29..].iter().any(|&x| x != 0) {
                    return None;
                }
                ControlMessage::Reattach(Reattach {
                    old_path_alive: rest[0] == 1,
                    seq: u32_at(rest, 1),
                    state_version: u64_at(rest, 5),
                    elapsed_ms: u64_at(rest, 13),
                    last_data_counter: u64_at(rest, 21),
                })
            }
            (TYPE_REATTACH_ACK, 12) => ControlMessage::ReattachAck {
                seq: u32_at(rest, 0),
                state_version: u64_at(rest, 4),
            },
            (TYPE_REATTACH_REJECT, 13) => ControlMessage::ReattachReject {
                seq: u32_at(rest, 0),
                reason: RejectReason::from_code(rest[4])?,
                state_version: u64_at(rest, 5),
            },
            (TYPE_PATH_CHALLENGE, 8) => ControlMessage::PathChallenge(rest.try_into().ok()?),
            (TYPE_PATH_RESPONSE, 8) => ControlMessage::PathResponse(rest.try_into().ok()?),
            (TYPE_PROBE, 4) => ControlMessage::Probe(u32_at(rest, 0)),
            (TYPE_PROBE_ACK, 4) => ControlMessage::ProbeAck(u32_at(rest, 0)),
            (TYPE_REKEY_INIT, 36) => ControlMessage::RekeyInit {
                epoch: u32_at(rest, 0),
                public: rest[4..36].try_into().ok()?,
            },
            (TYPE_STATUS_FRAME, 2) => ControlMessage::StatusFrame([rest[0], rest[1]]),
            (TYPE_AUDIT_ACK, 8) => ControlMessage::AuditAck(rest.try_into().ok()?),
            (TYPE_REKEY_RESP, 36) => ControlMessage::RekeyResp {
                epoch: u32_at(rest, 0),
                public: rest[4..36].try_into().ok()?,
            },
            _ => return None,
        })
    }
}

fn put(out: &mut [u8], parts: &[&[u8]]) -> usize {
    let mut n = 0;
    for p in parts {
        out[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    n
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(
        b[i..i + 4]
            .try_into()
            .expect("length checked by the caller's match"),
    )
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(
        b[i..i + 8]
            .try_into()
            .expect("length checked by the caller's match"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: ControlMessage) {
        let mut buf = [0u8; REATTACH_LEN];
        let n = m.encode(&mut buf);
        assert_eq!(ControlMessage::decode(&buf[..n]), Some(m), "{m:?}");
        for len in 0..n {
            assert_eq!(
                ControlMessage::decode(&buf[..len]),
                None,
                "{m:?} truncated to {len}"
            );
        }
    }

    #[test]
    fn every_message_round_trips_and_rejects_truncation() {
        round_trip(ControlMessage::Close(CloseReason::LocalShutdown));
        round_trip(ControlMessage::Reattach(Reattach {
            seq: 7,
            old_path_alive: true,
            state_version: 3,
            elapsed_ms: 123_456,
            last_data_counter: 99,
        }));
        round_trip(ControlMessage::ReattachAck {
            seq: 7,
            state_version: 4,
        });
        round_trip(ControlMessage::ReattachReject {
            seq: 7,
            reason: RejectReason::StaleRequest,
            state_version: 2,
        });
        round_trip(ControlMessage::PathChallenge([1, 2, 3, 4, 5, 6, 7, 8]));
        round_trip(ControlMessage::PathResponse([8; 8]));
        round_trip(ControlMessage::Probe(5));
        round_trip(ControlMessage::ProbeAck(5));
        round_trip(ControlMessage::RekeyInit {
            epoch: 3,
            public: [7; 32],
        });
        round_trip(ControlMessage::RekeyResp {
            epoch: 3,
            public: [8; 32],
        });
        round_trip(ControlMessage::StatusFrame([0x65, 0xF6]));
        round_trip(ControlMessage::AuditAck([3; 8]));
    }

    #[test]
    fn audit_records_are_bounded_and_typed() {
        let p = audit_record_plaintext(&[7; 300]);
        assert_eq!(audit_record_body(&p), Some(&[7u8; 300][..]));
        assert_eq!(audit_record_body(&[TYPE_AUDIT_RECORD]), None, "empty body");
        assert_eq!(
            audit_record_body(&audit_record_plaintext(&[0; AUDIT_RECORD_MAX + 1])),
            None
        );
        assert_eq!(audit_record_body(&[TYPE_PROBE, 0, 0, 0, 0]), None);
        // Not a fixed-size message either.
        assert_eq!(ControlMessage::decode(&p), None);
    }

    #[test]
    fn unknown_codes_and_dirty_padding_are_rejected() {
        assert_eq!(ControlMessage::decode(&[]), None);
        assert_eq!(ControlMessage::decode(&[1, 99]), None);
        assert_eq!(ControlMessage::decode(&[9, 0, 0, 0, 0]), None);
        assert_eq!(
            ControlMessage::decode(&[4, 0, 0, 0, 0, 77, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        let mut buf = [0u8; REATTACH_LEN];
        let m = ControlMessage::Reattach(Reattach {
            seq: 1,
            old_path_alive: false,
            state_version: 0,
            elapsed_ms: 0,
            last_data_counter: 0,
        });
        let n = m.encode(&mut buf);
        buf[n - 1] = 1;
        assert_eq!(ControlMessage::decode(&buf[..n]), None);
    }
}
