//! A sealed datagram at the laptop: opened under one of our paths' tags, classified, and
//! dispatched. The rule: nothing is acted on before it is authenticated; data is delivered only
//! from the tunnel's routes; an authenticated control packet that makes no sense is evidence
//! (S9), and past a small bound ends the session.

use std::ops::Range;
use std::time::Instant;

use super::{Client, BAD_CONTROL_LIMIT};
use crate::proto::control::ControlMessage;
use crate::proto::inner;
use crate::proto::rekey::RekeyTrigger;
use crate::proto::state::Reason;
use crate::proto::status_frame::{SenderAction, StatusFrame};
use crate::proto::wire::{RoutingTag, SealedKind};
use crate::proto::{CloseReason, DropReason, Event, Received, UplinkId};

impl Client {
    /// A Data or Control packet under tag `receiver`, in `datagram`.
    pub(super) fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        datagram: &mut [u8],
        via: UplinkId,
        now: Instant,
    ) -> Received {
        let Some((plaintext, counter)) = self.open_sealed(kind, receiver, datagram, now) else {
            return Received::Nothing;
        };
        self.paths.on_authenticated(via, now);
        match kind {
            SealedKind::Data => {
                self.count_data(via, counter, now);
                self.deliver_data(&datagram[plaintext.clone()], plaintext)
            }
            SealedKind::Control => {
                match ControlMessage::decode(&datagram[plaintext]) {
                    Some(m) => self.on_control(m, via, now),
                    None => self.bad_control(now),
                }
                Received::Nothing
            }
        }
    }

    /// Authenticates and decrypts in place: the plaintext's range and the packet counter.
    fn open_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        datagram: &mut [u8],
        now: Instant,
    ) -> Option<(Range<usize>, u64)> {
        let known = self.slots.knows(receiver);
        let Some(s) = self.session.as_mut().filter(|_| known) else {
            self.drops.count(DropReason::UnknownTag);
            return None;
        };
        // Control duplicates are authenticated before they count as a replay: only a real
        // copy of an authenticated control packet is a security event.
        match s.open(kind, datagram, now, kind == SealedKind::Control) {
            Ok(o) if o.duplicate => {
                self.drops.count(DropReason::Replay);
                // A replayer must not be able to flood RekeyDenied events: rekey only when one
                // may start now, else stay quiet (the replay is counted).
                let min_interval = self.cfg.proto.keys.min_rekey_interval;
                if self
                    .rekey
                    .denial(s.key_installed(), min_interval, now)
                    .is_none()
                {
                    self.start_rekey(RekeyTrigger::SecurityEvent, now);
                }
                None
            }
            Ok(o) => Some((o.plaintext, o.counter)),
            Err(reason) => {
                self.drops.count(reason);
                None
            }
        }
    }

    /// Hot path: the path logic measures loss on the active path by the data counters.
    fn count_data(&mut self, via: UplinkId, counter: u64, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        self.paths.on_data_counter(via, counter, now, &mut actions);
        if !actions.is_empty() {
            self.run_actions(&mut actions, now);
        }
        self.actions = actions;
    }

    /// An opened data packet (`inner`, at `range` of the datagram) for the TUN device, if it
    /// is an IP packet from one of the tunnel's routes; empty is a keepalive.
    fn deliver_data(&mut self, inner: &[u8], range: Range<usize>) -> Received {
        if inner.is_empty() {
            return Received::Nothing;
        }
        let routes = &self.routes;
        inner::deliver(
            inner,
            range,
            |src| routes.lookup(src).is_some(),
            &mut self.drops,
        )
    }

    fn on_control(&mut self, msg: ControlMessage, via: UplinkId, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        match msg {
            ControlMessage::Close(_) => self.end_session(CloseReason::PeerClosed, now),
            ControlMessage::PathChallenge(token) => {
                self.send_control(via, ControlMessage::PathResponse(token), now)
            }
            ControlMessage::ReattachAck { seq, state_version } => {
                self.paths
                    .on_reattach_ack(seq, state_version, now, &mut actions)
            }
            ControlMessage::ReattachReject {
                seq,
                reason,
                state_version,
            } => self
                .paths
                .on_reattach_reject(seq, reason, state_version, now, &mut actions),
            ControlMessage::ProbeAck(_) => {}
            ControlMessage::RekeyResp { epoch, public } => self.on_rekey_resp(epoch, &public, now),
            ControlMessage::StatusFrame(octets) => self.on_status_frame(octets, now),
            ControlMessage::AuditAck(digest) => self.audit.outbox.ack(digest),
            ControlMessage::Probe(_)
            | ControlMessage::PathResponse(_)
            | ControlMessage::Reattach(_)
            | ControlMessage::RekeyInit { .. } => self.bad_control(now),
        }
        self.run_actions(&mut actions, now);
        self.actions = actions;
    }

    /// F3: a trusted status frame (it arrived sealed under this session's keys). "Dead / do not
    /// retry" ends the session at once and starts a fresh handshake without waiting for timers.
    fn on_status_frame(&mut self, octets: [u8; 2], now: Instant) {
        let action = match StatusFrame::decode(octets) {
            Ok(frame) => frame.sender_action(),
            Err(_) => return self.bad_control(now),
        };
        if action == SenderAction::FreshHandshake {
            self.end_session_with(CloseReason::PeerClosed, Reason::PeerTerminated, now);
            self.restart_handshake(now);
        }
    }

    /// An authenticated control packet that makes no sense: only a holder of the session's
    /// keys can produce one, so past a small bound it is evidence of compromise (S9).
    pub(super) fn bad_control(&mut self, now: Instant) {
        self.drops.count(DropReason::BadControl);
        self.bad_controls += 1;
        if self.bad_controls > BAD_CONTROL_LIMIT {
            if let Some(s) = self.session.as_ref() {
                self.out.event(Event::SecurityKeyCompromiseSuspected {
                    session_id: s.id(),
                    evidence: "malformed_authenticated_control",
                });
            }
            self.terminate_current(Reason::SecurityFailure, now);
        }
    }
}
