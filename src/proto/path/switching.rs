//! Whether and where the session jumps.
//!
//! Rules: a dead or silent active path is replaced at once by the best usable standby (or
//! re-anchored on the same bearer when there is none) (J5, J6); a preferred bearer is taken
//! make-before-break once it has been present for `switch_cooldown` (J7); every attempt is
//! subject to `switch_cooldown` after the previous one and `max_switches_per_min` in any 60 s,
//! and a denied attempt is reported and retried when allowed (J8).

use std::time::{Duration, Instant};

use super::{DenyReason, PathAction, PathManager, SwitchReason};
use crate::proto::UplinkId;

impl PathManager {
    /// Moving target (J10): moves the session to a new socket (a new source port) of the
    /// active uplink, make-before-break, within the switch bounds. Returns the new socket, or
    /// `None` when no move can start now (no session, a move under way, a failed path).
    pub fn move_transport(&mut self, now: Instant, out: &mut Vec<PathAction>) -> Option<UplinkId> {
        if !self.live || !self.managed || self.migration.is_some() {
            return None;
        }
        let u = self.uplinks.get(&self.active.interface())?;
        if u.failed || u.transport() != self.active {
            return None;
        }
        let to = self.active.next_generation();
        if !self.allowed(now, None, out) {
            return None;
        }
        self.start_migration(to, SwitchReason::MovingTarget, true, now, out);
        Some(to)
    }

    /// Jumps from a dead active uplink, or towards a preferred one.
    pub(super) fn decide(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if !self.live || !self.managed || self.migration.is_some() {
            return;
        }
        match self.uplinks.get(&self.active.interface()) {
            None => self.jump_from_dead(SwitchReason::TransportDead, now, out),
            Some(u) if u.failed => self.jump_from_dead(SwitchReason::HeartbeatTimeout, now, out),
            Some(_) => self.evaluate(now, out),
        }
    }

    /// Make-before-break towards a more preferred uplink, if there is one.
    pub(super) fn evaluate(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if !self.live || self.migration.is_some() {
            return;
        }
        let Some(current) = self.uplinks.get(&self.active.interface()) else {
            return;
        };
        let current_rank = current.info.rank;
        let Some(best) = self
            .best(Some(self.active))
            .filter(|b| self.uplinks[&b.interface()].info.rank < current_rank)
        else {
            return;
        };
        let stable_at = self.uplinks[&best.interface()].present_since + self.cfg.switch_cooldown;
        if now < stable_at {
            self.retry_switch_at =
                Some(self.retry_switch_at.map_or(stable_at, |t| t.min(stable_at)));
            return;
        }
        if self.allowed(now, None, out) {
            self.start_migration(best, SwitchReason::PreferredAvailable, true, now, out);
        }
    }

    /// The active path is dead: move at once to the best other uplink.
    pub(super) fn jump_from_dead(
        &mut self,
        reason: SwitchReason,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        let target = match self.best(Some(self.active)) {
            Some(t) => t,
            // Silent but still present and nothing else: re-anchor on the same bearer (its
            // NAT binding may have changed under us).
            None if matches!(
                reason,
                SwitchReason::HeartbeatTimeout
                    | SwitchReason::ConsecutiveDrops
                    | SwitchReason::LossThreshold
            ) && self.uplinks.contains_key(&self.active.interface()) =>
            {
                self.active
            }
            None => {
                out.push(PathAction::NoUplink { reason });
                return;
            }
        };
        if self.allowed(now, Some(reason), out) {
            self.start_migration(target, reason, false, now, out);
        }
    }

    /// The active path is unusable for `reason`: mark it and jump (or re-anchor).
    pub(super) fn path_failed(
        &mut self,
        reason: SwitchReason,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        self.silent_reported = true;
        if let Some(u) = self.uplinks.get_mut(&self.active.interface()) {
            u.failed = true;
        }
        self.jump_from_dead(reason, now, out);
    }

    /// Applies the switch bounds; reports a denial and schedules the retry.
    pub(super) fn allowed(
        &mut self,
        now: Instant,
        dead: Option<SwitchReason>,
        out: &mut Vec<PathAction>,
    ) -> bool {
        let minute = Duration::from_secs(60);
        while self.attempts.front().is_some_and(|t| now >= *t + minute) {
            self.attempts.pop_front();
        }
        let denied = if let Some(last) = self
            .attempts
            .back()
            .filter(|t| now < **t + self.cfg.switch_cooldown)
        {
            Some((DenyReason::CooldownActive, *last + self.cfg.switch_cooldown))
        } else if self.attempts.len() >= self.cfg.max_switches_per_min as usize {
            Some((DenyReason::SwitchRateLimited, self.attempts[0] + minute))
        } else {
            None
        };
        match denied {
            Some((reason, retry)) => {
                out.push(PathAction::Denied { reason, dead });
                self.retry_switch_at = Some(retry);
                false
            }
            None => {
                self.attempts.push_back(now);
                true
            }
        }
    }
}
