//! A reattach under way: sent, resent every `reattach_retry`, and ended by the gateway's answer
//! or given up after `recovery_window` (M4). A break-before-make reattach that is given up
//! falls back to the path it left and jumps again.

use std::time::Instant;

use super::{PathAction, PathManager, ReattachStatus, SwitchReason};
use crate::proto::bearer::BearerClass;
use crate::proto::control::RejectReason;
use crate::proto::UplinkId;

#[derive(Debug)]
pub(super) struct Migration {
    pub(super) to: UplinkId,
    pub(super) from: UplinkId,
    pub(super) from_class: Option<BearerClass>,
    pub(super) seq: u32,
    pub(super) started: Instant,
    pub(super) next_retry: Instant,
    pub(super) old_alive: bool,
    pub(super) reason: SwitchReason,
    pub(super) attempt: u32,
}

impl PathManager {
    /// The gateway acknowledged reattach `seq`.
    pub fn on_reattach_ack(
        &mut self,
        seq: u32,
        state_version: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        // Acknowledgements are authenticated; versions only grow.
        self.acked_state_version = self.acked_state_version.max(state_version);
        let Some(m) = self.migration.take_if(|m| seq != 0 && m.seq == seq) else {
            return;
        };
        let from = m.from_class;
        if let Some(u) = self.uplinks.get_mut(&m.to.interface()) {
            u.generation = m.to.generation();
        }
        self.set_active(m.to);
        self.last_recv_active = now;
        self.silent_reported = false;
        out.push(PathAction::Result {
            status: ReattachStatus::Accepted,
            make_before_break: m.old_alive,
            via: m.to,
        });
        if let Some(to) = self.class_of(m.to) {
            out.push(PathAction::Switched {
                from,
                to,
                reason: m.reason,
                from_via: m.from,
                to_via: m.to,
            });
        }
    }

    /// The gateway refused reattach `seq`.
    pub fn on_reattach_reject(
        &mut self,
        seq: u32,
        reason: RejectReason,
        state_version: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        let Some(m) = self.migration.take_if(|m| m.seq == seq) else {
            return;
        };
        let transient =
            reason == RejectReason::StaleStateVersion && state_version > self.acked_state_version;
        if !transient {
            out.push(PathAction::Result {
                status: ReattachStatus::Rejected(reason),
                make_before_break: m.old_alive,
                via: m.to,
            });
        }
        match reason {
            RejectReason::SessionExpired | RejectReason::PolicyDenied => {
                out.push(PathAction::SessionRefused(reason))
            }
            RejectReason::StaleStateVersion if state_version > self.acked_state_version => {
                // The gateway moved the binding without us (a NAT rebinding whose notice was
                // lost): adopt its version and ask again at once, within the same bounds.
                self.acked_state_version = state_version;
                self.resume_migration(m, now, out);
            }
            _ if !m.old_alive => {
                // Still without a working path: try again (fresh timestamp, same bounds).
                self.resume_migration(m, now, out);
            }
            _ => {}
        }
    }

    /// Sends a refused reattach again under a new sequence number, keeping its deadline.
    pub(super) fn resume_migration(
        &mut self,
        mut m: Migration,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        if now >= m.started + self.cfg.recovery_window {
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
            return;
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        m.seq = self.seq;
        m.attempt += 1;
        if let Some(class) = self.class_of(m.to) {
            out.push(PathAction::Attempt {
                to: class,
                attempt: m.attempt,
                make_before_break: m.old_alive,
                reason: m.reason,
            });
        }
        m.next_retry = now + self.cfg.reattach_retry;
        out.push(PathAction::Reattach {
            via: m.to,
            seq: m.seq,
            old_path_alive: m.old_alive,
        });
        self.migration = Some(m);
    }

    pub(super) fn start_migration(
        &mut self,
        to: UplinkId,
        reason: SwitchReason,
        old_alive: bool,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let from = self.active;
        let from_class = self.active_class;
        if !old_alive {
            // Break-before-make: data goes the new way at once.
            self.set_active(to);
            self.last_recv_active = now;
        }
        let attempt = self.migration.as_ref().map_or(1, |m| m.attempt + 1);
        self.migration = Some(Migration {
            to,
            from,
            from_class,
            seq: self.seq,
            started: now,
            next_retry: now + self.cfg.reattach_retry,
            old_alive,
            reason,
            attempt,
        });
        if let Some(class) = self.class_of(to) {
            out.push(PathAction::Attempt {
                to: class,
                attempt,
                make_before_break: old_alive,
                reason,
            });
        }
        out.push(PathAction::Reattach {
            via: to,
            seq: self.seq,
            old_path_alive: old_alive,
        });
    }

    pub(super) fn migration_timers(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        let Some(m) = self.migration.as_mut() else {
            return;
        };
        if now >= m.started + self.cfg.recovery_window {
            let m = self.migration.take().expect("checked above");
            out.push(PathAction::Result {
                status: ReattachStatus::TimedOut,
                make_before_break: m.old_alive,
                via: m.to,
            });
            // A moving-target move that failed says nothing against the bearer.
            if m.reason != SwitchReason::MovingTarget {
                if let Some(u) = self.uplinks.get_mut(&m.to.interface()) {
                    u.failed = true;
                }
            }
            if !m.old_alive {
                self.active = m.from;
                self.active_class = m.from_class;
                self.jump_from_dead(m.reason, now, out);
            }
        } else if now >= m.next_retry {
            m.next_retry = now + self.cfg.reattach_retry;
            out.push(PathAction::Reattach {
                via: m.to,
                seq: m.seq,
                old_path_alive: m.old_alive,
            });
        }
    }
}
