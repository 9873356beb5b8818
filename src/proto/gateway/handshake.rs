//! The responder's handshake: initiation → response. The rule: only a configured peer's
//! initiation with a timestamp newer than its last accepted one, no sooner than
//! `initiation_min_interval` after it, gets a response; everything else is counted and gets
//! nothing. An accepted initiation makes a pending session; its first packet confirms it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand_core::RngCore;

use super::session::GwSession;
use super::{Gateway, PeerSpec};
use crate::proto::handshake::{Responder, Timestamp};
use crate::proto::session::Session;
use crate::proto::wire::{self, RoutingTag};
use crate::proto::DropReason;

/// A configured peer and what its initiations are checked against.
#[derive(Debug)]
pub(super) struct PeerState {
    pub spec: PeerSpec,
    /// The timestamp of its last accepted initiation (older or equal ones are replays).
    last_timestamp: Option<Timestamp>,
    last_init_at: Option<Instant>,
}

impl PeerState {
    pub fn new(spec: PeerSpec) -> Self {
        Self {
            spec,
            last_timestamp: None,
            last_init_at: None,
        }
    }
}

impl Gateway {
    pub(super) fn on_initiation(
        &mut self,
        sender: RoutingTag,
        noise: &[u8],
        (local, remote): (Option<IpAddr>, SocketAddr),
        now: Instant,
    ) {
        let out = &mut self.out;
        let mut seed = [0u8; 32];
        out.rng.fill_bytes(&mut seed);
        let Ok(responder) = Responder::read(&self.keys, seed, noise) else {
            out.drops.count(DropReason::HandshakeFailed);
            return;
        };
        let Some(&peer) = self.by_static.get(&responder.remote_static) else {
            out.drops.count(DropReason::UnknownPeer);
            return;
        };
        let state = &mut self.peers[peer];
        if state
            .last_timestamp
            .is_some_and(|t| responder.timestamp <= t)
        {
            out.drops.count(DropReason::StaleInitiation);
            return;
        }
        if state
            .last_init_at
            .is_some_and(|t| now < t + self.proto.initiation_min_interval)
        {
            out.drops.count(DropReason::InitiationRateLimited);
            return;
        }
        let tag = self.table.fresh_tag(&mut out.rng);
        let mut reply = vec![0u8; wire::RESP_LEN];
        let timestamp = responder.timestamp;
        let Ok((root, n)) = responder.accept(&state.spec.psk, tag, sender, &mut reply) else {
            out.drops.count(DropReason::HandshakeFailed);
            return;
        };
        reply.truncate(n);
        state.last_timestamp = Some(timestamp);
        state.last_init_at = Some(now);
        let mut session =
            Session::new(root, false, tag, sender, self.proto.replay_window_bits, now);
        session.set_grace(self.proto.keys.grace);
        let s = GwSession::new(session, peer, remote, local, &self.proto, now);
        self.tag_collisions += self.table.insert_pending(tag, s);
        out.send(local, remote, reply);
    }
}
