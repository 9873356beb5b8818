//! Liveness of the paths: probes on the active path every `heartbeat_interval` after the last
//! thing heard or sent on it, probes on each standby at its class's `standby_probe` interval,
//! and downlink loss of the active path over `loss_window` (a path past `loss_threshold` has
//! failed).

use std::time::{Duration, Instant};

use super::{PathAction, PathManager, SwitchReason};
use crate::proto::UplinkId;

/// Fewest expected packets in a loss window for its loss fraction to count.
pub(super) const LOSS_MIN_SAMPLE: u64 = 10;

/// Downlink loss of the active path over one window, from the peer's data counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LossMeter {
    pub(super) started: Option<Instant>,
    pub(super) first: Option<u64>,
    pub(super) last: u64,
    pub(super) received: u64,
}

impl LossMeter {
    pub(super) fn start(counter: u64, now: Instant) -> Self {
        Self {
            started: Some(now),
            first: Some(counter),
            last: counter,
            received: 1,
        }
    }
}

impl PathManager {
    /// An authenticated data packet with `counter` arrived through `via`: feeds the downlink
    /// loss measurement of the active path (gaps in the peer's counters within `loss_window`).
    pub fn on_data_counter(
        &mut self,
        via: UplinkId,
        counter: u64,
        now: Instant,
        out: &mut Vec<PathAction>,
    ) {
        if via != self.active || !self.live || !self.managed {
            return;
        }
        if self.migration.is_some() {
            // Not measured while a move is under way; the window restarts after it (a window
            // spanning the move would count everything in between as lost).
            self.loss = LossMeter::default();
            return;
        }
        let m = &mut self.loss;
        match m.first {
            Some(first) if counter >= first => {
                m.received += 1;
                m.last = m.last.max(counter);
            }
            // First packet of a window, or a new key epoch (counters restart).
            _ => *m = LossMeter::start(counter, now),
        }
        if m.started.is_none_or(|t| now < t + self.cfg.loss_window) {
            return;
        }
        let expected = m.last - m.first.unwrap_or(m.last) + 1;
        let loss = 1.0 - m.received as f64 / expected as f64;
        self.loss = LossMeter::default();
        if expected >= LOSS_MIN_SAMPLE && loss > self.cfg.loss_threshold && !self.silent_reported {
            tracing::debug!(
                loss,
                expected,
                "downlink loss over the threshold on the active path"
            );
            self.path_failed(SwitchReason::LossThreshold, now, out);
        }
    }

    pub(super) fn next_active_probe(&self) -> Instant {
        let since = self
            .last_probe_active
            .map_or(self.last_recv_active, |p| p.max(self.last_recv_active));
        since + self.cfg.heartbeat_interval
    }

    pub(super) fn probe_timers(&mut self, now: Instant, out: &mut Vec<PathAction>) {
        if now >= self.next_active_probe() {
            self.last_probe_active = Some(now);
            self.probes_unanswered += 1;
            self.seq = self.seq.wrapping_add(1);
            out.push(PathAction::Probe {
                via: self.active,
                seq: self.seq,
            });
        }
        let active = self.active.interface();
        let mut due = Vec::new();
        for u in self
            .uplinks
            .values_mut()
            .filter(|u| u.info.id != active && now >= u.next_probe)
        {
            let every = self
                .cfg
                .standby_probe
                .get(&u.info.class)
                .copied()
                .unwrap_or(Duration::from_secs(2));
            u.next_probe = now + every;
            due.push(u.transport());
        }
        for via in due {
            self.seq = self.seq.wrapping_add(1);
            out.push(PathAction::Probe { via, seq: self.seq });
        }
    }
}
