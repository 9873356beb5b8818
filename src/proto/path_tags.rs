//! Per-path routing tags (J11), for both ends. The rule: every path of a session (a bearer, or
//! a new source port) has its own pair of tags, derived from the session's key and the path's
//! index (index 0 is the handshake's pair), so captures of two paths share no tag; a receiving
//! tag names at most one session; and data leaves under the tag of one chosen path.
//!
//! - [`PathTags`] (in every [`Session`](super::session::Session)): derive a path's pair, issue
//!   the next index, choose the path data is sent on.
//! - [`Registry`] (gateway): which session and path a receiving tag names; tags are registered
//!   ahead of use and retired far behind it, and a tag another session holds is never taken.
//! - [`HeardPaths`] (gateway, one per session): the path the laptop used from each address,
//!   which decides the tag of what is sent back there.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use super::keys::PathTagKey;
use super::wire::RoutingTag;

/// Path indices registered ahead of the highest one a session has used: a laptop can open this
/// many new paths before the gateway has seen any of them.
pub const LOOKAHEAD: u32 = 4;
/// Used path indices kept registered behind the highest (older ones only while an address still
/// uses them).
pub const KEPT_BEHIND: u32 = 8;
/// Addresses whose path index a session remembers.
pub const ADDRS_KEPT: usize = 8;

/// One session's path tags: the (local, remote) pair of each path, and the path data goes on.
#[derive(Debug)]
pub struct PathTags {
    key: PathTagKey,
    initiator: bool,
    /// The handshake's (local, remote) tags: path 0.
    handshake: (RoutingTag, RoutingTag),
    /// The index `issue` hands out next.
    next: u32,
    /// The tag sent data carries (the chosen path's receiving tag at the peer).
    send: RoutingTag,
}

impl PathTags {
    /// A session's tags; data goes on path 0 (the handshake's) until another is chosen.
    pub fn new(key: PathTagKey, initiator: bool, handshake: (RoutingTag, RoutingTag)) -> Self {
        Self {
            key,
            initiator,
            handshake,
            next: 1,
            send: handshake.1,
        }
    }

    /// The (local, remote) routing tags of path `index`.
    pub fn pair(&self, index: u32) -> (RoutingTag, RoutingTag) {
        if index == 0 {
            return self.handshake;
        }
        let to_gw = self.key.tag(true, index);
        let to_laptop = self.key.tag(false, index);
        if self.initiator {
            (to_laptop, to_gw)
        } else {
            (to_gw, to_laptop)
        }
    }

    /// A path index never issued before in this session, and its pair (the laptop gives one to
    /// each new path it opens).
    pub fn issue(&mut self) -> (u32, (RoutingTag, RoutingTag)) {
        let index = self.next;
        self.next += 1;
        (index, self.pair(index))
    }

    /// Data goes on path `index` from now on.
    pub fn choose(&mut self, index: u32) {
        self.send = self.pair(index).1;
    }

    /// The tag sent data carries.
    pub fn send_tag(&self) -> RoutingTag {
        self.send
    }
}

/// The gateway's receiving path tags of all sessions: tag → (the session's handshake tag, path
/// index). Handshake tags are not in it; a tag that is not resolves to itself, path 0. The
/// gateway draws handshake tags that no session, tombstone or entry here holds, and registers no
/// tag another session holds, so one lookup decides.
#[derive(Debug, Default)]
pub struct Registry {
    owners: BTreeMap<RoutingTag, (RoutingTag, u32)>,
}

impl Registry {
    /// The session (by handshake tag) and path that `tag` names.
    pub fn resolve(&self, tag: RoutingTag) -> (RoutingTag, u32) {
        self.owners.get(&tag).copied().unwrap_or((tag, 0))
    }

    /// Whether `tag` is a registered path tag.
    pub fn contains(&self, tag: RoutingTag) -> bool {
        self.owners.contains_key(&tag)
    }

    /// Registers the receiving tags of `owner`'s paths `indices`. A tag that is registered
    /// already or that `held` says is another session's is skipped: that path is unusable for
    /// this session (the laptop moves to a fresh index when the move fails). Returns how many
    /// were skipped.
    pub fn register(
        &mut self,
        owner: RoutingTag,
        tags: &PathTags,
        indices: RangeInclusive<u32>,
        held: impl Fn(RoutingTag) -> bool,
    ) -> u64 {
        let mut collisions = 0;
        for i in indices {
            let t = tags.pair(i).0;
            if held(t) || self.contains(t) {
                collisions += 1;
                continue;
            }
            self.owners.insert(t, (owner, i));
        }
        collisions
    }

    /// Unregisters every tag whose (owner, index) `keep` refuses.
    pub fn retire(&mut self, mut keep: impl FnMut(RoutingTag, u32) -> bool) {
        self.owners.retain(|_, (owner, idx)| keep(*owner, *idx));
    }
}

/// The paths the gateway has heard one session's laptop on: which index each recent address
/// used, the highest index used and the highest registered. Packets to an address go on the
/// path the laptop last used from there (an unknown address gets the latest path's).
#[derive(Debug, Default)]
pub struct HeardPaths {
    by_addr: VecDeque<(SocketAddr, u32)>,
    last: Option<(SocketAddr, u32)>,
    highest: u32,
    registered_upto: u32,
    /// The address the chosen send path (`PathTags::send_tag`) is for.
    chosen_for: Option<SocketAddr>,
}

impl HeardPaths {
    /// An authenticated packet came from `addr` on path `index`. Returns whether it is a new
    /// highest index (registration must extend: [`HeardPaths::to_register`]).
    pub fn note(&mut self, addr: SocketAddr, index: u32) -> bool {
        if self.last == Some((addr, index)) {
            return false;
        }
        self.last = Some((addr, index));
        self.by_addr.retain(|(a, _)| *a != addr);
        if self.by_addr.len() >= ADDRS_KEPT {
            self.by_addr.pop_front();
        }
        self.by_addr.push_back((addr, index));
        self.chosen_for = None;
        if index > self.highest {
            self.highest = index;
            return true;
        }
        false
    }

    /// The path index of packets to `addr`.
    pub fn index_for(&self, addr: SocketAddr) -> u32 {
        self.by_addr
            .iter()
            .rev()
            .find(|(a, _)| *a == addr)
            .map(|p| p.1)
            .or(self.last.map(|r| r.1))
            .unwrap_or(0)
    }

    /// The tag of packets to `addr`.
    pub fn tag_for(&self, addr: SocketAddr, tags: &PathTags) -> RoutingTag {
        tags.pair(self.index_for(addr)).1
    }

    /// Chooses the send path of data to `dst` (derived again only when `dst` or what was heard
    /// from it changed: this runs per packet).
    pub fn choose_for(&mut self, dst: SocketAddr, tags: &mut PathTags) {
        if self.chosen_for != Some(dst) {
            tags.choose(self.index_for(dst));
            self.chosen_for = Some(dst);
        }
    }

    /// The indices to register now: up to `LOOKAHEAD` past the highest used, from the first
    /// not registered yet (empty when there is none). They count as registered from here on.
    pub fn to_register(&mut self) -> RangeInclusive<u32> {
        let upto = self.highest.saturating_add(LOOKAHEAD);
        let from = self.registered_upto + 1;
        self.registered_upto = upto;
        from..=upto
    }

    /// Whether path `index`'s tag stays registered: it is near the highest, or a recent address
    /// still uses it.
    pub fn keeps(&self, index: u32) -> bool {
        index + KEPT_BEHIND > self.highest || self.by_addr.iter().any(|(_, i)| *i == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::keys::SessionRoot;

    fn tags(initiator: bool) -> PathTags {
        let root = SessionRoot::new(&[7; 32], (&[1; 32], &[2; 32]));
        let handshake = if initiator {
            (RoutingTag(10), RoutingTag(20))
        } else {
            (RoutingTag(20), RoutingTag(10))
        };
        PathTags::new(root.path_tag_key(), initiator, handshake)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn both_ends_derive_mirrored_pairs_and_path_zero_is_the_handshake() {
        let (laptop, gateway) = (tags(true), tags(false));
        assert_eq!(laptop.pair(0), (RoutingTag(10), RoutingTag(20)));
        for i in 1..20 {
            let (l, g) = (laptop.pair(i), gateway.pair(i));
            assert_eq!((l.0, l.1), (g.1, g.0), "path {i}");
            assert_ne!(l.0, l.1, "path {i}");
            assert_ne!(laptop.pair(i), laptop.pair(i + 1), "path {i}");
        }
    }

    #[test]
    fn issue_hands_out_each_index_once_starting_after_the_handshake() {
        let mut t = tags(true);
        let issued: Vec<u32> = (0..5).map(|_| t.issue().0).collect();
        assert_eq!(issued, [1, 2, 3, 4, 5]);
        assert_eq!(t.issue(), (6, t.pair(6)));
    }

    #[test]
    fn data_goes_on_the_handshake_path_until_another_is_chosen() {
        let mut t = tags(true);
        assert_eq!(t.send_tag(), RoutingTag(20));
        t.choose(3);
        assert_eq!(t.send_tag(), t.pair(3).1);
        t.choose(0);
        assert_eq!(t.send_tag(), RoutingTag(20));
    }

    #[test]
    fn registry_resolves_path_tags_and_treats_other_tags_as_handshake_tags() {
        let gw = tags(false);
        let mut r = Registry::default();
        let owner = RoutingTag(20);
        assert_eq!(r.register(owner, &gw, 1..=4, |_| false), 0);
        for i in 1..=4 {
            assert_eq!(r.resolve(gw.pair(i).0), (owner, i), "path {i}");
        }
        assert_eq!(r.resolve(gw.pair(5).0), (gw.pair(5).0, 0));
        assert_eq!(r.resolve(RoutingTag(99)), (RoutingTag(99), 0));
    }

    #[test]
    fn registry_never_gives_a_tag_two_owners() {
        let gw = tags(false);
        let mut r = Registry::default();
        assert_eq!(r.register(RoutingTag(20), &gw, 1..=2, |_| false), 0);
        // The same tags again, for another session: skipped, the first owner keeps them.
        assert_eq!(r.register(RoutingTag(21), &gw, 2..=3, |_| false), 1);
        assert_eq!(r.resolve(gw.pair(2).0), (RoutingTag(20), 2));
        assert_eq!(r.resolve(gw.pair(3).0), (RoutingTag(21), 3));
        // A tag held elsewhere (a session's handshake tag) is skipped too.
        let held = gw.pair(4).0;
        assert_eq!(r.register(RoutingTag(20), &gw, 4..=4, |t| t == held), 1);
        assert!(!r.contains(held));
    }

    #[test]
    fn registry_retires_what_keep_refuses() {
        let gw = tags(false);
        let mut r = Registry::default();
        r.register(RoutingTag(20), &gw, 1..=4, |_| false);
        r.retire(|_, i| i % 2 == 0);
        let left: Vec<bool> = (1..=4).map(|i| r.contains(gw.pair(i).0)).collect();
        assert_eq!(left, [false, true, false, true]);
    }

    #[test]
    fn packets_to_an_address_go_on_the_path_last_heard_from_it() {
        let mut gw = tags(false);
        let mut heard = HeardPaths::default();
        assert_eq!(
            heard.index_for(addr(1)),
            0,
            "nothing heard: the handshake path"
        );
        assert!(heard.note(addr(1), 2));
        assert!(heard.note(addr(2), 3));
        assert!(!heard.note(addr(1), 1), "not a new highest");
        assert_eq!(heard.index_for(addr(1)), 1);
        assert_eq!(heard.index_for(addr(2)), 3);
        assert_eq!(heard.index_for(addr(9)), 1, "unknown: the latest path's");
        assert_eq!(heard.tag_for(addr(2), &gw), gw.pair(3).1);
        heard.choose_for(addr(2), &mut gw);
        assert_eq!(gw.send_tag(), gw.pair(3).1);
        heard.choose_for(addr(1), &mut gw);
        assert_eq!(gw.send_tag(), gw.pair(1).1);
        // What was heard from the chosen address changes: the choice follows.
        heard.note(addr(1), 4);
        heard.choose_for(addr(1), &mut gw);
        assert_eq!(gw.send_tag(), gw.pair(4).1);
    }

    #[test]
    fn registration_runs_ahead_of_the_highest_path_and_retirement_keeps_what_is_used() {
        let mut heard = HeardPaths::default();
        assert_eq!(heard.to_register(), 1..=LOOKAHEAD);
        assert!(heard.to_register().is_empty(), "nothing new");
        heard.note(addr(1), 2);
        assert_eq!(heard.to_register(), LOOKAHEAD + 1..=2 + LOOKAHEAD);
        heard.note(addr(2), 20);
        assert!(heard.keeps(20) && heard.keeps(13), "near the highest");
        assert!(!heard.keeps(12), "far behind and unused");
        assert!(heard.keeps(2), "far behind but an address still uses it");
    }
}
