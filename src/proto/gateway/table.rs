//! The session table: live sessions by handshake tag, their path tags, tombstones of ended
//! ones, and each peer's current and pending session. The rule it keeps: a receiving tag names
//! at most one session (live or buried), so [`SessionTable::lookup`] finds a datagram's session
//! and path in one lookup; and a peer's current or pending session is always a live one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use super::session::{Bounds, GwSession};
use super::tombstone::{knowledge_after, Tombstone};
use super::Outputs;
use crate::proto::path_tags::Registry;
use crate::proto::state::{Reason, State};
use crate::proto::wire::RoutingTag;
use crate::proto::{CloseReason, Event, SessionId};

/// Tombstones of ended sessions kept at most (oldest forgotten first).
const TOMBSTONES_KEPT: usize = 4096;

/// What one receiving tag names.
pub(super) enum Found<'a> {
    Live {
        tag: RoutingTag,
        path: u32,
        session: &'a mut GwSession,
    },
    Buried {
        path: u32,
        tombstone: &'a mut Tombstone,
    },
    Unknown,
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerSessions {
    /// The confirmed session that carries traffic.
    current: Option<RoutingTag>,
    /// A session whose handshake finished but whose first packet has not arrived yet.
    pending: Option<RoutingTag>,
}

/// Sessions by handshake tag, their path tags and tombstones (see the module docs).
#[derive(Debug)]
pub(super) struct SessionTable {
    sessions: BTreeMap<RoutingTag, GwSession>,
    tags: Registry,
    tombstones: BTreeMap<RoutingTag, Tombstone>,
    peers: Vec<PeerSessions>,
    /// Sessions that may have path challenges under way.
    challenged: BTreeSet<RoutingTag>,
}

impl SessionTable {
    /// An empty table for `peers` configured peers.
    pub fn new(peers: usize) -> Self {
        Self {
            sessions: BTreeMap::new(),
            tags: Registry::default(),
            tombstones: BTreeMap::new(),
            peers: vec![PeerSessions::default(); peers],
            challenged: BTreeSet::new(),
        }
    }

    /// The session and path a datagram's routing tag names (a path tag, or a handshake tag
    /// for path 0), live or buried.
    pub fn lookup(&mut self, receiver: RoutingTag) -> Found<'_> {
        let (tag, path) = self.tags.resolve(receiver);
        if let Some(session) = self.sessions.get_mut(&tag) {
            return Found::Live { tag, path, session };
        }
        match self.tombstones.get_mut(&tag) {
            Some(tombstone) => Found::Buried { path, tombstone },
            None => Found::Unknown,
        }
    }

    pub fn get_mut(&mut self, tag: RoutingTag) -> Option<&mut GwSession> {
        self.sessions.get_mut(&tag)
    }

    /// The session carrying `peer`'s traffic.
    pub fn current_mut(&mut self, peer: usize) -> Option<&mut GwSession> {
        let tag = self.peers[peer].current?;
        self.sessions.get_mut(&tag)
    }

    /// Confirmed sessions, in routing-tag order.
    pub fn confirmed(&self) -> impl Iterator<Item = (RoutingTag, &GwSession)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.confirmed)
            .map(|(t, s)| (*t, s))
    }

    /// Any session (confirmed or not) by SessionID.
    pub fn by_id(&self, session_id: SessionId) -> Option<&GwSession> {
        self.sessions
            .values()
            .find(|s| s.session.id() == session_id)
    }

    /// A handshake tag no session, tombstone or path holds.
    pub fn fresh_tag(&self, rng: &mut ChaCha20Rng) -> RoutingTag {
        loop {
            let t = RoutingTag(rng.next_u32());
            if !self.holds(t) {
                return t;
            }
        }
    }

    /// Adds a session whose handshake just finished as `peer`'s pending one (forgetting the
    /// one it replaces) and registers its first path tags. Returns the tags not registered
    /// because another session holds them.
    pub fn insert_pending(&mut self, tag: RoutingTag, s: GwSession) -> u64 {
        let peer = s.peer;
        if let Some(old) = self.peers[peer].pending.replace(tag) {
            self.forget(old);
        }
        self.sessions.insert(tag, s);
        self.register_paths(tag)
    }

    /// Registers a session's path tags up to the lookahead past its highest used path. A tag
    /// another session holds is skipped: never two owners for one tag. Returns how many.
    pub fn register_paths(&mut self, tag: RoutingTag) -> u64 {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return 0;
        };
        let indices = s.paths.to_register();
        let (sessions, tombstones) = (&self.sessions, &self.tombstones);
        let held = |t| sessions.contains_key(&t) || tombstones.contains_key(&t);
        let s = &sessions[&tag];
        self.tags
            .register(tag, s.session.path_tags(), indices, held)
    }

    /// The rare table work of a session's packet: registering its paths past a new highest
    /// one (`register`), confirming it if it is not yet. Returns the session again and the
    /// path tags not registered because another session holds them.
    pub fn admit(
        &mut self,
        tag: RoutingTag,
        register: bool,
        out: &mut Outputs,
        now: Instant,
    ) -> Option<(&mut GwSession, u64)> {
        let collisions = if register {
            self.register_paths(tag)
        } else {
            0
        };
        if self.sessions.get(&tag).is_some_and(|s| !s.confirmed) {
            self.confirm(tag, out, now);
        }
        Some((self.sessions.get_mut(&tag)?, collisions))
    }

    /// The first authenticated packet on a new session makes it the peer's current one (the
    /// one it replaces ends).
    pub fn confirm(&mut self, tag: RoutingTag, out: &mut Outputs, now: Instant) {
        let Some(s) = self.sessions.get_mut(&tag) else {
            return;
        };
        s.confirmed = true;
        let (peer, session_id) = (s.peer, s.session.id());
        let slots = &mut self.peers[peer];
        if slots.pending == Some(tag) {
            slots.pending = None;
        }
        let old = slots.current.replace(tag).filter(|o| *o != tag);
        let previous = old
            .and_then(|o| self.sessions.get(&o))
            .map(|s| s.session.id());
        if let Some(old) = old {
            self.end(old, Reason::Rehandshake, CloseReason::Replaced, out, now);
            // `end` cleared the peer's current session if it was the old one; it is the new one.
            self.peers[peer].current = Some(tag);
        }
        out.events.push_back(Event::SessionEstablished {
            session_id,
            peer,
            previous,
        });
        if let Some(s) = self.sessions.get_mut(&tag) {
            s.transition(out, State::Attached, Reason::AttachedToTransport, now);
        }
    }

    /// Ends a session: TERMINATED with `reason` (reported with its ages), then forgotten; a
    /// tombstone keeps its keys unless this node is going away.
    pub fn end(
        &mut self,
        tag: RoutingTag,
        reason: Reason,
        close: CloseReason,
        out: &mut Outputs,
        now: Instant,
    ) {
        if let Some(s) = self.sessions.get_mut(&tag) {
            s.transition(out, State::Terminated, reason, now);
        }
        let Some(s) = self.forget(tag) else { return };
        out.events.push_back(Event::SessionTerminated {
            session_id: s.session.id(),
            reason,
            state_version: s.machine.version(),
            session_age: now.saturating_duration_since(s.session.created),
            transportless_age: None,
        });
        out.events.push_back(Event::SessionClosed {
            session_id: s.session.id(),
            peer: s.peer,
            reason: close,
        });
        if let Some(knowledge) = knowledge_after(reason) {
            self.bury(tag, Tombstone::new(s, knowledge, now));
        }
    }

    /// Housekeeping: ends sessions past their bounds, forgets unconfirmed ones that never
    /// spoke, drops expired tombstones and retires path tags nobody uses.
    pub fn sweep(&mut self, bounds: Bounds, out: &mut Outputs, now: Instant) {
        let expired: Vec<(RoutingTag, Option<Reason>)> = self
            .sessions
            .iter()
            .filter_map(|(tag, s)| Some((*tag, expiry(s, bounds, now)?)))
            .collect();
        for (tag, reason) in expired {
            match reason {
                Some(reason) => self.end(tag, reason, CloseReason::IdleExpired, out, now),
                None => {
                    self.forget(tag);
                }
            }
        }
        self.tombstones.retain(|_, t| t.alive(now));
        let (sessions, tombstones) = (&self.sessions, &self.tombstones);
        self.tags.retire(|owner, idx| match sessions.get(&owner) {
            Some(s) => s.paths.keeps(idx),
            None => tombstones.contains_key(&owner),
        });
    }

    /// Path challenges of session `tag` may be under way: its deadlines count from now on.
    pub fn watch_challenges(&mut self, tag: RoutingTag) {
        self.challenged.insert(tag);
    }

    /// Sessions whose challenges are due at `now` (the settled ones are no longer watched).
    pub fn challenges_due(&mut self, now: Instant) -> Vec<RoutingTag> {
        let sessions = &self.sessions;
        self.challenged
            .retain(|t| sessions.get(t).is_some_and(|s| !s.binding.settled()));
        self.challenged
            .iter()
            .filter(|t| {
                sessions[*t]
                    .binding
                    .next_deadline()
                    .is_some_and(|d| now >= d)
            })
            .copied()
            .collect()
    }

    /// The earliest deadline of the watched challenges (only those: O(1) per packet otherwise).
    pub fn next_challenge(&self) -> Option<Instant> {
        self.challenged
            .iter()
            .filter_map(|t| self.sessions.get(t)?.binding.next_deadline())
            .min()
    }

    fn holds(&self, t: RoutingTag) -> bool {
        self.sessions.contains_key(&t) || self.tombstones.contains_key(&t) || self.tags.contains(t)
    }

    fn forget(&mut self, tag: RoutingTag) -> Option<GwSession> {
        let s = self.sessions.remove(&tag)?;
        let slots = &mut self.peers[s.peer];
        if slots.current == Some(tag) {
            slots.current = None;
        }
        if slots.pending == Some(tag) {
            slots.pending = None;
        }
        Some(s)
    }

    fn bury(&mut self, tag: RoutingTag, t: Tombstone) {
        if self.tombstones.len() >= TOMBSTONES_KEPT {
            if let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.until())
                .map(|(k, _)| *k)
            {
                self.tombstones.remove(&oldest);
            }
        }
        self.tombstones.insert(tag, t);
    }
}

/// Whether a session is past its bounds: `Some(None)` forgets a session that never spoke,
/// `Some(reason)` ends one.
fn expiry(s: &GwSession, b: Bounds, now: Instant) -> Option<Option<Reason>> {
    let last_recv = s.session.last_recv;
    if !s.confirmed {
        return (now >= last_recv + b.pending_limit).then_some(None);
    }
    let reason = if now >= s.session.created + b.max_lifetime {
        Reason::SessionLifetimeExceeded
    } else if now >= s.session.key_installed() + b.key_max_age {
        Reason::KeyExpired
    } else if now >= last_recv + b.transport_lost_ttl {
        Reason::TransportTtlExceeded
    } else {
        return None;
    };
    Some(Some(reason))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() is a test's epoch, nothing more.
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::proto::keys::SessionRoot;
    use crate::proto::session::Session;
    use crate::proto::{ProtoConfig, Seed};

    const T: RoutingTag = RoutingTag(20);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn session(tag: RoutingTag, peer: usize, seed: u8, now: Instant) -> GwSession {
        let root = SessionRoot::new(&[seed; 32], (&[1; 32], &[2; 32]));
        let s = Session::new(root, false, tag, RoutingTag(10), 2048, now);
        GwSession::new(s, peer, addr(1), None, &ProtoConfig::default(), now)
    }

    /// A table with one pending session `T` of peer 0, and its path tags.
    fn table(now: Instant) -> (SessionTable, Outputs) {
        let mut table = SessionTable::new(2);
        assert_eq!(table.insert_pending(T, session(T, 0, 7, now)), 0);
        (table, Outputs::new(Seed::for_tests(1).rng()))
    }

    fn path_tag(table: &mut SessionTable, tag: RoutingTag, index: u32) -> RoutingTag {
        table
            .get_mut(tag)
            .unwrap()
            .session
            .path_tags()
            .pair(index)
            .0
    }

    /// (handshake tag, path) of a live session, "buried" + path, or "unknown".
    fn found(table: &mut SessionTable, receiver: RoutingTag) -> String {
        match table.lookup(receiver) {
            Found::Live { tag, path, .. } => format!("live {} {path}", tag.0),
            Found::Buried { path, .. } => format!("buried {path}"),
            Found::Unknown => "unknown".into(),
        }
    }

    #[test]
    fn a_handshake_tag_finds_its_session_on_path_zero() {
        let (mut table, _) = table(Instant::now());
        assert_eq!(found(&mut table, T), "live 20 0");
        assert_eq!(found(&mut table, RoutingTag(21)), "unknown");
    }

    #[test]
    fn a_path_tag_finds_its_session_and_path_once_registered() {
        let now = Instant::now();
        let (mut table, _) = table(now);
        let tags: Vec<RoutingTag> = (0..=6).map(|i| path_tag(&mut table, T, i)).collect();
        assert_eq!(found(&mut table, tags[3]), "live 20 3");
        assert_eq!(found(&mut table, tags[5]), "unknown", "past the lookahead");
        // The laptop is heard on path 2: registration runs ahead of it.
        assert!(table.get_mut(T).unwrap().paths.note(addr(2), 2));
        assert_eq!(table.register_paths(T), 0);
        assert_eq!(found(&mut table, tags[6]), "live 20 6");
    }

    #[test]
    fn path_tags_far_behind_are_retired_unless_an_address_still_uses_them() {
        let now = Instant::now();
        let (mut table, mut out) = table(now);
        let tags: Vec<RoutingTag> = (0..=24).map(|i| path_tag(&mut table, T, i)).collect();
        let s = table.get_mut(T).unwrap();
        s.paths.note(addr(2), 2);
        s.paths.note(addr(3), 4);
        s.paths.note(addr(4), 20);
        table.register_paths(T);
        table.sweep(Bounds::of(&ProtoConfig::default()), &mut out, now);
        assert_eq!(
            found(&mut table, tags[1]),
            "unknown",
            "unused and far behind"
        );
        assert_eq!(
            found(&mut table, tags[2]),
            "live 20 2",
            "addr 2 still uses it"
        );
        assert_eq!(
            found(&mut table, tags[13]),
            "live 20 13",
            "near the highest"
        );
        assert_eq!(found(&mut table, tags[24]), "live 20 24", "the lookahead");
    }

    #[test]
    fn an_ended_session_is_buried_under_all_its_tags_until_its_tombstone_expires() {
        let now = Instant::now();
        let (mut table, mut out) = table(now);
        let path2 = path_tag(&mut table, T, 2);
        table.confirm(T, &mut out, now);
        table.end(
            T,
            Reason::PeerTerminated,
            CloseReason::PeerClosed,
            &mut out,
            now,
        );
        assert!(table.get_mut(T).is_none() && table.current_mut(0).is_none());
        assert_eq!(found(&mut table, T), "buried 0");
        assert_eq!(found(&mut table, path2), "buried 2");
        let bounds = Bounds::of(&ProtoConfig::default());
        table.sweep(bounds, &mut out, now + Duration::from_secs(599));
        assert_eq!(found(&mut table, path2), "buried 2");
        table.sweep(bounds, &mut out, now + Duration::from_secs(600));
        assert_eq!(found(&mut table, T), "unknown");
        assert_eq!(found(&mut table, path2), "unknown");
    }

    #[test]
    fn a_session_ended_by_shutdown_leaves_no_tombstone() {
        let now = Instant::now();
        let (mut table, mut out) = table(now);
        table.confirm(T, &mut out, now);
        table.end(
            T,
            Reason::LocalShutdown,
            CloseReason::LocalShutdown,
            &mut out,
            now,
        );
        assert_eq!(found(&mut table, T), "unknown");
    }

    #[test]
    fn confirming_a_new_session_ends_the_peers_old_one() {
        let now = Instant::now();
        let (mut table, mut out) = table(now);
        table.confirm(T, &mut out, now);
        let new = RoutingTag(30);
        table.insert_pending(new, session(new, 0, 8, now));
        assert_eq!(
            table.current_mut(0).unwrap().session.path_tags().pair(0).0,
            T
        );
        table.confirm(new, &mut out, now);
        assert_eq!(
            table.current_mut(0).unwrap().session.path_tags().pair(0).0,
            new
        );
        assert_eq!(
            found(&mut table, T),
            "buried 0",
            "the old one is superseded"
        );
    }

    #[test]
    fn a_fresh_tag_is_none_a_session_holds() {
        let now = Instant::now();
        let (mut table, _) = table(now);
        let mut rng = Seed::for_tests(2).rng();
        let mut peek = rng.clone();
        let (first, second) = (RoutingTag(peek.next_u32()), RoutingTag(peek.next_u32()));
        table.insert_pending(first, session(first, 1, 9, now));
        assert_eq!(table.fresh_tag(&mut rng), second);
    }
}
