//! Simulation ring for the foundation: handshake, data, isolation between sessions, replay,
//! unknown peers. Virtual clock, seeded, deterministic.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use jvpn::proto::{CloseReason, Core, DropReason, Event, ProtoConfig};

fn established_ids(events: &[Event]) -> Vec<jvpn::proto::SessionId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SessionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_gives_both_ends_the_same_session_id_and_data_flows_both_ways() {
    let mut w = World::new(1, 1);
    w.establish();
    let laptop_ids = established_ids(&w.laptops[0].events);
    let gw_ids = established_ids(&w.gateway_events);
    assert_eq!(laptop_ids.len(), 1);
    assert_eq!(laptop_ids, gw_ids);

    let up = ipv4(laptop_inner(0), gateway_inner(), b"uplink hello");
    w.laptop_sends(0, &up);
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.gateway_tun_out, vec![up]);

    let down = ipv4(gateway_inner(), laptop_inner(0), b"downlink hello");
    w.gateway_sends(&down);
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.laptops[0].tun_out, vec![down]);
}

#[test]
fn packets_sent_before_the_handshake_completes_are_delivered_after_it() {
    let mut w = World::new(1, 2);
    let early = ipv4(laptop_inner(0), gateway_inner(), b"early");
    w.laptop_sends(0, &early);
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.gateway_tun_out, vec![early]);
}

#[test]
fn two_laptops_on_one_gateway_reach_each_other_through_it() {
    let mut w = World::new(2, 3);
    w.establish();
    let a_to_b = ipv4(laptop_inner(0), laptop_inner(1), b"a to b");
    w.laptop_sends(0, &a_to_b);
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.laptops[1].tun_out, vec![a_to_b]);
    assert!(w.laptops[0].tun_out.is_empty());
    let ids_a = established_ids(&w.laptops[0].events);
    let ids_b = established_ids(&w.laptops[1].events);
    assert_ne!(ids_a, ids_b, "each laptop has its own session");
}

#[test]
fn a_replayed_datagram_is_dropped() {
    let mut w = World::new(1, 4);
    w.establish();
    let pkt = ipv4(laptop_inner(0), gateway_inner(), b"once only");
    w.laptop_sends(0, &pkt);
    w.run_for(Duration::from_millis(50));
    let captured = w.capture.last().unwrap().clone();
    // Replayed from the original address and from an attacker's address.
    w.inject_at(w.now, captured.clone());
    let mut moved = captured;
    moved.from = "203.0.113.66:999".parse().unwrap();
    w.inject_at(w.now, moved);
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.gateway_tun_out.len(), 1);
    assert_eq!(w.gateway.drop_counts().get(DropReason::Replay), 2);
    let view = &w.gateway.session_views(w.now)[0];
    assert_eq!(
        view.endpoint, w.laptops[0].addr,
        "a replay never moves the session"
    );
}

#[test]
fn a_packet_under_another_sessions_key_is_dropped() {
    let mut w = World::new(2, 5);
    w.establish();
    // Laptop 1's valid datagram, re-tagged with laptop 0's routing tag.
    w.laptop_sends(1, &ipv4(laptop_inner(1), gateway_inner(), b"from b"));
    let from_b = w.capture.last().unwrap().clone();
    w.laptop_sends(0, &ipv4(laptop_inner(0), gateway_inner(), b"from a"));
    let from_a = w.capture.last().unwrap().clone();
    w.run_for(Duration::from_millis(50));
    let before = w.gateway_tun_out.len();
    let mut forged = from_b.bytes.clone();
    forged[4..8].copy_from_slice(&from_a.bytes[4..8]);
    forged[8..16].copy_from_slice(&99u64.to_le_bytes());
    w.inject_at(
        w.now,
        Datagram {
            bytes: forged,
            ..from_b
        },
    );
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.gateway_tun_out.len(), before);
    assert_eq!(w.gateway.drop_counts().get(DropReason::AuthFailed), 1);
}

#[test]
fn a_laptop_cannot_send_from_another_laptops_inner_address() {
    let mut w = World::new(2, 6);
    w.establish();
    w.laptop_sends(0, &ipv4(laptop_inner(1), gateway_inner(), b"spoofed"));
    w.run_for(Duration::from_millis(50));
    assert!(w.gateway_tun_out.is_empty());
    assert_eq!(w.gateway.drop_counts().get(DropReason::DisallowedSource), 1);
}

#[test]
fn an_unknown_peer_gets_no_reply_at_all() {
    let mut w = World::new(1, 7);
    w.establish();
    // A laptop whose key the gateway does not know.
    let stranger = identity(99);
    let gw = identity(200);
    w.add_laptop(stranger, 1, &gw, 77, ProtoConfig::default());
    let stranger_addr = w.laptops[1].addr;
    w.run_for(Duration::from_secs(20));
    let replies = w.capture.iter().filter(|d| d.to == stranger_addr).count();
    assert_eq!(replies, 0);
    assert!(w.laptops[1].core.session().is_none());
    assert!(
        w.gateway.drop_counts().get(DropReason::UnknownPeer) >= 3,
        "it kept retrying"
    );
}

#[test]
fn a_replayed_initiation_gets_no_reply() {
    let mut w = World::new(1, 8);
    w.establish();
    let init = w.capture.iter().find(|d| d.bytes[0] == 1).unwrap().clone();
    let sent_before = w.capture.len();
    let mut moved = init.clone();
    moved.from = "203.0.113.66:999".parse().unwrap();
    w.inject_at(w.now, init);
    w.inject_at(w.now, moved);
    w.run_for(Duration::from_millis(100));
    let responses = w.capture[sent_before..]
        .iter()
        .filter(|d| d.bytes[0] == 2)
        .count();
    assert_eq!(responses, 0);
    assert_eq!(w.gateway.drop_counts().get(DropReason::StaleInitiation), 2);
    assert_eq!(established_ids(&w.gateway_events).len(), 1);
}

#[test]
fn lost_initiations_are_retransmitted_with_backoff() {
    let mut w = World::new(1, 9);
    w.loss = 1.0;
    w.run_for(Duration::from_secs(20));
    let times: Vec<u32> = w.laptops[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::HandshakeInitiated { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    // 1 s, 2 s, 4 s, 8 s (+ jitter): 5 attempts within 20 s, not dozens.
    assert!((4..=6).contains(&times.len()), "attempts: {times:?}");
    w.loss = 0.0;
    w.run_for(Duration::from_secs(20));
    assert!(w.laptops[0].core.session().is_some());
}

#[test]
fn the_laptop_replaces_a_session_whose_gateway_went_silent() {
    let mut w = World::new(1, 10);
    w.establish();
    let first = w.laptops[0].core.session().unwrap().id();
    // The gateway forgets everything (a restart) by a fresh core with the same keys.
    let cfg_world = World::new(1, 11);
    w.gateway = cfg_world.gateway;
    w.run_for(Duration::from_secs(60));
    let second = w.laptops[0].core.session().expect("re-established").id();
    assert_ne!(first, second, "a new handshake is a new SessionID");
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::PeerSilent,
            ..
        }
    )));
}

#[test]
fn keepalives_keep_an_idle_session_up_for_an_hour() {
    let mut w = World::new(1, 12);
    w.establish();
    let id = w.laptops[0].core.session().unwrap().id();
    w.run_for(Duration::from_secs(3600));
    assert_eq!(w.laptops[0].core.session().unwrap().id(), id);
    assert_eq!(w.gateway.session_views(w.now).len(), 1);
}

#[test]
fn shutdown_closes_the_session_on_the_gateway() {
    let mut w = World::new(1, 13);
    w.establish();
    let now = w.now;
    w.laptops[0].core.shutdown(now);
    w.run_for(Duration::from_millis(100));
    assert!(w.gateway.session_views(w.now).is_empty());
    assert!(w.gateway_events.iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::PeerClosed,
            ..
        }
    )));
    // And it stays down: no new handshake.
    let sent = w.capture.len();
    w.run_for(Duration::from_secs(30));
    assert_eq!(w.capture.len(), sent);
}

#[test]
fn a_nat_rebinding_moves_the_gateway_to_the_new_source_address() {
    let mut w = World::new(1, 14);
    w.establish();
    w.laptops[0].addr = "192.0.2.99:5555".parse().unwrap();
    w.laptop_sends(
        0,
        &ipv4(laptop_inner(0), gateway_inner(), b"after rebinding"),
    );
    w.run_for(Duration::from_millis(50));
    w.gateway_sends(&ipv4(gateway_inner(), laptop_inner(0), b"reply"));
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.laptops[0].tun_out.len(), 1);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut w = World::new(2, seed);
        w.loss = 0.3;
        w.run_for(Duration::from_secs(30));
        w.capture
            .iter()
            .map(|d| d.bytes.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}
