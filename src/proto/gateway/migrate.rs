//! Path migration on the gateway: reattach (J3), path validation, races, and the resend after a
//! NAT rebinding. The rule is [`crate::proto::binding`]'s: only an authenticated packet can move
//! a session's binding, a new address is challenged before it is trusted, and a refusal never
//! moves anything. These handlers turn the binding's decisions into packets and events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::session::GwSession;
use super::{Gateway, Outputs};
use crate::proto::binding::Validation;
use crate::proto::control::{ControlMessage, Reattach, RejectReason};
use crate::proto::path::ReattachStatus;
use crate::proto::state::{Reason, State};
use crate::proto::Event;

/// A non-probing packet with the newest counter came from `remote`, which is not where the
/// session is bound: challenge it (and the old address), and if the binding moved at once
/// (back to a validated address), resend what went to the old one. Returns whether a datagram
/// was resent.
pub(super) fn follow(
    s: &mut GwSession,
    out: &mut Outputs,
    remote: SocketAddr,
    len: usize,
    now: Instant,
) -> bool {
    // Tokens are drawn only for a packet from another address: not per packet.
    let tokens = [out.token(), out.token()];
    let old = s.binding.current();
    let challenges = s.binding.on_newest(remote, len, tokens, now);
    let moved = s.binding.current() == remote;
    if !challenges.is_empty() {
        tracing::debug!(session_id = %s.session.id(), %remote, "new source address; validating");
    }
    for (addr, token) in challenges {
        s.send_control(out, addr, ControlMessage::PathChallenge(token), now);
    }
    // A NAT that changed its mapping dropped what we sent to the old one.
    moved && resend_recent(s, out, old, now)
}

/// An authenticated duplicate: never delivered. A path response is still honoured (a racer
/// may have delivered its copy first), and during a tentative move its source is challenged
/// as a competitor.
pub(super) fn on_duplicate(
    s: &mut GwSession,
    out: &mut Outputs,
    control: Option<ControlMessage>,
    remote: SocketAddr,
    now: Instant,
) {
    if control.is_some()
        && s.last_replay_event
            .is_none_or(|t| now >= t + Duration::from_secs(1))
    {
        // An authenticated copy of a control packet: a real replay, reported at most once a
        // second per session (copies that fail authentication are only counted).
        s.last_replay_event = Some(now);
        let session_id = s.session.id();
        out.events
            .push_back(Event::SecurityReplayDetected { session_id });
    }
    out.drops.count(crate::proto::DropReason::Replay);
    let reattach_seq = match control {
        Some(ControlMessage::PathResponse(token)) => {
            return on_path_response(s, out, token, remote, now)
        }
        Some(ControlMessage::Reattach(r)) => Some(r.seq),
        Some(_) => return,
        None => None,
    };
    let token = out.token();
    if let Some((addr, token)) = s.binding.on_duplicate(remote, reattach_seq, token, now) {
        tracing::debug!(session_id = %s.session.id(), %remote, "duplicate from another address during a move; challenging it");
        s.send_control(out, addr, ControlMessage::PathChallenge(token), now);
    }
}

/// A path response from `remote`: it may validate (or revert) a move.
pub(super) fn on_path_response(
    s: &mut GwSession,
    out: &mut Outputs,
    token: [u8; 8],
    remote: SocketAddr,
    now: Instant,
) {
    if let Some(v) = s.binding.on_response(remote, token) {
        validated(s, out, v, now);
    }
}

/// REQUIREMENTS J3: an authenticated (proof-of-possession), replay-checked reattach with the
/// newest counter, a fresh timestamp and a current state_version. A refusal never changes the
/// binding.
pub(super) fn on_reattach(
    s: &mut GwSession,
    out: &mut Outputs,
    (r, newest, len): (Reattach, bool, usize),
    remote: SocketAddr,
    max_age: Duration,
    now: Instant,
) {
    let session_id = s.session.id();
    if let Some(reason) = refusal(s, &r, newest, remote, max_age, now) {
        out.events.push_back(Event::ReattachResult {
            session_id,
            status: ReattachStatus::Rejected(reason),
        });
        let state_version = s.machine.version();
        let reply = ControlMessage::ReattachReject {
            seq: r.seq,
            reason,
            state_version,
        };
        s.send_control(out, remote, reply, now);
        return;
    }
    if remote == s.binding.current() && s.binding.validated() && s.binding.settled() {
        // Already there (a retry whose acknowledgement was lost, or a re-anchor on the same
        // bearer after a silence): acknowledge; the path is proven by this round trip too.
        let state_version = s.machine.version();
        let ack = ControlMessage::ReattachAck {
            seq: r.seq,
            state_version,
        };
        s.send_control(out, remote, ack, now);
        return;
    }
    let token = out.token();
    let (addr, token) = s
        .binding
        .on_reattach(remote, len, r.old_path_alive, r.seq, token, now);
    if !r.old_path_alive {
        // M6: the reattach is the evidence that the old path died.
        s.transition(out, State::Volatile, Reason::TransportDead, now);
        s.transition(out, State::Recovering, Reason::DeadTransportRecovery, now);
    }
    tracing::debug!(%session_id, %remote, make_before_break = r.old_path_alive, "reattach; validating the new path");
    s.send_control(out, addr, ControlMessage::PathChallenge(token), now);
}

impl Gateway {
    /// Resends or expires path challenges that are due.
    pub(super) fn challenge_timers(&mut self, now: Instant) {
        for tag in self.table.challenges_due(now) {
            let Some(s) = self.table.get_mut(tag) else {
                continue;
            };
            let (resend, outcomes) = s.binding.on_timeout(now);
            for (addr, token) in resend {
                s.send_control(
                    &mut self.out,
                    addr,
                    ControlMessage::PathChallenge(token),
                    now,
                );
            }
            for v in outcomes {
                validated(s, &mut self.out, v, now);
            }
        }
    }
}

/// Why a reattach is refused, if it is: not the newest, too old, or a state_version the
/// gateway has not reached (or left, unless from the bound address).
fn refusal(
    s: &GwSession,
    r: &Reattach,
    newest: bool,
    remote: SocketAddr,
    max_age: Duration,
    now: Instant,
) -> Option<RejectReason> {
    let gw_elapsed = now.saturating_duration_since(s.session.created).as_millis() as u64;
    let version = s.machine.version();
    if !newest || gw_elapsed.abs_diff(r.elapsed_ms) > max_age.as_millis() as u64 {
        Some(RejectReason::StaleRequest)
    } else if r.state_version > version
        || (r.state_version < version && remote != s.binding.current())
    {
        Some(RejectReason::StaleStateVersion)
    } else {
        None
    }
}

/// Reports the outcome of a validation: state changes of a recovery, the move, and the answer
/// to the reattach that asked for it.
fn validated(s: &mut GwSession, out: &mut Outputs, v: Validation, now: Instant) {
    let session_id = s.session.id();
    let dst = s.binding.current();
    if s.machine.state() == State::Recovering {
        match v {
            Validation::Validated { .. } => {
                s.transition(out, State::Attached, Reason::ReattachSuccess, now)
            }
            Validation::Reverted { .. } | Validation::Abandoned { .. } => {
                s.transition(out, State::Degraded, Reason::ReattachValidationFailed, now)
            }
        }
    }
    let state_version = s.machine.version();
    match v {
        Validation::Validated {
            reattach_seq,
            moved,
        } => {
            if moved {
                out.events.push_back(Event::BindingMoved {
                    session_id,
                    state_version,
                    reattach: reattach_seq.is_some(),
                });
            }
            if reattach_seq.is_some() {
                out.events.push_back(Event::ReattachResult {
                    session_id,
                    status: ReattachStatus::Accepted,
                });
            }
            if moved || reattach_seq.is_some() {
                // Sequence 0 tells the laptop of a move it did not ask for (a NAT rebinding):
                // its next reattach must carry the new state_version.
                let seq = reattach_seq.unwrap_or(0);
                let ack = ControlMessage::ReattachAck { seq, state_version };
                s.send_control(out, dst, ack, now);
            }
        }
        Validation::Reverted { .. } => out.events.push_back(Event::BindingReverted { session_id }),
        Validation::Abandoned { reattach_seq } => {
            if reattach_seq.is_some() {
                out.events.push_back(Event::ReattachResult {
                    session_id,
                    status: ReattachStatus::Rejected(RejectReason::ValidationFailed),
                });
            }
        }
    }
}

/// Sends the last data datagram again to the binding's (new) address if it went to `old`
/// lately, within the new address's anti-amplification budget. Returns whether it did.
fn resend_recent(s: &mut GwSession, out: &mut Outputs, old: SocketAddr, now: Instant) -> bool {
    let dst = s.binding.current();
    // Only a datagram of the path the new address uses (a NAT rebinding keeps the laptop's
    // path): one sent with another path's tag would tie the two paths together (J11).
    let path_tag = s.paths.tag_for(dst, s.session.path_tags()).0.to_le_bytes();
    let Some(payload) = s.recent.to_resend(old, now) else {
        return false;
    };
    if payload[4..8] != path_tag || !s.binding.may_send(payload.len()) {
        return false;
    }
    out.send(s.local_ip, dst, payload);
    true
}
