//! The uplinks the system reports, and which one carries the session.
//!
//! Rules: the first snapshot is applied at once; a snapshot after an applied one waits until
//! `debounce` has passed since it (changes in between are coalesced), except that losing the
//! active uplink is applied at once (J1). The best uplink is the usable one (not failed) of
//! lowest rank.

use std::time::Instant;

use super::probing::LossMeter;
use super::{PathAction, PathManager, ReattachStatus, SwitchReason, Uplink, UplinkState};
use crate::proto::UplinkId;

impl PathManager {
    /// A new snapshot of usable uplinks from the system.
    pub fn set_uplinks(
        &mut self,
        mut snapshot: Vec<Uplink>,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        snapshot.sort();
        self.latest = snapshot;
        let active_gone =
            self.managed && !self.latest.iter().any(|u| u.id == self.active.interface());
        if !self.managed || active_gone || self.quiet_until.is_none_or(|q| now >= q) {
            self.reconcile(now, out);
        } else {
            self.dirty = true;
        }
    }

    /// An authenticated packet arrived through `via`.
    pub fn on_authenticated(&mut self, via: UplinkId, now: Instant) {
        if via == self.active {
            self.last_recv_active = now;
            self.silent_reported = false;
            self.probes_unanswered = 0;
        }
        if let Some(u) = self.uplinks.get_mut(&via.interface()) {
            u.last_ack = Some(now);
            u.failed = false;
        }
    }

    /// Sending through `via` failed at the socket: the uplink is unusable.
    pub fn on_send_error(&mut self, via: UplinkId, now: Instant, out: &mut Vec<PathAction>) {
        match self.uplinks.get_mut(&via.interface()) {
            Some(u) if u.transport() == via => u.failed = true,
            // A socket of a move that has not happened yet, or of one that is over: the
            // uplink itself is fine (the move times out and the next one tries again).
            Some(_) => return,
            None => {}
        }
        if self.managed && via == self.active && self.live && self.migration.is_none() {
            self.jump_from_dead(SwitchReason::TransportDead, now, out);
        }
    }

    /// Applies the latest snapshot.
    pub(super) fn reconcile(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        self.dirty = false;
        self.quiet_until = Some(now + self.cfg.debounce);
        let first = !self.managed;
        self.managed = true;
        let latest = std::mem::take(&mut self.latest);
        self.uplinks
            .retain(|id, _| latest.iter().any(|u| u.id == *id));
        for u in &latest {
            match self.uplinks.get_mut(&u.id) {
                Some(s) => s.info = u.clone(),
                None => {
                    self.uplinks.insert(
                        u.id,
                        UplinkState {
                            info: u.clone(),
                            present_since: now,
                            next_probe: now,
                            last_ack: None,
                            failed: false,
                            generation: 0,
                        },
                    );
                }
            }
        }
        self.latest = latest;
        if self
            .migration
            .as_ref()
            .is_some_and(|m| !self.uplinks.contains_key(&m.to.interface()))
        {
            let m = self.migration.take().expect("checked above");
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
        }
        if first || !self.live {
            // Before a session exists there is nothing to reattach: just pick the best.
            let best = self.best(None).unwrap_or(UplinkId::DEFAULT);
            self.set_active(best);
            return;
        }
        self.decide(now, out);
    }

    pub(super) fn set_active(&mut self, id: UplinkId) {
        self.active = id;
        self.active_class = self.class_of(id);
        self.probes_unanswered = 0;
        self.loss = LossMeter::default();
    }

    /// The socket of the best usable uplink other than `except`'s: not failed first, then by
    /// rank.
    pub(super) fn best(&self, except: Option<UplinkId>) -> Option<UplinkId> {
        let except = except.map(UplinkId::interface);
        self.uplinks
            .values()
            .filter(|u| Some(u.info.id) != except)
            .min_by_key(|u| (u.failed, u.info.rank, u.info.id))
            .map(UplinkState::transport)
    }
}
