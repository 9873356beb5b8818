//! The laptop's part of the audit trail (E5): a draft for every completed re-anchor (plain
//! data, signed by the driver's audit thread), and the outbox of signed records, resent until
//! the gateway acknowledges them. The rule: nothing here touches the data path, and a full
//! queue drops the oldest draft (counted), never the session.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::Client;
use crate::proto::audit::{self, Outbox, PathEndDraft, RebindDraft};
use crate::proto::bearer::BearerClass;
use crate::proto::control;
use crate::proto::keys::SessionId;
use crate::proto::path::Uplink;
use crate::proto::UplinkId;

/// Drafts waiting to be signed, records waiting to be acknowledged, and what a draft needs.
#[derive(Debug, Default)]
pub(super) struct AuditTrail {
    /// Completed re-anchors waiting to be signed (only with `cfg.audit`).
    pub(super) drafts: VecDeque<RebindDraft>,
    /// Signed records on their way to the gateway.
    pub(super) outbox: Outbox,
    /// (epoch, first data counter) when data began to leave by the active uplink.
    pub(super) switch_point: (u32, u64),
    /// Interface names of the uplinks seen (the old one may be gone by the time of a draft).
    uplink_names: BTreeMap<UplinkId, String>,
}

impl AuditTrail {
    /// Remembers the names of the uplinks in `snapshot` (a bounded map).
    pub(super) fn note_uplinks(&mut self, snapshot: &[Uplink]) {
        if self.uplink_names.len() > 64 {
            self.uplink_names.clear();
        }
        for u in snapshot {
            tracing::debug!(uplink = %u.name, id = u.id.0, class = %u.class, rank = u.rank, "usable uplink");
            self.uplink_names.insert(u.id, u.name.clone());
        }
    }

    fn name(&self, id: UplinkId) -> String {
        self.uplink_names
            .get(&id.interface())
            .cloned()
            .unwrap_or_default()
    }

    fn push(&mut self, draft: RebindDraft) {
        self.outbox.counters.drafted += 1;
        if self.drafts.len() >= audit::QUEUE_LIMIT {
            self.drafts.pop_front();
            self.outbox.counters.draft_overflow += 1;
        }
        self.drafts.push_back(draft);
    }
}

impl Client {
    /// Drafts the `transport.rebind` record of a completed re-anchor.
    pub(super) fn draft_rebind(
        &mut self,
        session_id: SessionId,
        reason: &'static str,
        (from, from_via): (Option<BearerClass>, UplinkId),
        (to, to_via): (BearerClass, UplinkId),
        now: Instant,
    ) {
        let (epoch, resume) = self.audit.switch_point;
        let ts = self.clock.at(now);
        let draft = RebindDraft {
            session_id,
            reason,
            old: PathEndDraft {
                class: from,
                via: from_via,
                iface: self.audit.name(from_via),
            },
            new: PathEndDraft {
                class: Some(to),
                via: to_via,
                iface: self.audit.name(to_via),
            },
            epoch,
            last_seq: resume.saturating_sub(1),
            resume_seq: resume,
            at_ms: ts.secs * 1000 + u64::from(ts.nanos / 1_000_000),
        };
        self.audit.push(draft);
    }

    /// Sends a signed record (wire form) on the active path.
    pub(super) fn send_audit_bytes(&mut self, bytes: &[u8], now: Instant) {
        self.send_control_bytes(&control::audit_record_plaintext(bytes), now);
    }

    /// Resends the records whose acknowledgement is overdue.
    pub(super) fn resend_audit_records(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.audit.outbox.due(now, &mut due);
        for bytes in due {
            self.send_audit_bytes(&bytes, now);
        }
    }
}
