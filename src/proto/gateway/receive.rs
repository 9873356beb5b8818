//! The receive path: open → classify → dispatch. The rule: a datagram counts for a session only
//! after it authenticates under that session's keys (the routing tag finds the session, never
//! the source address); only then may it confirm the session, register paths, move the binding
//! or reach the TUN device. A data packet costs one table lookup.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::migrate;
use super::table::{Found, GwSession};
use super::{Gateway, Outputs};
use crate::proto::audit::{self, ReceivedRecord};
use crate::proto::control::{self, ControlMessage};
use crate::proto::rekey::{Ephemeral, RekeyTrigger};
use crate::proto::state::Reason;
use crate::proto::wire::{self, RoutingTag, SealedKind};
use crate::proto::{CloseReason, DropReason, Event, ProtoConfig, Received, SessionId};

/// Sources tracked for authentication failures at most (oldest forgotten first).
const OFFENDERS_KEPT: usize = 4096;

/// What an authenticated plaintext is, parsed once.
enum Content<'a> {
    /// An inner IP packet (empty: a keepalive).
    Data(&'a [u8]),
    Control(ControlMessage),
    /// The body of a signed audit record.
    Audit(&'a [u8]),
    /// An authenticated control packet that makes no sense.
    Bad,
}

impl<'a> Content<'a> {
    fn of(kind: SealedKind, plain: &'a [u8]) -> Self {
        if kind == SealedKind::Data {
            return Content::Data(plain);
        }
        if let Some(m) = ControlMessage::decode(plain) {
            return Content::Control(m);
        }
        match control::audit_record_body(plain) {
            Some(body) => Content::Audit(body),
            None => Content::Bad,
        }
    }

    fn control(&self) -> Option<ControlMessage> {
        match self {
            Content::Control(m) => Some(*m),
            _ => None,
        }
    }
}

/// A session the dispatch decided to end, once its borrow is given back to the table.
struct Ending(Reason, CloseReason);

impl Gateway {
    pub(super) fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        datagram: &mut [u8],
        (local, remote): (Option<IpAddr>, SocketAddr),
        now: Instant,
    ) -> Received {
        let len = datagram.len();
        let (tag, path, mut s) = match self.table.lookup(receiver) {
            Found::Live { tag, path, session } => (tag, path, session),
            Found::Buried { path, tombstone } => {
                self.out.drops.count(DropReason::UnknownTag);
                tombstone.answer(kind, datagram, (path, remote), &mut self.out, now);
                return Received::Nothing;
            }
            Found::Unknown => {
                self.out.drops.count(DropReason::UnknownTag);
                return Received::Nothing;
            }
        };
        // A duplicate from another address than the binding's is authenticated rather than
        // dropped blind: during a tentative move it is evidence of a race (binding module).
        let allow_duplicate = kind == SealedKind::Control || remote != s.binding.current();
        let opened = match s.session.open(kind, datagram, now, allow_duplicate) {
            Ok(o) => o,
            Err(reason) => {
                self.out.drops.count(reason);
                if reason == DropReason::AuthFailed {
                    let id = s.session.id();
                    let out = &mut self.out.events;
                    self.offenders
                        .record(remote.ip(), Some(id), &self.proto, out, now);
                }
                return Received::Nothing;
            }
        };
        let content = Content::of(kind, &datagram[opened.plaintext.clone()]);
        if opened.duplicate || matches!(content, Content::Bad) {
            let ending = match content {
                Content::Bad if !opened.duplicate => bad_control(s, &mut self.out),
                Content::Bad => None,
                _ => {
                    migrate::on_duplicate(s, &mut self.out, content.control(), remote, now);
                    None
                }
            };
            self.after(tag, ending, now);
            return Received::Nothing;
        }
        if local.is_some() {
            s.local_ip = local;
        }
        let new_path = s.paths.note(remote, path);
        if let Some(epoch) = opened.promoted {
            s.rekey_resp = None;
            self.out.events.push_back(Event::KeyRotated {
                session_id: s.session.id(),
                epoch,
                trigger: RekeyTrigger::PeerInitiated,
            });
        }
        if new_path || !s.confirmed {
            // Rare (a new path, a new session): work on the table, then find the session again.
            let confirm = !s.confirmed;
            if new_path {
                self.tag_collisions += self.table.register_paths(tag);
            }
            if confirm {
                self.table.confirm(tag, &mut self.out, now);
            }
            let Some(again) = self.table.get_mut(tag) else {
                return Received::Nothing;
            };
            s = again;
        }
        s.binding.on_received(remote, len);
        let moves = !content
            .control()
            .is_some_and(|m| m.is_probing() || matches!(m, ControlMessage::Reattach(_)));
        if moves && opened.newest && remote != s.binding.current() {
            self.resent += u64::from(migrate::follow(s, &mut self.out, remote, len, now));
        }
        let at = (remote, len, opened.newest);
        let (received, ending) = match content {
            Content::Control(m) => {
                let max_age = self.proto.paths.reattach_proof_max_age;
                let ending = on_control(s, &mut self.out, m, at, max_age, now);
                (Received::Nothing, ending)
            }
            Content::Audit(body) => {
                let overflowed = on_audit_record(s, &mut self.out, body, remote, now);
                self.audit_overflow += u64::from(overflowed);
                (Received::Nothing, None)
            }
            Content::Data([]) => {
                answer_keepalive(s, &mut self.out, self.proto.keepalive / 2, now);
                (Received::Nothing, None)
            }
            Content::Data(inner) => {
                let allowed =
                    wire::ip_ends(inner).map(|e| self.routes.lookup(e.src) == Some(&s.peer));
                (deliver(allowed, opened.plaintext, &mut self.out), None)
            }
            Content::Bad => (Received::Nothing, None),
        };
        if !s.binding.settled() || ending.is_some() {
            self.after(tag, ending, now);
        }
        received
    }

    /// Table work a dispatch left: watching the session's challenges, or ending it.
    fn after(&mut self, tag: RoutingTag, ending: Option<Ending>, now: Instant) {
        if self.table.get(tag).is_some_and(|s| !s.binding.settled()) {
            self.table.watch_challenges(tag);
        }
        if let Some(Ending(reason, close)) = ending {
            self.table.end(tag, reason, close, &mut self.out, now);
        }
    }
}

/// What an authenticated control message asks for.
fn on_control(
    s: &mut GwSession,
    out: &mut Outputs,
    msg: ControlMessage,
    (remote, len, newest): (SocketAddr, usize, bool),
    max_age: Duration,
    now: Instant,
) -> Option<Ending> {
    match msg {
        ControlMessage::Close(_) => {
            return Some(Ending(Reason::PeerTerminated, CloseReason::PeerClosed))
        }
        ControlMessage::Probe(seq) => {
            s.send_control(out, remote, ControlMessage::ProbeAck(seq), now)
        }
        ControlMessage::PathResponse(token) => {
            migrate::on_path_response(s, out, token, remote, now)
        }
        ControlMessage::Reattach(r) => {
            migrate::on_reattach(s, out, (r, newest, len), remote, max_age, now)
        }
        ControlMessage::RekeyInit { epoch, public } => {
            return on_rekey_init(s, out, epoch, &public, remote, now)
        }
        _ => return bad_control(s, out),
    }
    None
}

/// An inner packet goes to the TUN device only if it is IP (`allowed` is `Some`) from a source
/// the peer may use (`Some(true)`).
fn deliver(allowed: Option<bool>, range: Range<usize>, out: &mut Outputs) -> Received {
    match allowed {
        Some(true) => Received::Tun(range),
        Some(false) => {
            out.drops.count(DropReason::DisallowedSource);
            Received::Nothing
        }
        None => {
            out.drops.count(DropReason::NotIp);
            Received::Nothing
        }
    }
}

/// Answers a keepalive when we have sent nothing for `half` a keepalive interval, so the
/// laptop can tell a live gateway from a dead one.
fn answer_keepalive(s: &mut GwSession, out: &mut Outputs, half: Duration, now: Instant) {
    if now < s.session.last_send + half && s.session.data_sent() > 0 {
        return;
    }
    if !s.binding.may_send(wire::DATA_OVERHEAD) {
        return;
    }
    let dst = s.binding.current();
    let tag = s.paths.tag_for(dst, s.session.path_tags());
    if let Some(payload) = s.session.keepalive_packet(tag, now) {
        out.send(s.local_ip, dst, payload);
    }
}

/// A signed audit record from the session's laptop: acknowledged at once (a resent copy too),
/// queued once for the node to verify against the peer's identity and witness. Returns
/// whether the queue was full (its oldest record was dropped).
fn on_audit_record(
    s: &mut GwSession,
    out: &mut Outputs,
    body: &[u8],
    remote: SocketAddr,
    now: Instant,
) -> bool {
    let digest = audit::digest(body);
    let mut overflowed = false;
    if !s.audit_seen.contains(&digest) {
        if s.audit_seen.len() >= audit::SEEN_KEPT {
            s.audit_seen.pop_front();
        }
        s.audit_seen.push_back(digest);
        overflowed = out.queue_audit(ReceivedRecord {
            session_id: s.session.id(),
            peer: s.peer,
            from: remote,
            bytes: body.to_vec(),
        });
    }
    s.send_control(out, remote, ControlMessage::AuditAck(digest), now);
    overflowed
}

/// Rekey responder: prepares the next epoch and answers with its own ephemeral key; the epoch
/// becomes current when the first packet under it arrives. A retransmitted RekeyInit gets the
/// same answer.
fn on_rekey_init(
    s: &mut GwSession,
    out: &mut Outputs,
    epoch: u32,
    public: &[u8; 32],
    remote: SocketAddr,
    now: Instant,
) -> Option<Ending> {
    let current = s.session.epoch();
    let answered = s.rekey_resp.filter(|(e, _)| *e == epoch);
    let reply = match answered {
        Some((_, ours)) if epoch == current + 1 || epoch == current => Some(ours),
        None if epoch == current + 1 => {
            let ephemeral = Ephemeral::generate(&mut out.rng);
            ephemeral.shared(public).map(|shared| {
                s.session.prepare_epoch(epoch, &shared, now);
                s.rekey_resp = Some((epoch, ephemeral.public));
                ephemeral.public
            })
        }
        _ => None,
    };
    let Some(ours) = reply else {
        return bad_control(s, out);
    };
    let resp = ControlMessage::RekeyResp {
        epoch,
        public: ours,
    };
    s.send_control(out, remote, resp, now);
    None
}

/// An authenticated control packet that makes no sense: past a small bound, evidence that the
/// session's keys are in the wrong hands (S9), and the session ends.
fn bad_control(s: &mut GwSession, out: &mut Outputs) -> Option<Ending> {
    out.drops.count(DropReason::BadControl);
    s.bad_controls += 1;
    if s.bad_controls <= crate::proto::client::BAD_CONTROL_LIMIT {
        return None;
    }
    out.events.push_back(Event::SecurityKeyCompromiseSuspected {
        session_id: s.session.id(),
        evidence: "malformed_authenticated_control",
    });
    Some(Ending(Reason::SecurityFailure, CloseReason::LocalShutdown))
}

/// Authentication failures from one source address (J9).
#[derive(Debug, Clone, Copy)]
struct Offence {
    window_start: Instant,
    failures: u32,
}

/// Failed authentications per source. Events about them are rate limited: the first failure in
/// a window and the one that crosses the policy limit are reported; after that the source is
/// only counted. Nothing here ever blocks authenticated traffic, so a spoofed source cannot be
/// used to shut the real laptop out.
#[derive(Debug, Default)]
pub(super) struct Offenders(BTreeMap<IpAddr, Offence>);

impl Offenders {
    fn record(
        &mut self,
        source: IpAddr,
        session_id: Option<SessionId>,
        proto: &ProtoConfig,
        events: &mut std::collections::VecDeque<Event>,
        now: Instant,
    ) {
        let limit = proto.paths.max_auth_failures;
        let window = proto.paths.auth_failure_window;
        if !self.0.contains_key(&source) && self.0.len() >= OFFENDERS_KEPT {
            if let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, o)| o.window_start)
                .map(|(k, _)| *k)
            {
                self.0.remove(&oldest);
            }
        }
        let o = self.0.entry(source).or_insert(Offence {
            window_start: now,
            failures: 0,
        });
        if now >= o.window_start + window {
            *o = Offence {
                window_start: now,
                failures: 0,
            };
        }
        o.failures += 1;
        let failures = o.failures;
        if failures == 1 || failures == limit + 1 {
            events.push_back(Event::SecurityValidationFailed {
                session_id,
                failures,
                suppressed: failures > limit,
            });
        }
    }

    /// Forgets sources whose window is over (housekeeping).
    pub fn sweep(&mut self, window: Duration, now: Instant) {
        self.0.retain(|_, o| now < o.window_start + window);
    }
}
