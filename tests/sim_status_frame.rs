//! Simulation ring for the relationship-scoped status frame (F1–F3): a laptop that proves an
//! ended session's keys learns at once that it is dead and starts a fresh handshake; everyone
//! else — unknown tag, bad MAC, a tombstoned session under the wrong key — gets nothing.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use jvpn::proto::state::Reason;
use jvpn::proto::{Core, Event};

/// The gateway's authenticated Close is the only 34-byte control datagram it sends.
fn is_close_to_laptop(d: &Datagram) -> bool {
    d.bytes[0] == 5 && d.bytes.len() == 34 && d.from.port() == 51900
}

#[test]
fn a_laptop_that_missed_the_close_learns_from_the_status_frame_and_rehandshakes_at_once() {
    let mut w = World::new(1, 1);
    w.drop_if = Some(Box::new(is_close_to_laptop));
    w.establish();
    let first = w.laptops[0].core.session().unwrap().id();
    let now = w.now;
    assert!(w.gateway.terminate(first, now).is_ok());
    w.run_for(Duration::from_millis(100));
    assert_eq!(
        w.laptops[0].core.session().map(|s| s.id()),
        Some(first),
        "the Close was lost"
    );
    // The laptop's next packet under the old keys gets the trusted frame back.
    let sent_at = w.now;
    w.laptop_sends(0, &ipv4(laptop_inner(0), gateway_inner(), b"still there?"));
    w.run_for(Duration::from_millis(100));
    let second = w.laptops[0].core.session().expect("a fresh session").id();
    assert_ne!(second, first);
    assert!(
        w.now - sent_at <= Duration::from_millis(100),
        "at once, not after timeouts"
    );
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::SessionTerminated { session_id, reason: Reason::PeerTerminated, .. } if *session_id == first
    )));
}

#[test]
fn unknown_tags_bad_macs_and_tombstones_under_the_wrong_key_all_get_nothing() {
    let mut w = World::new(2, 2);
    w.establish();
    // Laptop 0's session ends; its tag is now a tombstone.
    w.laptop_sends(0, &ipv4(laptop_inner(0), gateway_inner(), b"a"));
    let tombstoned = w.capture.last().unwrap().bytes.clone();
    w.laptop_sends(1, &ipv4(laptop_inner(1), gateway_inner(), b"b"));
    let other_session = w.capture.last().unwrap().bytes.clone();
    w.run_for(Duration::from_millis(50));
    let first = w.laptops[0].core.session().unwrap().id();
    let now = w.now;
    w.gateway.terminate(first, now).unwrap();
    w.run_for(Duration::from_millis(50));
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let mut probes = Vec::new();
    // 1. An unknown routing tag.
    let mut unknown = other_session.clone();
    unknown[4..8].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
    probes.push(unknown);
    // 2. A live session's tag with a bad MAC.
    let mut bad_mac = other_session.clone();
    let last = bad_mac.len() - 1;
    bad_mac[last] ^= 1;
    bad_mac[8..16].copy_from_slice(&500u64.to_le_bytes());
    probes.push(bad_mac);
    // 3. The tombstoned session's tag, sealed under another session's key.
    let mut wrong_key = other_session.clone();
    wrong_key[4..8].copy_from_slice(&tombstoned[4..8]);
    probes.push(wrong_key);
    for bytes in probes {
        let before = w.capture.len();
        w.inject_at(
            w.now,
            Datagram {
                from: attacker,
                to: w.gateway_addr,
                bytes,
            },
        );
        w.run_for(Duration::from_millis(50));
        let replies = w.capture[before..]
            .iter()
            .filter(|d| d.to == attacker)
            .count();
        assert_eq!(replies, 0);
    }
    // Not even the internal bookkeeping differs in what leaves the node: all three were
    // counted the same way.
    assert!(
        w.gateway
            .drop_counts()
            .get(jvpn::proto::DropReason::UnknownTag)
            >= 2
    );
}
