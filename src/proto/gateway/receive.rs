//! The receive path: open → classify → dispatch. The rule: a datagram counts for a session only
//! after it authenticates under that session's keys (the routing tag finds the session, never
//! the source address); only then may it confirm the session, register paths, move the binding
//! or reach the TUN device. A data packet costs one table lookup.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::migrate;
use super::session::GwSession;
use super::table::Found;
use super::{Gateway, Outputs};
use crate::proto::audit::{self, ReceivedRecord};
use crate::proto::control::{self, ControlMessage};
use crate::proto::inner;
use crate::proto::iptable::IpTable;
use crate::proto::rekey::{Ephemeral, RekeyTrigger};
use crate::proto::session::Opened;
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

/// An authenticated packet that is not a duplicate: where it came from and what it holds.
struct Arrival<'a> {
    remote: SocketAddr,
    len: usize,
    newest: bool,
    plaintext: Range<usize>,
    content: Content<'a>,
}

/// What handling a packet leaves for the gateway once the session's borrow is given back.
#[derive(Default)]
struct Effects {
    /// Path challenges may be under way: their deadlines must be watched.
    unsettled: bool,
    ending: Option<Ending>,
    resent: bool,
    audit_overflowed: bool,
}

impl Gateway {
    /// A sealed datagram for routing tag `receiver`: found in the table, opened, classified,
    /// dispatched; the table work it leaves is applied last.
    pub(super) fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        datagram: &mut [u8],
        (local, remote): (Option<IpAddr>, SocketAddr),
        now: Instant,
    ) -> Received {
        let len = datagram.len();
        let (tag, path, s) = match self.table.lookup(receiver) {
            Found::Live { tag, path, session } => (tag, path, session),
            other => {
                // A tombstone answers only a packet that proves its keys; all count as unknown.
                self.out.drops.count(DropReason::UnknownTag);
                if let Found::Buried { path, tombstone } = other {
                    tombstone.answer(kind, datagram, (path, remote), &mut self.out, now);
                }
                return Received::Nothing;
            }
        };
        let opened = match open(s, kind, datagram, remote, now) {
            Ok(o) => o,
            Err(reason) => {
                let id = s.session.id();
                return self.unopened(reason, id, remote, now);
            }
        };
        let content = Content::of(kind, &datagram[opened.plaintext.clone()]);
        let (newest, plaintext) = (opened.newest, opened.plaintext.clone());
        let mut fx = Effects::default();
        let received = if opened.duplicate || matches!(content, Content::Bad) {
            fx.ending = refuse(s, &mut self.out, &content, opened.duplicate, remote, now);
            fx.unsettled = !s.binding.settled();
            Received::Nothing
        } else {
            let (new_path, unconfirmed) = arrived(s, &mut self.out, local, (remote, path), &opened);
            let s = if new_path || unconfirmed {
                // Rare (a new path, a new session): work on the table, then find it again.
                let Some((s, collisions)) = self.table.admit(tag, new_path, &mut self.out, now)
                else {
                    return Received::Nothing;
                };
                self.tag_collisions += collisions;
                s
            } else {
                s
            };
            let a = Arrival {
                remote,
                len,
                newest,
                plaintext,
                content,
            };
            dispatch(s, &mut self.out, &self.routes, &self.proto, a, now, &mut fx)
        };
        self.apply(tag, fx, now);
        received
    }

    /// A datagram for a session that did not open: counted; a failed authentication is also
    /// an offence of its source (J9).
    fn unopened(
        &mut self,
        reason: DropReason,
        session_id: SessionId,
        remote: SocketAddr,
        now: Instant,
    ) -> Received {
        self.out.drops.count(reason);
        if reason == DropReason::AuthFailed {
            let events = &mut self.out.events;
            let id = Some(session_id);
            self.offenders
                .record(remote.ip(), id, &self.proto, events, now);
        }
        Received::Nothing
    }

    /// The table work a packet left: watching the session's challenges, ending it.
    fn apply(&mut self, tag: RoutingTag, fx: Effects, now: Instant) {
        self.resent += u64::from(fx.resent);
        self.audit_overflow += u64::from(fx.audit_overflowed);
        if fx.unsettled {
            self.table.watch_challenges(tag);
        }
        if let Some(Ending(reason, close)) = fx.ending {
            self.table.end(tag, reason, close, &mut self.out, now);
        }
    }
}

/// Opens a sealed datagram in place under the session's keys.
fn open(
    s: &mut GwSession,
    kind: SealedKind,
    datagram: &mut [u8],
    remote: SocketAddr,
    now: Instant,
) -> Result<Opened, DropReason> {
    // A duplicate from another address than the binding's is authenticated rather than
    // dropped blind: during a tentative move it is evidence of a race (binding module).
    let allow_duplicate = kind == SealedKind::Control || remote != s.binding.current();
    s.session.open(kind, datagram, now, allow_duplicate)
}

/// An authenticated duplicate (never delivered: see [`migrate::on_duplicate`]) or an
/// authenticated control packet that makes no sense (a copy of one is only dropped).
fn refuse(
    s: &mut GwSession,
    out: &mut Outputs,
    content: &Content,
    duplicate: bool,
    remote: SocketAddr,
    now: Instant,
) -> Option<Ending> {
    match content {
        Content::Bad if !duplicate => bad_control(s, out),
        Content::Bad => None,
        _ => {
            migrate::on_duplicate(s, out, content.control(), remote, now);
            None
        }
    }
}

/// A fresh authenticated packet arrived on path `path` from `remote`: the session answers from
/// the address it was reached at, learns the path, and a first packet under a prepared epoch
/// is reported. Returns (a new highest path, the session is not confirmed yet).
fn arrived(
    s: &mut GwSession,
    out: &mut Outputs,
    local: Option<IpAddr>,
    (remote, path): (SocketAddr, u32),
    opened: &Opened,
) -> (bool, bool) {
    if local.is_some() {
        s.local_ip = local;
    }
    let new_path = s.paths.note(remote, path);
    if let Some(epoch) = opened.promoted {
        s.rekey_resp = None;
        out.events.push_back(Event::KeyRotated {
            session_id: s.session.id(),
            epoch,
            trigger: RekeyTrigger::PeerInitiated,
        });
    }
    (new_path, !s.confirmed)
}

/// Counts the packet for the binding, follows a new source address, then acts on what it
/// holds: a control message, an audit record, a keepalive, or an inner packet to deliver.
fn dispatch(
    s: &mut GwSession,
    out: &mut Outputs,
    routes: &IpTable<usize>,
    proto: &ProtoConfig,
    a: Arrival,
    now: Instant,
    fx: &mut Effects,
) -> Received {
    let remote = a.remote;
    s.binding.on_received(remote, a.len);
    let moves = !a
        .content
        .control()
        .is_some_and(|m| m.is_probing() || matches!(m, ControlMessage::Reattach(_)));
    if moves && a.newest && remote != s.binding.current() {
        fx.resent = migrate::follow(s, out, remote, a.len, now);
    }
    let mut received = Received::Nothing;
    match a.content {
        Content::Control(m) => {
            let max_age = proto.paths.reattach_proof_max_age;
            fx.ending = on_control(s, out, m, (remote, a.len, a.newest), max_age, now);
        }
        Content::Audit(body) => fx.audit_overflowed = on_audit_record(s, out, body, remote, now),
        Content::Data([]) => answer_keepalive(s, out, proto.keepalive / 2, now),
        Content::Data(inner) => {
            let peer = s.peer;
            let allowed = |src| routes.lookup(src) == Some(&peer);
            received = inner::deliver(inner, a.plaintext, allowed, &mut out.drops);
        }
        Content::Bad => {}
    }
    fx.unsettled = !s.binding.settled();
    received
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
