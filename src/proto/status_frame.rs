//! The MUX status frame: a two-octet, relationship-scoped answer to a packet the gateway will
//! not honour (REQUIREMENTS F1–F3), encoded exactly as `draft-vandemeent-mux-status-frame-00`
//! (`shared/spec/002_b8e97826b1008306.txt`). Section numbers below are the order xml2rfc gives
//! the draft's sections: §3 The Status Frame (§3.1 octet 0, §3.2 octet 1, §3.3 encoding), §4 The
//! Anti-Enumeration Invariant, §5 Relationship Scoping, §6 Status Resolution, §7 Sender
//! Behaviour, §9 Fail-Safe and Determinism, §11 IANA Considerations, §12 Worked Vectors.
//!
//! # The rule
//!
//! Honest status goes only to a proven caller that has a relationship with the target (§5). To
//! the world, and to a proven but unrelated caller, the entire frame is `0x0000`, whatever the
//! target's state (§4). [`frame_for`] is the only function that turns a state into a frame and it
//! checks the [`Relationship`] first; a silent frame is unrepresentable with any other bit set
//! ([`StatusFrame::Silent`] carries no fields and [`Disclosure`] has no "silent" value), so the
//! state cannot leak through the lower nibbles. In jvpn a silent frame is never put on the wire:
//! the transport answers [`StatusFrame::is_silent`] frames with nothing at all (F1), so an
//! unknown tag, a bad MAC, a tombstoned session under the wrong key and a live session all look
//! the same from outside.
//!
//! # Encoding (§3)
//!
//! `octet0 = disclosure << 6 | state_class << 4 | reason`,
//! `octet1 = retry << 6 | detail_source << 4 | detail_code`. A vector written `0x5152` is
//! octet 0 `0x51` then octet 1 `0x52`. [`StatusFrame::decode`] refuses, with a [`DecodeError`]
//! naming the rule:
//! - disclosure `00` with any other bit of either octet set ([`DecodeError::SilentNotZero`];
//!   §4: "the entire frame MUST be 0x0000");
//! - disclosure `11` ([`DecodeError::ReservedDisclosure`]; §3.1);
//! - reason `1000`–`1111` ([`DecodeError::ReservedReason`]; §3.1, §11);
//! - detail code `1000`–`1111` ([`DecodeError::ReservedDetailCode`]; §3.2, §11).
//!
//! Every other value is accepted (8,193 of the 65,536), and `encode(decode(x)) == x` for each.
//! The retry and detail-source fields (octet 1, bits 7–4) are two fully allocated two-bit
//! fields: §11 says code points `1000`–`1111` are reserved "in each nibble", including that one,
//! but §3.2 defines retry `10` and `11`, and the worked vectors `0x5293`, `0x65F6` and `0x66F7`
//! use them. REQUIREMENTS F2 makes the worked vectors normative, so only the reason and detail
//! code nibbles have reserved code points. Field combinations the draft does not forbid (say,
//! class alive with reason tombstone-confirmed) decode; F2's rejection list is the whole list.
//!
//! # Target states (§6, §12)
//!
//! [`TargetState`] has one variant per state in the worked vectors, answered with exactly the
//! vector's octets, plus two jvpn session states composed from the draft's own code points:
//!
//! | [`TargetState`]      | frame    | source                                               |
//! |----------------------|----------|------------------------------------------------------|
//! | `Alive`              | `0x4000` | §12 vector; §4 explicit alive acknowledgement        |
//! | `HeartbeatDead`      | `0x5152` | §12 vector                                           |
//! | `NotInSession`       | `0x5293` | §12 vector; §6 "positive evidence the lane is quiet" |
//! | `NotRegistered`      | `0x5351` | §12 vector; §6 "record reserved/pending or absent"   |
//! | `CanonicalTombstone` | `0x65F6` | §12 vector; §6 "record marks revocation/tombstone"   |
//! | `SuccessorAvailable` | `0x66F7` | §12 vector; §6 "record has a successor/alias"        |
//! | `LocalTombstone`     | `0x65D5` | jvpn, from §3.1/§3.2 code points (below)             |
//! | `SessionExpired`     | `0x67D4` | jvpn, from §3.1/§3.2 code points (below)             |
//!
//! `0x65D5` is dead, tombstone-confirmed, do-not-retry-auto, local-mux, local-tombstone;
//! `0x67D4` is dead, assurance-expired, do-not-retry-auto, local-mux, session-expired.
//!
//! Every honest frame is sent at disclosure `01` (trusted), as in every vector; this module
//! never emits disclosure `10` (policy/security), whose use the draft does not describe, but
//! decodes it.
//!
//! # What the gateway answers about a session (F1)
//!
//! [`SessionKnowledge`] is the gateway's view of the session a packet names; [`gateway_frame`]
//! answers it through [`frame_for`], so the relationship check always comes first:
//!
//! - `Alive` → `Alive`, `0x4000`. §4: alive is implicit by routing; the gateway forwards the
//!   packet and sends no frame. `0x4000` is only the answer to an explicit status query on the
//!   trusted path, never unsolicited.
//! - `Terminated` → `LocalTombstone`, `0x65D5`. §6 names no "session ended" condition, and a
//!   terminated session is not §2's tombstone (the permanent revocation of an identity): its
//!   peer may start a new session at once. So the frame is composed from §3.1/§3.2 code points
//!   for a tombstone the mux itself holds (the gateway's bounded tombstone of the session): class
//!   dead, reason tombstone-confirmed, do-not-retry-auto (the session never comes back; F3),
//!   detail source local-mux, detail code local-tombstone. It stays distinct from a revoked key.
//! - `Expired` → `SessionExpired`, `0x67D4`, composed the same way: §3.2 has detail code
//!   session-expired, and the reason is assurance-expired (the session's lifetime or key age ran
//!   out, so its keys no longer vouch for anything). Not §6's "transient, not-in-session": that
//!   tells the sender to keep retrying, and an expired session never revives (F1 lists it among
//!   the refusals; F3 wants a fresh handshake at once).
//! - `Superseded` → `SuccessorAvailable`, `0x66F7`: §6's frame for "record has a successor"
//!   verbatim (F2); the newer session is the successor.
//! - `KeyRevoked` → `CanonicalTombstone`, `0x65F6`: §6's frame for "record marks revocation"
//!   verbatim (F2). §2 defines a tombstone as the permanent revocation of an identity, which is
//!   what a revoked key is; the caller's relationship is §5's tombstone-relation.
//! - `Unknown` → `0x0000` whoever asks. Nobody can prove a relationship to a session the gateway
//!   does not know; §5 "when the predicate cannot be established" and §9 "silence is the floor".
//!
//! The two verbatim frames say detail source signed-canonical-ref although jvpn's evidence is
//! the gateway's own peer configuration and session table; those are jvpn's canonical records of
//! who may connect and which session is current, and §6 fixes the octets. The composed frames say
//! local-mux. No laptop action depends on the detail source.
//!
//! In jvpn a caller is [`Relationship::Related`] when the packet authenticated under that
//! session's keys (the §5 active session or tombstone-relation) or came from a configured peer of
//! it; [`Relationship::ProvenUnrelated`] when it is authenticated but not as a party of that
//! session (§5: authentication alone is not a relationship); otherwise [`Relationship::World`]
//! (§10: a bad or missing proof earns nothing). Any error while deciding must end in `World`.
//!
//! # What the laptop does with a trusted frame (F3, §7)
//!
//! [`StatusFrame::sender_action`] keys on the state class, as §7 says a sender does:
//! - alive → [`SenderAction::Proceed`];
//! - transient → [`SenderAction::KeepTrying`] with the retry hint, unless the retry field is
//!   do-not-retry-auto: then [`SenderAction::FreshHandshake`] (§7 "retry per the retry bits");
//! - dead → [`SenderAction::FreshHandshake`] (§7 "stop or follow the hint"). The draft's
//!   do-not-retry-auto forbids retrying the dead session; a fresh handshake starts a new session,
//!   which F3 requires at once. On successor-available §7 says to re-resolve to the successor: in
//!   jvpn the only way to reach a successor session the laptop does not already hold is a
//!   handshake, so the action is the same;
//! - quarantine → [`SenderAction::FreshHandshake`]: §7 "stop" applies to the refused session;
//!   whether a new one may exist is decided by the gateway's admission policy during the
//!   handshake, which the handshake layer rate-limits;
//! - silent (`0x0000`) → [`SenderAction::KeepTrying`] with no hint: it discloses nothing, so the
//!   session and its timers stay as they are. A frame that does not decode must likewise be
//!   ignored, never read as "dead".
//!
//! Disclosure `01` and `10` are treated alike. The frame must have arrived inside the
//! authenticated channel; this module cannot check that.

use std::fmt;

/// Length of a status frame on the wire, in octets (§3).
pub const FRAME_LEN: usize = 2;

/// A decoded status frame. Silence carries no fields, so a frame with disclosure `00` and any
/// other bit set cannot be built (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFrame {
    /// `0x0000`: no disclosure. The answer to the world and to unrelated callers.
    Silent,
    /// An honest status, for a proven, related caller only.
    Disclosed(Disclosed),
}

/// The fields of an honest (disclosure `01` or `10`) frame, one per field of §3.1 and §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Disclosed {
    /// Octet 0, bits 7–6.
    pub disclosure: Disclosure,
    /// Octet 0, bits 5–4.
    pub state_class: StateClass,
    /// Octet 0, bits 3–0.
    pub reason: Reason,
    /// Octet 1, bits 7–6.
    pub retry: Retry,
    /// Octet 1, bits 5–4.
    pub detail_source: DetailSource,
    /// Octet 1, bits 3–0.
    pub detail_code: DetailCode,
}

/// Octet 0, bits 7–6, the values that disclose (§3.1). `00` is [`StatusFrame::Silent`]; `11` is
/// reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Disclosure {
    /// `01` trusted.
    Trusted = 0b01,
    /// `10` policy / security.
    PolicySecurity = 0b10,
}

/// Octet 0, bits 5–4 (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StateClass {
    /// `00` accepted / alive.
    Alive = 0b00,
    /// `01` transient / degraded.
    Transient = 0b01,
    /// `10` unavailable / dead.
    Dead = 0b10,
    /// `11` policy / quarantine.
    Quarantine = 0b11,
}

/// Octet 0, bits 3–0 (§3.1). `1000`–`1111` are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// `0000` none.
    None = 0b0000,
    /// `0001` heartbeat-dead.
    HeartbeatDead = 0b0001,
    /// `0010` not-in-session.
    NotInSession = 0b0010,
    /// `0011` not-registered.
    NotRegistered = 0b0011,
    /// `0100` consent-missing.
    ConsentMissing = 0b0100,
    /// `0101` tombstone-confirmed.
    TombstoneConfirmed = 0b0101,
    /// `0110` successor-available.
    SuccessorAvailable = 0b0110,
    /// `0111` assurance-expired.
    AssuranceExpired = 0b0111,
}

/// Octet 1, bits 7–6 (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Retry {
    /// `00` no-hint.
    NoHint = 0b00,
    /// `01` retry-soon.
    RetrySoon = 0b01,
    /// `10` retry-later.
    RetryLater = 0b10,
    /// `11` do-not-retry-auto.
    DoNotRetryAuto = 0b11,
}

/// Octet 1, bits 5–4 (§3.2): how strong the evidence is (§7: local-mux < local-cache <
/// signed-canonical-ref).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DetailSource {
    /// `00` none.
    None = 0b00,
    /// `01` local-mux.
    LocalMux = 0b01,
    /// `10` local-cache / last-known.
    LocalCache = 0b10,
    /// `11` signed-external / canonical-ref.
    SignedCanonicalRef = 0b11,
}

/// Octet 1, bits 3–0 (§3.2). `1000`–`1111` are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DetailCode {
    /// `0000` none.
    None = 0b0000,
    /// `0001` route-missing.
    RouteMissing = 0b0001,
    /// `0010` endpoint-inactive.
    EndpointInactive = 0b0010,
    /// `0011` runtime-wrapper-missing.
    RuntimeWrapperMissing = 0b0011,
    /// `0100` session-expired.
    SessionExpired = 0b0100,
    /// `0101` local-tombstone.
    LocalTombstone = 0b0101,
    /// `0110` canonical-tombstone.
    CanonicalTombstone = 0b0110,
    /// `0111` successor/ref-available.
    SuccessorRefAvailable = 0b0111,
}

/// Why [`StatusFrame::decode`] refused two octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Disclosure `00` (silent) but some other bit of the frame is set: a silent frame is
    /// entirely zero (§4).
    SilentNotZero {
        /// The refused octets.
        octets: [u8; FRAME_LEN],
    },
    /// Disclosure `11` is reserved (§3.1).
    ReservedDisclosure {
        /// The refused octets.
        octets: [u8; FRAME_LEN],
    },
    /// A reason code in the reserved range `1000`–`1111` (§3.1, §11).
    ReservedReason {
        /// The reason nibble.
        code: u8,
    },
    /// A detail code in the reserved range `1000`–`1111` (§3.2, §11).
    ReservedDetailCode {
        /// The detail-code nibble.
        code: u8,
    },
}

/// What the mux has established about the caller with respect to the target (§5, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    /// The world: an unknown or unproven caller, or one whose proof was bad or missing.
    World,
    /// A proven peer with no prior binding with the target. Authentication alone is not a
    /// relationship (§5).
    ProvenUnrelated,
    /// A proven peer with a prior bilateral binding with the target (§5).
    Related,
}

/// The state of the target (§2: the destination the caller is trying to reach; in jvpn the
/// session a packet names), as the mux resolved it (§6). The module documentation lists the
/// frame each one gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Reachable (§4, §6 "otherwise: alive"). Answered only to an explicit status query.
    Alive,
    /// The target's heartbeat stopped (§12).
    HeartbeatDead,
    /// Positive evidence that the lane is quiet (§6).
    NotInSession,
    /// The record is reserved, pending or absent (§6).
    NotRegistered,
    /// The canonical record marks the identity revoked (§6).
    CanonicalTombstone,
    /// The record names a successor (§6).
    SuccessorAvailable,
    /// jvpn: the mux holds a local tombstone for the session (terminated).
    LocalTombstone,
    /// jvpn: the session's lifetime or key age ran out.
    SessionExpired,
}

/// The gateway's knowledge of the session a packet names (REQUIREMENTS F1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKnowledge {
    /// The session is live; the packet is honoured.
    Alive,
    /// Terminated (operator, security failure); the gateway keeps a tombstone.
    Terminated,
    /// Its lifetime, key age or recovery window ran out.
    Expired,
    /// A newer session of the same peer replaced it.
    Superseded,
    /// The peer's key was revoked.
    KeyRevoked,
    /// The gateway knows no such session.
    Unknown,
}

/// What a laptop does with a status frame received inside the authenticated channel (F3, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderAction {
    /// The target is alive: carry on.
    Proceed,
    /// Transient (or nothing disclosed): keep the session and keep trying, per the hint.
    KeepTrying {
        /// The frame's retry hint.
        retry: Retry,
    },
    /// Dead / do-not-retry: drop the session and start a fresh handshake at once.
    FreshHandshake,
}

impl StatusFrame {
    /// The two octets on the wire (§3.3).
    pub const fn encode(&self) -> [u8; FRAME_LEN] {
        match self {
            StatusFrame::Silent => [0, 0],
            StatusFrame::Disclosed(d) => [
                (d.disclosure as u8) << 6 | (d.state_class as u8) << 4 | d.reason as u8,
                (d.retry as u8) << 6 | (d.detail_source as u8) << 4 | d.detail_code as u8,
            ],
        }
    }

    /// Parses two octets, refusing the frames §3, §4 and F2 forbid.
    pub const fn decode(octets: [u8; FRAME_LEN]) -> Result<Self, DecodeError> {
        let [o0, o1] = octets;
        let disclosure = match o0 >> 6 {
            0b00 => {
                return if o0 == 0 && o1 == 0 {
                    Ok(StatusFrame::Silent)
                } else {
                    Err(DecodeError::SilentNotZero { octets })
                };
            }
            0b01 => Disclosure::Trusted,
            0b10 => Disclosure::PolicySecurity,
            _ => return Err(DecodeError::ReservedDisclosure { octets }),
        };
        let reason = match Reason::from_bits(o0 & 0x0F) {
            Some(r) => r,
            None => return Err(DecodeError::ReservedReason { code: o0 & 0x0F }),
        };
        let detail_code = match DetailCode::from_bits(o1 & 0x0F) {
            Some(c) => c,
            None => return Err(DecodeError::ReservedDetailCode { code: o1 & 0x0F }),
        };
        Ok(StatusFrame::Disclosed(Disclosed {
            disclosure,
            state_class: StateClass::from_bits(o0 >> 4),
            reason,
            retry: Retry::from_bits(o1 >> 6),
            detail_source: DetailSource::from_bits(o1 >> 4),
            detail_code,
        }))
    }

    /// True for `0x0000`. The transport sends nothing at all in its place (F1).
    pub const fn is_silent(&self) -> bool {
        matches!(self, StatusFrame::Silent)
    }

    /// What a laptop does on receiving this frame inside the authenticated channel (F3, §7).
    pub const fn sender_action(&self) -> SenderAction {
        let d = match self {
            StatusFrame::Silent => {
                return SenderAction::KeepTrying {
                    retry: Retry::NoHint,
                }
            }
            StatusFrame::Disclosed(d) => d,
        };
        match d.state_class {
            StateClass::Alive => SenderAction::Proceed,
            StateClass::Transient => match d.retry {
                Retry::DoNotRetryAuto => SenderAction::FreshHandshake,
                retry => SenderAction::KeepTrying { retry },
            },
            StateClass::Dead | StateClass::Quarantine => SenderAction::FreshHandshake,
        }
    }
}

impl From<StatusFrame> for [u8; FRAME_LEN] {
    fn from(frame: StatusFrame) -> Self {
        frame.encode()
    }
}

impl TryFrom<[u8; FRAME_LEN]> for StatusFrame {
    type Error = DecodeError;

    fn try_from(octets: [u8; FRAME_LEN]) -> Result<Self, DecodeError> {
        StatusFrame::decode(octets)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::SilentNotZero { octets: [a, b] } => write!(
                f,
                "status frame 0x{a:02X}{b:02X}: disclosure 00 (silent) with non-zero bits"
            ),
            DecodeError::ReservedDisclosure { octets: [a, b] } => {
                write!(f, "status frame 0x{a:02X}{b:02X}: reserved disclosure 11")
            }
            DecodeError::ReservedReason { code } => {
                write!(f, "status frame: reserved reason code {code:04b}")
            }
            DecodeError::ReservedDetailCode { code } => {
                write!(f, "status frame: reserved detail code {code:04b}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The frame the mux answers a caller about a target in `state`: the honest frame for a
/// [`Relationship::Related`] caller, `0x0000` for anyone else whatever the state (§4, §5).
pub const fn frame_for(relationship: Relationship, state: TargetState) -> StatusFrame {
    match relationship {
        Relationship::World | Relationship::ProvenUnrelated => StatusFrame::Silent,
        Relationship::Related => StatusFrame::Disclosed(state.honest_status()),
    }
}

/// The frame the gateway answers a caller about a session it knows as `knowledge` (F1). Goes
/// through [`frame_for`]; an unknown session is `0x0000` for everyone.
pub const fn gateway_frame(relationship: Relationship, knowledge: SessionKnowledge) -> StatusFrame {
    match knowledge.target_state() {
        Some(state) => frame_for(relationship, state),
        None => StatusFrame::Silent,
    }
}

impl SessionKnowledge {
    /// The target state a session in this condition resolves to; `None` for an unknown session,
    /// about which nothing is ever disclosed.
    pub const fn target_state(self) -> Option<TargetState> {
        match self {
            SessionKnowledge::Alive => Some(TargetState::Alive),
            SessionKnowledge::Terminated => Some(TargetState::LocalTombstone),
            SessionKnowledge::Expired => Some(TargetState::SessionExpired),
            SessionKnowledge::Superseded => Some(TargetState::SuccessorAvailable),
            SessionKnowledge::KeyRevoked => Some(TargetState::CanonicalTombstone),
            SessionKnowledge::Unknown => None,
        }
    }
}

impl TargetState {
    /// The honest status for this state. Private: the only way out is [`frame_for`], which
    /// checks the relationship first.
    const fn honest_status(self) -> Disclosed {
        use DetailCode as C;
        use DetailSource as S;
        use Reason as R;
        use Retry as T;
        use StateClass as K;
        // One row per target state: its frame in hex, then the fields that make it.
        #[rustfmt::skip]
        let (state_class, reason, retry, detail_source, detail_code) = match self {
            /* 0x4000 */ TargetState::Alive => (K::Alive, R::None, T::NoHint, S::None, C::None),
            /* 0x5152 */ TargetState::HeartbeatDead =>
                (K::Transient, R::HeartbeatDead, T::RetrySoon, S::LocalMux, C::EndpointInactive),
            /* 0x5293 */ TargetState::NotInSession =>
                (K::Transient, R::NotInSession, T::RetryLater, S::LocalMux, C::RuntimeWrapperMissing),
            /* 0x5351 */ TargetState::NotRegistered =>
                (K::Transient, R::NotRegistered, T::RetrySoon, S::LocalMux, C::RouteMissing),
            /* 0x65F6 */ TargetState::CanonicalTombstone =>
                (K::Dead, R::TombstoneConfirmed, T::DoNotRetryAuto, S::SignedCanonicalRef, C::CanonicalTombstone),
            /* 0x66F7 */ TargetState::SuccessorAvailable =>
                (K::Dead, R::SuccessorAvailable, T::DoNotRetryAuto, S::SignedCanonicalRef, C::SuccessorRefAvailable),
            /* 0x65D5 */ TargetState::LocalTombstone =>
                (K::Dead, R::TombstoneConfirmed, T::DoNotRetryAuto, S::LocalMux, C::LocalTombstone),
            /* 0x67D4 */ TargetState::SessionExpired =>
                (K::Dead, R::AssuranceExpired, T::DoNotRetryAuto, S::LocalMux, C::SessionExpired),
        };
        Disclosed {
            disclosure: Disclosure::Trusted,
            state_class,
            reason,
            retry,
            detail_source,
            detail_code,
        }
    }
}

impl StateClass {
    /// The class in the low two bits of `bits`.
    const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => StateClass::Alive,
            0b01 => StateClass::Transient,
            0b10 => StateClass::Dead,
            _ => StateClass::Quarantine,
        }
    }
}

impl Retry {
    /// The retry hint in the low two bits of `bits`.
    const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Retry::NoHint,
            0b01 => Retry::RetrySoon,
            0b10 => Retry::RetryLater,
            _ => Retry::DoNotRetryAuto,
        }
    }
}

impl DetailSource {
    /// The detail source in the low two bits of `bits`.
    const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => DetailSource::None,
            0b01 => DetailSource::LocalMux,
            0b10 => DetailSource::LocalCache,
            _ => DetailSource::SignedCanonicalRef,
        }
    }
}

impl Reason {
    /// The reason for a nibble, `None` for the reserved `1000`–`1111`.
    const fn from_bits(nibble: u8) -> Option<Self> {
        Some(match nibble {
            0b0000 => Reason::None,
            0b0001 => Reason::HeartbeatDead,
            0b0010 => Reason::NotInSession,
            0b0011 => Reason::NotRegistered,
            0b0100 => Reason::ConsentMissing,
            0b0101 => Reason::TombstoneConfirmed,
            0b0110 => Reason::SuccessorAvailable,
            0b0111 => Reason::AssuranceExpired,
            _ => return None,
        })
    }
}

impl DetailCode {
    /// The detail code for a nibble, `None` for the reserved `1000`–`1111`.
    const fn from_bits(nibble: u8) -> Option<Self> {
        Some(match nibble {
            0b0000 => DetailCode::None,
            0b0001 => DetailCode::RouteMissing,
            0b0010 => DetailCode::EndpointInactive,
            0b0011 => DetailCode::RuntimeWrapperMissing,
            0b0100 => DetailCode::SessionExpired,
            0b0101 => DetailCode::LocalTombstone,
            0b0110 => DetailCode::CanonicalTombstone,
            0b0111 => DetailCode::SuccessorRefAvailable,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const ALL_STATES: [TargetState; 8] = [
        TargetState::Alive,
        TargetState::HeartbeatDead,
        TargetState::NotInSession,
        TargetState::NotRegistered,
        TargetState::CanonicalTombstone,
        TargetState::SuccessorAvailable,
        TargetState::LocalTombstone,
        TargetState::SessionExpired,
    ];
    const ALL_KNOWLEDGE: [SessionKnowledge; 6] = [
        SessionKnowledge::Alive,
        SessionKnowledge::Terminated,
        SessionKnowledge::Expired,
        SessionKnowledge::Superseded,
        SessionKnowledge::KeyRevoked,
        SessionKnowledge::Unknown,
    ];
    const NOT_RELATED: [Relationship; 2] = [Relationship::World, Relationship::ProvenUnrelated];
    const DISCLOSURES: [Disclosure; 2] = [Disclosure::Trusted, Disclosure::PolicySecurity];
    const CLASSES: [StateClass; 4] = [
        StateClass::Alive,
        StateClass::Transient,
        StateClass::Dead,
        StateClass::Quarantine,
    ];
    const REASONS: [Reason; 8] = [
        Reason::None,
        Reason::HeartbeatDead,
        Reason::NotInSession,
        Reason::NotRegistered,
        Reason::ConsentMissing,
        Reason::TombstoneConfirmed,
        Reason::SuccessorAvailable,
        Reason::AssuranceExpired,
    ];
    const RETRIES: [Retry; 4] = [
        Retry::NoHint,
        Retry::RetrySoon,
        Retry::RetryLater,
        Retry::DoNotRetryAuto,
    ];
    const SOURCES: [DetailSource; 4] = [
        DetailSource::None,
        DetailSource::LocalMux,
        DetailSource::LocalCache,
        DetailSource::SignedCanonicalRef,
    ];
    const DETAILS: [DetailCode; 8] = [
        DetailCode::None,
        DetailCode::RouteMissing,
        DetailCode::EndpointInactive,
        DetailCode::RuntimeWrapperMissing,
        DetailCode::SessionExpired,
        DetailCode::LocalTombstone,
        DetailCode::CanonicalTombstone,
        DetailCode::SuccessorRefAvailable,
    ];

    fn octets(v: u16) -> [u8; 2] {
        v.to_be_bytes()
    }

    fn trusted(
        state_class: StateClass,
        reason: Reason,
        retry: Retry,
        detail_source: DetailSource,
        detail_code: DetailCode,
    ) -> StatusFrame {
        StatusFrame::Disclosed(Disclosed {
            disclosure: Disclosure::Trusted,
            state_class,
            reason,
            retry,
            detail_source,
            detail_code,
        })
    }

    /// Every frame decode accepts: silence plus every combination of the defined fields.
    fn all_valid_frames() -> Vec<StatusFrame> {
        let mut out = vec![StatusFrame::Silent];
        for disclosure in DISCLOSURES {
            for state_class in CLASSES {
                for reason in REASONS {
                    for retry in RETRIES {
                        for detail_source in SOURCES {
                            for detail_code in DETAILS {
                                out.push(StatusFrame::Disclosed(Disclosed {
                                    disclosure,
                                    state_class,
                                    reason,
                                    retry,
                                    detail_source,
                                    detail_code,
                                }));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Checks one worked vector of §12 both ways: the related caller gets `wire` from
    /// `frame_for`, `wire` decodes to the fields spelled out from §3.1/§3.2, and those fields
    /// encode to `wire`.
    fn check_vector(state: TargetState, wire: u16, fields: StatusFrame) {
        let frame = frame_for(Relationship::Related, state);
        assert_eq!(
            frame.encode(),
            octets(wire),
            "{state:?} encodes to {wire:#06X}"
        );
        assert_eq!(frame, fields, "{state:?} has the vector's fields");
        assert_eq!(StatusFrame::decode(octets(wire)), Ok(fields), "{wire:#06X}");
        assert_eq!(fields.encode(), octets(wire), "{wire:#06X}");
    }

    // §12 "caller = world / unproven, ANY target -> 0x0000"
    #[test]
    fn vector_world_any_target_is_0000() {
        for state in ALL_STATES {
            assert_eq!(frame_for(Relationship::World, state).encode(), [0, 0]);
        }
        assert_eq!(StatusFrame::decode([0, 0]), Ok(StatusFrame::Silent));
        assert_eq!(StatusFrame::Silent.encode(), [0, 0]);
    }

    // §12 "caller = trusted, NO relationship, ANY target -> 0x0000"
    #[test]
    fn vector_trusted_no_relationship_any_target_is_0000() {
        for state in ALL_STATES {
            assert_eq!(
                frame_for(Relationship::ProvenUnrelated, state).encode(),
                [0, 0]
            );
        }
    }

    // §12 "trusted + relationship, alive (explicit ack) -> 0x4000"
    #[test]
    fn vector_alive_explicit_ack_is_4000() {
        let fields = trusted(
            StateClass::Alive,
            Reason::None,
            Retry::NoHint,
            DetailSource::None,
            DetailCode::None,
        );
        check_vector(TargetState::Alive, 0x4000, fields);
    }

    // §12 "trusted + relationship, heartbeat-dead -> 0x5152"
    #[test]
    fn vector_heartbeat_dead_is_5152() {
        let fields = trusted(
            StateClass::Transient,
            Reason::HeartbeatDead,
            Retry::RetrySoon,
            DetailSource::LocalMux,
            DetailCode::EndpointInactive,
        );
        check_vector(TargetState::HeartbeatDead, 0x5152, fields);
    }

    // §12 "trusted + relationship, not-in-session -> 0x5293"
    #[test]
    fn vector_not_in_session_is_5293() {
        let fields = trusted(
            StateClass::Transient,
            Reason::NotInSession,
            Retry::RetryLater,
            DetailSource::LocalMux,
            DetailCode::RuntimeWrapperMissing,
        );
        check_vector(TargetState::NotInSession, 0x5293, fields);
    }

    // §12 "trusted + relationship, not-registered -> 0x5351"
    #[test]
    fn vector_not_registered_is_5351() {
        let fields = trusted(
            StateClass::Transient,
            Reason::NotRegistered,
            Retry::RetrySoon,
            DetailSource::LocalMux,
            DetailCode::RouteMissing,
        );
        check_vector(TargetState::NotRegistered, 0x5351, fields);
    }

    // §12 "trusted + relationship, canonical tombstone -> 0x65F6"; §6 "(0x65 0xF6)"
    #[test]
    fn vector_canonical_tombstone_is_65f6() {
        let fields = trusted(
            StateClass::Dead,
            Reason::TombstoneConfirmed,
            Retry::DoNotRetryAuto,
            DetailSource::SignedCanonicalRef,
            DetailCode::CanonicalTombstone,
        );
        check_vector(TargetState::CanonicalTombstone, 0x65F6, fields);
    }

    // §12 "trusted + relationship, successor available -> 0x66F7"; §6 "(0x66 0xF7)"
    #[test]
    fn vector_successor_available_is_66f7() {
        let fields = trusted(
            StateClass::Dead,
            Reason::SuccessorAvailable,
            Retry::DoNotRetryAuto,
            DetailSource::SignedCanonicalRef,
            DetailCode::SuccessorRefAvailable,
        );
        check_vector(TargetState::SuccessorAvailable, 0x66F7, fields);
    }

    // §12: "The two negatives - world and trusted-without-relationship over a tombstoned target
    // both yielding 0x0000 - are the conformance guarantee."
    #[test]
    fn negative_world_over_tombstoned_target_is_0000() {
        for state in [TargetState::CanonicalTombstone, TargetState::LocalTombstone] {
            assert_eq!(frame_for(Relationship::World, state), StatusFrame::Silent);
            assert_eq!(frame_for(Relationship::World, state).encode(), [0, 0]);
        }
    }

    #[test]
    fn negative_trusted_without_relationship_over_tombstoned_target_is_0000() {
        for state in [TargetState::CanonicalTombstone, TargetState::LocalTombstone] {
            let frame = frame_for(Relationship::ProvenUnrelated, state);
            assert_eq!(frame, StatusFrame::Silent);
            assert_eq!(frame.encode(), [0, 0]);
        }
    }

    // §12: "an implementation that 'honestly' returns the dead nibble to the world fails them";
    // §4: no state class or reason through the lower bits at disclosure 00.
    #[test]
    fn negative_dead_nibble_at_disclosure_00_is_refused() {
        for leaked in [0x25F6u16, 0x2566, 0x2500, 0x0500, 0x00F6, 0x0001, 0x1000] {
            assert_eq!(
                StatusFrame::decode(octets(leaked)),
                Err(DecodeError::SilentNotZero {
                    octets: octets(leaked)
                }),
                "{leaked:#06X}"
            );
        }
    }

    #[test]
    fn frame_for_world_and_unrelated_is_0000_for_every_state() {
        for relationship in NOT_RELATED {
            for state in ALL_STATES {
                let frame = frame_for(relationship, state);
                assert!(frame.is_silent(), "{relationship:?} {state:?}");
                assert_eq!(frame.encode(), [0, 0], "{relationship:?} {state:?}");
            }
        }
    }

    #[test]
    fn gateway_frame_world_and_unrelated_is_0000_for_every_session() {
        for relationship in NOT_RELATED {
            for knowledge in ALL_KNOWLEDGE {
                let frame = gateway_frame(relationship, knowledge);
                assert_eq!(frame.encode(), [0, 0], "{relationship:?} {knowledge:?}");
            }
        }
    }

    #[test]
    fn gateway_frame_unknown_session_is_0000_even_for_related() {
        assert_eq!(
            gateway_frame(Relationship::Related, SessionKnowledge::Unknown),
            StatusFrame::Silent
        );
    }

    #[test]
    fn related_caller_gets_an_honest_trusted_frame_for_every_state() {
        for state in ALL_STATES {
            let frame = frame_for(Relationship::Related, state);
            let StatusFrame::Disclosed(d) = frame else {
                panic!("{state:?} silent for a related caller");
            };
            assert_eq!(d.disclosure, Disclosure::Trusted, "{state:?}");
            assert_eq!(StatusFrame::decode(frame.encode()), Ok(frame), "{state:?}");
        }
        let distinct: BTreeSet<_> = ALL_STATES
            .iter()
            .map(|&s| frame_for(Relationship::Related, s).encode())
            .collect();
        assert_eq!(
            distinct.len(),
            ALL_STATES.len(),
            "every state has its own frame"
        );
    }

    #[test]
    fn gateway_session_mapping() {
        let table: [(SessionKnowledge, u16); 6] = [
            (SessionKnowledge::Alive, 0x4000),
            (SessionKnowledge::Terminated, 0x65D5),
            (SessionKnowledge::Expired, 0x67D4),
            (SessionKnowledge::Superseded, 0x66F7),
            (SessionKnowledge::KeyRevoked, 0x65F6),
            (SessionKnowledge::Unknown, 0x0000),
        ];
        for (knowledge, wire) in table {
            let frame = gateway_frame(Relationship::Related, knowledge);
            assert_eq!(frame.encode(), octets(wire), "{knowledge:?}");
        }
    }

    #[test]
    fn jvpn_composed_frames_spell_out_their_fields() {
        let terminated = trusted(
            StateClass::Dead,
            Reason::TombstoneConfirmed,
            Retry::DoNotRetryAuto,
            DetailSource::LocalMux,
            DetailCode::LocalTombstone,
        );
        assert_eq!(StatusFrame::decode(octets(0x65D5)), Ok(terminated));
        assert_eq!(
            frame_for(Relationship::Related, TargetState::LocalTombstone),
            terminated
        );
        let expired = trusted(
            StateClass::Dead,
            Reason::AssuranceExpired,
            Retry::DoNotRetryAuto,
            DetailSource::LocalMux,
            DetailCode::SessionExpired,
        );
        assert_eq!(StatusFrame::decode(octets(0x67D4)), Ok(expired));
        assert_eq!(
            frame_for(Relationship::Related, TargetState::SessionExpired),
            expired
        );
    }

    // F3: every session the gateway refuses leads the laptop to a fresh handshake at once.
    #[test]
    fn every_refused_session_makes_the_laptop_handshake_afresh() {
        for knowledge in [
            SessionKnowledge::Terminated,
            SessionKnowledge::Expired,
            SessionKnowledge::Superseded,
            SessionKnowledge::KeyRevoked,
        ] {
            let frame = gateway_frame(Relationship::Related, knowledge);
            assert_eq!(
                frame.sender_action(),
                SenderAction::FreshHandshake,
                "{knowledge:?}"
            );
        }
        assert_eq!(
            gateway_frame(Relationship::Related, SessionKnowledge::Alive).sender_action(),
            SenderAction::Proceed
        );
    }

    #[test]
    fn sender_action_on_the_worked_vectors() {
        let table: [(u16, SenderAction); 7] = [
            (
                0x0000,
                SenderAction::KeepTrying {
                    retry: Retry::NoHint,
                },
            ),
            (0x4000, SenderAction::Proceed),
            (
                0x5152,
                SenderAction::KeepTrying {
                    retry: Retry::RetrySoon,
                },
            ),
            (
                0x5293,
                SenderAction::KeepTrying {
                    retry: Retry::RetryLater,
                },
            ),
            (
                0x5351,
                SenderAction::KeepTrying {
                    retry: Retry::RetrySoon,
                },
            ),
            (0x65F6, SenderAction::FreshHandshake),
            (0x66F7, SenderAction::FreshHandshake),
        ];
        for (wire, action) in table {
            let frame = StatusFrame::decode(octets(wire));
            assert_eq!(frame.map(|f| f.sender_action()), Ok(action), "{wire:#06X}");
        }
    }

    #[test]
    fn sender_action_keys_on_class_then_retry() {
        for frame in all_valid_frames() {
            let action = frame.sender_action();
            let StatusFrame::Disclosed(d) = frame else {
                continue;
            };
            let expected = match (d.state_class, d.retry) {
                (StateClass::Alive, _) => SenderAction::Proceed,
                (StateClass::Dead | StateClass::Quarantine, _) => SenderAction::FreshHandshake,
                (StateClass::Transient, Retry::DoNotRetryAuto) => SenderAction::FreshHandshake,
                (StateClass::Transient, retry) => SenderAction::KeepTrying { retry },
            };
            assert_eq!(action, expected, "{:?}", frame.encode());
        }
    }

    #[test]
    fn rejects_disclosure_00_with_any_non_zero_bit() {
        for bit in 0..14 {
            let wire = 1u16 << bit;
            assert_eq!(
                StatusFrame::decode(octets(wire)),
                Err(DecodeError::SilentNotZero {
                    octets: octets(wire)
                }),
                "{wire:#06X}"
            );
        }
        for wire in 0x0001..=0x3FFFu16 {
            assert!(
                matches!(
                    StatusFrame::decode(octets(wire)),
                    Err(DecodeError::SilentNotZero { .. })
                ),
                "{wire:#06X}"
            );
        }
    }

    #[test]
    fn rejects_disclosure_11() {
        for wire in 0xC000..=0xFFFFu16 {
            assert_eq!(
                StatusFrame::decode(octets(wire)),
                Err(DecodeError::ReservedDisclosure {
                    octets: octets(wire)
                }),
                "{wire:#06X}"
            );
        }
    }

    #[test]
    fn rejects_each_reserved_reason_code() {
        for disclosure in [0b01u8, 0b10] {
            for class in 0..4u8 {
                for code in 0b1000..=0b1111u8 {
                    let wire = [disclosure << 6 | class << 4 | code, 0x00];
                    assert_eq!(
                        StatusFrame::decode(wire),
                        Err(DecodeError::ReservedReason { code }),
                        "{wire:02X?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_each_reserved_detail_code() {
        for disclosure in [0b01u8, 0b10] {
            for hint_high in 0..16u8 {
                for code in 0b1000..=0b1111u8 {
                    let wire = [disclosure << 6, hint_high << 4 | code];
                    assert_eq!(
                        StatusFrame::decode(wire),
                        Err(DecodeError::ReservedDetailCode { code }),
                        "{wire:02X?}"
                    );
                }
            }
        }
    }

    // §11 calls 1000-1111 reserved in octet 1 bits 7-4 too, but §3.2 and the vectors use them.
    #[test]
    fn retry_and_source_nibble_has_no_reserved_values() {
        for hint_high in 0b1000..=0b1111u8 {
            let wire = [0x40, hint_high << 4];
            assert!(StatusFrame::decode(wire).is_ok(), "{wire:02X?}");
        }
    }

    #[test]
    fn round_trip_over_all_valid_frames() {
        let frames = all_valid_frames();
        assert_eq!(frames.len(), 1 + 2 * 4 * 8 * 4 * 4 * 8);
        let mut seen = BTreeSet::new();
        for frame in frames {
            let wire = frame.encode();
            assert!(seen.insert(wire), "two frames encode to {wire:02X?}");
            assert_eq!(StatusFrame::decode(wire), Ok(frame), "{wire:02X?}");
            assert_eq!(StatusFrame::try_from(wire), Ok(frame));
            assert_eq!(<[u8; 2]>::from(frame), wire);
        }
    }

    #[test]
    fn exhaustive_decode_over_all_two_octet_values() {
        let mut accepted = 0u32;
        for wire in 0..=u16::MAX {
            let bytes = octets(wire);
            let [o0, o1] = bytes;
            // The rules of §3, §4, §11 and F2, restated from the bits.
            let expected_error = match o0 >> 6 {
                0b00 if wire != 0 => Some(DecodeError::SilentNotZero { octets: bytes }),
                0b00 => None,
                0b11 => Some(DecodeError::ReservedDisclosure { octets: bytes }),
                _ if o0 & 0x0F >= 8 => Some(DecodeError::ReservedReason { code: o0 & 0x0F }),
                _ if o1 & 0x0F >= 8 => Some(DecodeError::ReservedDetailCode { code: o1 & 0x0F }),
                _ => None,
            };
            match StatusFrame::decode(bytes) {
                Ok(frame) => {
                    accepted += 1;
                    assert_eq!(expected_error, None, "{wire:#06X} accepted");
                    assert_eq!(frame.encode(), bytes, "{wire:#06X}");
                }
                Err(e) => {
                    assert_eq!(Some(e), expected_error, "{wire:#06X}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert_eq!(accepted, 8193);
    }
}
