//! Tombstones (F1): an ended session's keys kept for a while, so a laptop that still uses them
//! learns what happened instead of waiting for its timers. The rule: only a packet that proves
//! the session's keys gets an answer (the trusted status frame, at most one a second); an
//! unknown tag, a bad MAC or a wrong key all get exactly the same: nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::session::GwSession;
use super::Outputs;
use crate::proto::control::ControlMessage;
use crate::proto::session::Session;
use crate::proto::state::Reason;
use crate::proto::status_frame::{gateway_frame, Relationship, SessionKnowledge};
use crate::proto::wire::SealedKind;

/// How long a tombstone is kept.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// At most one status frame per tombstone per this interval.
const STATUS_FRAME_INTERVAL: Duration = Duration::from_secs(1);

/// What remains of an ended session: its keys and what the gateway knows of it.
#[derive(Debug)]
pub(super) struct Tombstone {
    session: Session,
    knowledge: SessionKnowledge,
    local_ip: Option<IpAddr>,
    until: Instant,
    last_frame: Option<Instant>,
}

impl Tombstone {
    pub fn new(s: GwSession, knowledge: SessionKnowledge, now: Instant) -> Self {
        Self {
            session: s.session,
            knowledge,
            local_ip: s.local_ip,
            until: now + TOMBSTONE_TTL,
            last_frame: None,
        }
    }

    /// When it is forgotten.
    pub fn until(&self) -> Instant {
        self.until
    }

    pub fn alive(&self, now: Instant) -> bool {
        now < self.until
    }

    /// A sealed packet on path `path` of the ended session: if it proves the keys, the sender
    /// gets the status frame (on that path).
    pub fn answer(
        &mut self,
        kind: SealedKind,
        datagram: &mut [u8],
        (path, remote): (u32, SocketAddr),
        out: &mut Outputs,
        now: Instant,
    ) {
        if !self.alive(now) || self.session.open(kind, datagram, now, false).is_err() {
            return;
        }
        if self
            .last_frame
            .is_some_and(|l| now < l + STATUS_FRAME_INTERVAL)
        {
            return;
        }
        self.last_frame = Some(now);
        let frame = gateway_frame(Relationship::Related, self.knowledge);
        if frame.is_silent() {
            return;
        }
        let msg = ControlMessage::StatusFrame(frame.encode());
        let path_tag = self.session.path_tags().pair(path).1;
        if let Some(payload) = self.session.control_packet(msg, path_tag, now) {
            out.send(self.local_ip, remote, payload);
        }
    }
}

/// What the gateway tells a proven peer about a session that ended for `reason`; `None` keeps
/// no tombstone (this node is going away).
pub(super) fn knowledge_after(reason: Reason) -> Option<SessionKnowledge> {
    match reason {
        Reason::LocalShutdown => None,
        Reason::SessionLifetimeExceeded | Reason::KeyExpired | Reason::RecoveryWindowExpired => {
            Some(SessionKnowledge::Expired)
        }
        Reason::Rehandshake => Some(SessionKnowledge::Superseded),
        Reason::SecurityFailure => Some(SessionKnowledge::KeyRevoked),
        _ => Some(SessionKnowledge::Terminated),
    }
}
