//! The laptop's paths: which routing tags each path uses, and what the path logic's decisions
//! ([`PathAction`]) turn into. The rule: every path (local socket) gets its own pair of tags
//! (J11), so captures of two bearers share no tag; data leaves under the tag of the active
//! path; a path that is gone, or a move the gateway could not place, never reuses its pair.

use std::time::Instant;

use super::Client;
use crate::proto::bearer::BearerClass;
use crate::proto::control::{ControlMessage, Reattach, RejectReason};
use crate::proto::keys::SessionId;
use crate::proto::path::{PathAction, PathManager, ReattachStatus, SwitchReason};
use crate::proto::rekey::RekeyTrigger;
use crate::proto::session::Session;
use crate::proto::wire::RoutingTag;
use crate::proto::{CloseReason, Event, UplinkId};

/// A local socket (path) the session has used and its routing tags.
#[derive(Clone, Copy, Debug)]
struct PathSlot {
    via: UplinkId,
    /// The path's index in the session's [`PathTags`](crate::proto::path_tags::PathTags).
    index: u32,
    local: RoutingTag,
    remote: RoutingTag,
}

/// The paths of the current session and their tags.
#[derive(Debug)]
pub(super) struct PathSlots {
    slots: Vec<PathSlot>,
    /// The uplink data last went out by.
    last_active: UplinkId,
}

impl Default for PathSlots {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            last_active: UplinkId::DEFAULT,
        }
    }
}

impl PathSlots {
    /// A new session: path 0 is `via`, the one the handshake went by, with its tags.
    pub(super) fn reset(&mut self, via: UplinkId, local: RoutingTag, remote: RoutingTag) {
        self.last_active = via;
        self.slots = vec![PathSlot {
            via,
            index: 0,
            local,
            remote,
        }];
    }

    /// Whether `tag` is one of our paths' receive tags.
    pub(super) fn knows(&self, tag: RoutingTag) -> bool {
        self.slots.iter().any(|p| p.local == tag)
    }

    /// The tags of path `via`, issuing it a fresh index on first use.
    fn slot(&mut self, via: UplinkId, session: &mut Session) -> PathSlot {
        if let Some(p) = self.slots.iter().find(|p| p.via == via) {
            return *p;
        }
        let (index, (local, remote)) = session.path_tags_mut().issue();
        let slot = PathSlot {
            via,
            index,
            local,
            remote,
        };
        self.slots.push(slot);
        slot
    }
}

/// Data leaves under `slot`'s tag from the next packet on.
fn send_on_slot(session: &mut Session, slot: PathSlot) {
    session.path_tags_mut().choose(slot.index);
}

impl Client {
    /// Lets the path logic decide (`decide` writes its actions) and carries the actions out.
    pub(super) fn drive_paths(
        &mut self,
        now: Instant,
        decide: impl FnOnce(&mut PathManager, &mut Vec<PathAction>),
    ) {
        let mut actions = std::mem::take(&mut self.actions);
        decide(&mut self.paths, &mut actions);
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// Turns the path logic's decisions into packets and events.
    pub(super) fn run_actions(&mut self, actions: &mut Vec<PathAction>, now: Instant) {
        let session_id = self.session.as_ref().map(|s| s.id());
        self.follow_active();
        for a in actions.drain(..) {
            let Some(session_id) = session_id else {
                if matches!(a, PathAction::NoUplink { .. }) {
                    self.out.event(Event::NoUplink { session_id: None });
                }
                continue;
            };
            if self.run_action(session_id, a, now) {
                // The session ended: the remaining decisions were about it.
                return;
            }
        }
    }

    /// When the active uplink changed, data leaves by it from the next packet on: the media
    /// window (audit) starts there, under that path's tag.
    fn follow_active(&mut self) {
        let active = self.paths.active();
        if active == self.slots.last_active {
            return;
        }
        self.slots.last_active = active;
        if let Some(s) = self.session.as_mut() {
            let slot = self.slots.slot(active, s);
            self.audit.switch_point = (s.epoch(), s.data_sent());
            send_on_slot(s, slot);
        }
    }

    /// Carries out one decision and the state change it causes; true if the session ended.
    fn run_action(&mut self, session_id: SessionId, a: PathAction, now: Instant) -> bool {
        let mut end = None;
        if let Some(life) = self.life.as_mut() {
            end = life.on_path_action(&a, now, &mut self.out.state_events);
        }
        // Report what was decided first, then the state change it caused.
        let state_events: Vec<Event> = self.out.state_events.drain(..).collect();
        let switched = matches!(a, PathAction::Switched { .. });
        self.report_action(session_id, a, now);
        self.out.events.extend(state_events);
        if switched && self.cfg.proto.keys.on_transport_change {
            self.start_rekey(RekeyTrigger::TransportChange, now);
        }
        if let Some(reason) = end {
            self.terminate_current(reason, now);
            return true;
        }
        false
    }

    fn report_action(&mut self, session_id: SessionId, a: PathAction, now: Instant) {
        match a {
            PathAction::Probe { via, seq } => {
                self.send_control(via, ControlMessage::Probe(seq), now)
            }
            PathAction::Reattach {
                via,
                seq,
                old_path_alive,
            } => self.send_reattach(via, seq, old_path_alive, now),
            PathAction::Attempt {
                to,
                attempt,
                make_before_break,
                ..
            } => self.out.event(Event::ReattachAttempt {
                session_id,
                to,
                attempt,
                make_before_break,
            }),
            PathAction::Switched {
                from,
                to,
                reason,
                from_via,
                to_via,
            } => self.on_switched(session_id, reason, (from, from_via), (to, to_via), now),
            PathAction::Denied { reason, .. } => self
                .out
                .event(Event::TransportSwitchDenied { session_id, reason }),
            PathAction::Result { status, via, .. } => {
                self.on_reattach_result(session_id, status, via)
            }
            PathAction::NoUplink { .. } => self.out.event(Event::NoUplink {
                session_id: Some(session_id),
            }),
            PathAction::SessionRefused(_) => self.end_session(CloseReason::PeerClosed, now),
        }
    }

    fn send_reattach(&mut self, via: UplinkId, seq: u32, old_path_alive: bool, now: Instant) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let r = Reattach {
            seq,
            old_path_alive,
            state_version: self.paths.acked_state_version,
            elapsed_ms: now.saturating_duration_since(s.created).as_millis() as u64,
            last_data_counter: s.data_sent().saturating_sub(1),
        };
        self.send_control(via, ControlMessage::Reattach(r), now);
    }

    /// A re-anchor completed: reported, drafted for the audit trail, old tags retired.
    fn on_switched(
        &mut self,
        session_id: SessionId,
        reason: SwitchReason,
        from: (Option<BearerClass>, UplinkId),
        to: (BearerClass, UplinkId),
        now: Instant,
    ) {
        self.out.event(Event::TransportSwitch {
            session_id,
            from: from.0,
            to: to.0,
            reason,
        });
        if self.cfg.audit {
            self.draft_rebind(session_id, reason.name(), from, to, now);
        }
        self.close_finished_move(from.1, to.1);
        self.retire_paths(false);
    }

    fn on_reattach_result(&mut self, session_id: SessionId, status: ReattachStatus, via: UplinkId) {
        self.close_failed_move(status, via);
        if matches!(
            status,
            ReattachStatus::TimedOut | ReattachStatus::Rejected(RejectReason::ValidationFailed)
        ) {
            self.retire_paths(true);
        }
        self.out.event(Event::ReattachResult { session_id, status })
    }

    /// Forgets the tags of paths that are gone (a returning bearer gets a fresh pair); with
    /// `all_but_active`, of every path but the active one (after a failed move, so a retry
    /// never reuses a pair the gateway could not place).
    pub(super) fn retire_paths(&mut self, all_but_active: bool) {
        let active = self.paths.active();
        let present: Vec<UplinkId> = self.paths.transports().collect();
        self.slots.slots.retain(|p| {
            p.via == active
                || (!all_but_active && (p.via == UplinkId::DEFAULT || present.contains(&p.via)))
        });
    }

    pub(super) fn send_keepalive(&mut self, now: Instant) {
        let via = self.paths.active();
        self.send_sealed(via, |s, tag| s.keepalive_packet(tag, now));
    }

    pub(super) fn send_control(&mut self, via: UplinkId, msg: ControlMessage, now: Instant) {
        self.send_sealed(via, |s, tag| s.control_packet(msg, tag, now));
    }

    /// An encoded control message on the active path.
    pub(super) fn send_control_bytes(&mut self, plain: &[u8], now: Instant) {
        let via = self.paths.active();
        self.send_sealed(via, |s, tag| s.control_packet_bytes(plain, tag, now));
    }

    /// Seals a packet for path `via` (with that path's tag) and queues it.
    fn send_sealed(
        &mut self,
        via: UplinkId,
        seal: impl FnOnce(&mut Session, RoutingTag) -> Option<Vec<u8>>,
    ) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let slot = self.slots.slot(via, s);
        let Some(payload) = seal(s, slot.remote) else {
            return;
        };
        self.out.transmit(via, self.cfg.endpoint, payload);
    }
}
