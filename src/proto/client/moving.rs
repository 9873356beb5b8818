//! The moving target (J10): on a cadence of `interval ± jitter` the laptop re-anchors the
//! session, make-before-break, through a new socket of the active uplink (a new source
//! port). The rule: every socket a move opens is closed again, the old one when the move
//! is done, the new one when the move did not happen.

use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::Client;
use crate::proto::path::ReattachStatus;
use crate::proto::UplinkId;

impl Client {
    /// A make-before-break move to a new socket of the active uplink, then the next one
    /// scheduled.
    pub(super) fn move_transport(&mut self, now: Instant) {
        self.next_move = self.move_deadline(now);
        let mut actions = std::mem::take(&mut self.actions);
        if let Some(to) = self.paths.move_transport(now, &mut actions) {
            // Before the actions: the move's reattach goes out by the socket it opens. A move
            // starts only from an uplink of the snapshot, so its device is known.
            let device = self.paths.uplinks().find(|u| u.id == to.interface());
            if let Some(device) = device.map(|u| u.name.clone()) {
                self.sockets.open(to, &device);
            }
        }
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// When the next move is due (`None`: off or no session).
    pub(super) fn move_deadline(&mut self, now: Instant) -> Option<Instant> {
        let (interval, jitter) = self.cfg.proto.paths.moving_target?;
        self.session.as_ref()?;
        let spread = jitter.as_millis() as u64 * 2 + 1;
        let offset = self.rng.next_u64() % spread;
        Some(now + interval - jitter + Duration::from_millis(offset))
    }

    /// A re-anchor from `from` to `to` completed: if it was a move (same interface, another
    /// socket), the old port is closed for good.
    pub(super) fn close_finished_move(&mut self, from: UplinkId, to: UplinkId) {
        if from != to && from.interface() == to.interface() {
            self.sockets.close(from);
        }
    }

    /// A reattach through `via` ended with `status`: a move to a new socket that did not
    /// happen closes that socket.
    pub(super) fn close_failed_move(&mut self, status: ReattachStatus, via: UplinkId) {
        if status != ReattachStatus::Accepted
            && via.generation() != 0
            && !self.paths.transports().any(|t| t == via)
            && via != self.paths.active()
        {
            self.sockets.close(via);
        }
    }
}
