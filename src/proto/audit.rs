//! What the cores hand to the audit trail (E5), and the laptop's outbox of signed records.
//!
//! The cores never sign, hash for the chain or touch a file: the laptop core emits a
//! [`RebindDraft`] when a re-anchor completes, the node signs and appends it off the data path
//! and gives the signed bytes back ([`super::Core::send_audit_record`]), and the
//! laptop sends them to the gateway in a Control `AuditRecord`, resending until an `AuditAck`.
//! The gateway core acknowledges, drops duplicates, and emits a [`ReceivedRecord`] for the node
//! to verify against the peer's identity and witness. Nothing here ever delays a packet.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bearer::BearerClass;
use super::{SessionId, UplinkId};

/// Records waiting to be signed, or waiting for the gateway's acknowledgement, at most.
pub const QUEUE_LIMIT: usize = 64;
/// Received records waiting for the gateway node to verify and witness them, at most.
pub const RECEIVED_LIMIT: usize = 1024;
/// Digests of recent records a gateway session remembers, to drop resent copies.
pub const SEEN_KEPT: usize = 16;
/// An unacknowledged record is resent this often...
pub const RESEND: Duration = Duration::from_secs(1);
/// ...this many times in all.
pub const MAX_SENDS: u32 = 8;

/// One end of a completed re-anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEndDraft {
    pub class: Option<BearerClass>,
    pub via: UplinkId,
    /// Interface name (audit detail only; never in events).
    pub iface: String,
}

/// A completed re-anchor, to be signed by the moving node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebindDraft {
    pub session_id: SessionId,
    pub reason: &'static str,
    pub old: PathEndDraft,
    pub new: PathEndDraft,
    /// Key epoch of the counters below.
    pub epoch: u32,
    /// The last data counter sent on the old path (saturating at 0).
    pub last_seq: u64,
    /// The first data counter sent on the new path.
    pub resume_seq: u64,
    /// Wall-clock time of the switch, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A signed record a session's laptop sent to the gateway (not verified yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRecord {
    pub session_id: SessionId,
    /// Index of the peer in the gateway's configuration: whose key must have signed it.
    pub peer: usize,
    /// Where it came from.
    pub from: SocketAddr,
    /// The record's wire form (canonical bytes ‖ signature).
    pub bytes: Vec<u8>,
}

/// What the gateway acknowledges: the first 8 bytes of SHA-256 over the record's wire form.
pub fn digest(bytes: &[u8]) -> [u8; 8] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].try_into().expect("SHA-256 is 32 bytes")
}

#[derive(Debug)]
struct Outgoing {
    session_id: SessionId,
    bytes: Vec<u8>,
    digest: [u8; 8],
    sends: u32,
    next: Instant,
}

/// Counters of the laptop's audit traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditCounters {
    /// Drafts made (completed re-anchors while the audit is on).
    pub drafted: u64,
    /// Drafts dropped because the signer fell behind by `QUEUE_LIMIT`.
    pub draft_overflow: u64,
    /// Records the gateway acknowledged.
    pub acknowledged: u64,
    /// Records given up: never acknowledged, or their session ended first.
    pub undelivered: u64,
}

/// Signed records on their way to the gateway.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
    pub counters: AuditCounters,
}

impl Outbox {
    /// Queues a record of `session_id`; the caller sends it now (`sends` = 1).
    pub fn push(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant) {
        if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front();
            self.counters.undelivered += 1;
        }
        self.queue.push_back(Outgoing {
            session_id,
            digest: digest(&bytes),
            bytes,
            sends: 1,
            next: now + RESEND,
        });
    }

    /// The gateway acknowledged the record with `digest`.
    pub fn ack(&mut self, digest: [u8; 8]) {
        let before = self.queue.len();
        self.queue.retain(|o| o.digest != digest);
        self.counters.acknowledged += (before - self.queue.len()) as u64;
    }

    /// Records of other sessions can no longer be delivered.
    pub fn keep_session(&mut self, session_id: Option<SessionId>) {
        let before = self.queue.len();
        self.queue.retain(|o| Some(o.session_id) == session_id);
        self.counters.undelivered += (before - self.queue.len()) as u64;
    }

    /// Records due for a resend now (given up after `MAX_SENDS`).
    pub fn due(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let before = self.queue.len();
        self.queue.retain(|o| o.sends < MAX_SENDS || now < o.next);
        self.counters.undelivered += (before - self.queue.len()) as u64;
        for o in self.queue.iter_mut().filter(|o| now >= o.next) {
            o.sends += 1;
            o.next = now + RESEND;
            out.push(o.bytes.clone());
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.iter().map(|o| o.next).min()
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() is a test's epoch, nothing more.
mod tests {
    use super::*;

    #[test]
    fn outbox_resends_until_acknowledged_and_gives_up_after_max_sends() {
        let t0 = Instant::now();
        let sid = SessionId([1; 16]);
        let mut o = Outbox::default();
        o.push(sid, vec![1, 2, 3], t0);
        o.push(sid, vec![4, 5, 6], t0);
        let mut out = Vec::new();
        o.due(t0, &mut out);
        assert!(out.is_empty(), "nothing is due before RESEND");
        o.ack(digest(&[1, 2, 3]));
        assert_eq!(o.counters.acknowledged, 1);
        let mut t = t0;
        let mut sends = 1;
        while o.pending() > 0 {
            t += RESEND;
            out.clear();
            o.due(t, &mut out);
            sends += out.len() as u32;
        }
        assert_eq!(sends, MAX_SENDS);
        assert_eq!(o.counters.undelivered, 1);
    }

    #[test]
    fn records_of_an_ended_session_are_counted_undelivered() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(SessionId([1; 16]), vec![1], t0);
        o.push(SessionId([2; 16]), vec![2], t0);
        o.keep_session(Some(SessionId([2; 16])));
        assert_eq!((o.pending(), o.counters.undelivered), (1, 1));
    }
}
