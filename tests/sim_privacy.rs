//! Simulation ring for unlinkable paths (J11) and the moving target (J10): every path (a bearer,
//! or a new source port) carries its own routing tags, so captures of two paths share no tag;
//! the moving target re-anchors on a new port on a cadence without losing a packet. Virtual
//! clock, seeded.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use jvpn::policy::BearerClass;
use jvpn::proto::path::SwitchReason;
use jvpn::proto::{Event, PathConfig, ProtoConfig, UplinkId};

const WIFI: u32 = 2;
const CELL: u32 = 3;
const WIFI_ADDR: &str = "192.0.2.10:40000";
const CELL_ADDR: &str = "203.0.113.50:61000";

fn two_bearers(seed: u64, proto: ProtoConfig) -> World {
    let mut w = World::with_config(1, seed, proto);
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", WIFI_ADDR),
            (CELL, BearerClass::Cellular, "wwan0", CELL_ADDR),
        ],
    );
    w.establish();
    w
}

/// Every routing tag in clear in the datagrams to or from `addr` (handshake sender and receiver
/// tags, and the receiver tag of every Data and Control packet).
fn tags_at(w: &World, addr: SocketAddr) -> BTreeSet<[u8; 4]> {
    let tag = |b: &[u8], at: usize| -> [u8; 4] { b[at..at + 4].try_into().unwrap() };
    let mut out = BTreeSet::new();
    for d in w.capture.iter().filter(|d| d.from == addr || d.to == addr) {
        let b = &d.bytes;
        match b.first() {
            Some(1) if b.len() >= 8 => {
                out.insert(tag(b, 4));
            }
            Some(2) if b.len() >= 12 => {
                out.insert(tag(b, 4));
                out.insert(tag(b, 8));
            }
            Some(4 | 5) if b.len() >= 16 => {
                out.insert(tag(b, 4));
            }
            _ => {}
        }
    }
    out
}

fn handshakes(w: &World) -> usize {
    w.laptops[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::HandshakeInitiated { .. }))
        .count()
}

#[test]
fn captures_of_two_bearers_share_no_routing_tag() {
    let mut w = two_bearers(21, ProtoConfig::default());
    let id = w.laptops[0].core.session().unwrap().id();
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(1));
    w.link_down(0, WIFI);
    media.play(&mut w, Duration::from_secs(3));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    let wifi_first = tags_at(&w, WIFI_ADDR.parse().unwrap());
    w.link_up(0, WIFI);
    media.play(&mut w, Duration::from_secs(4));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    assert_eq!(w.laptops[0].core.session().unwrap().id(), id);

    let wifi = tags_at(&w, WIFI_ADDR.parse().unwrap());
    let cell = tags_at(&w, CELL_ADDR.parse().unwrap());
    assert!(!wifi.is_empty() && !cell.is_empty());
    assert!(
        wifi.is_disjoint(&cell),
        "a tag seen on both bearers: {:?}",
        wifi.intersection(&cell).collect::<Vec<_>>()
    );
    // Counters are under header protection: in clear they are not a sequence that could link
    // the last packet on one bearer to the first on the next; through the keys they are.
    let from_laptop: Vec<&Datagram> = w
        .capture
        .iter()
        .filter(|d| d.to == w.gateway_addr && d.bytes.first() == Some(&4))
        .collect();
    let s = w.laptops[0].core.session().unwrap();
    let clear: Vec<u64> = from_laptop
        .iter()
        .map(|d| u64::from_le_bytes(d.bytes[8..16].try_into().unwrap()))
        .collect();
    let real: Vec<u64> = from_laptop
        .iter()
        .filter_map(|d| s.sent_header(&d.bytes).map(|h| h.1))
        .collect();
    let steps = |v: &[u64]| v.windows(2).filter(|p| p[1] == p[0] + 1).count();
    assert!(
        from_laptop.len() > 300,
        "{} data packets",
        from_laptop.len()
    );
    assert_eq!(steps(&clear), 0, "counters in clear step by one");
    assert!(steps(&real) > from_laptop.len() / 2, "the real counters do");

    // Wi-Fi came back as a new path: none of its old tags were used again.
    let wifi_again: BTreeSet<_> = wifi.difference(&wifi_first).copied().collect();
    assert!(!wifi_again.is_empty(), "new tags on the returning bearer");
    assert_eq!(
        wifi_first.len(),
        2,
        "path 0: the handshake's two tags: {wifi_first:?}"
    );
}

/// A policy that moves every `interval ± jitter` (and allows 15 switches a minute, as policy
/// validation requires for a 5 s cadence).
fn moving(interval_ms: u64, jitter_ms: u64) -> ProtoConfig {
    ProtoConfig {
        paths: PathConfig {
            moving_target: Some((
                Duration::from_millis(interval_ms),
                Duration::from_millis(jitter_ms),
            )),
            max_switches_per_min: 15,
            ..PathConfig::default()
        },
        ..ProtoConfig::default()
    }
}

#[test]
fn a_move_every_five_seconds_for_a_minute_loses_no_packet_and_never_reuses_a_port_or_tag() {
    let mut w = two_bearers(22, moving(5_000, 1_000));
    let id = w.laptops[0].core.session().unwrap().id();
    let hs = handshakes(&w);
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(60));
    let MediaReports { up, down } = media.finish(&mut w);
    assert_eq!((up.lost, down.lost), (0, 0), "up {up:?} down {down:?}");
    for r in [up, down] {
        assert!(r.longest_silence <= Duration::from_millis(40), "{r:?}");
    }

    let lp = &w.laptops[0];

    let moves: Vec<_> = lp
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TransportSwitch {
                from, to, reason, ..
            } => Some((*from, *to, *reason)),
            _ => None,
        })
        .collect();
    assert!(moves.len() >= 10, "{} moves in 60 s", moves.len());
    assert!(moves.iter().all(|m| *m
        == (
            Some(BearerClass::Wifi),
            BearerClass::Wifi,
            SwitchReason::MovingTarget
        )));
    assert_eq!(lp.core.session().unwrap().id(), id, "same SessionID");
    assert_eq!(handshakes(&w), hs, "no new handshake");

    // Every move used a new port, and every old port was closed.
    let active = lp.core.paths().active();
    assert_eq!(active.interface(), UplinkId(WIFI));
    assert_eq!(active.generation() as usize, moves.len());
    let expected_closed: BTreeSet<UplinkId> = (0..active.generation())
        .map(|g| UplinkId(WIFI).with_generation(g))
        .collect();
    assert_eq!(lp.closed(), expected_closed);

    // No routing tag appears on two ports.
    let base: SocketAddr = WIFI_ADDR.parse().unwrap();
    let mut seen: BTreeSet<[u8; 4]> = BTreeSet::new();
    for g in 0..=active.generation() {
        let tags = tags_at(&w, with_generation(base, g));
        assert!(!tags.is_empty(), "port of generation {g} carried traffic");
        assert!(
            seen.is_disjoint(&tags),
            "generation {g} reuses a tag of an earlier port"
        );
        seen.extend(tags);
    }
    // The gateway followed: it now sends to the newest port.
    assert_eq!(
        w.gateway.session_views(w.now)[0].endpoint,
        with_generation(base, active.generation())
    );
}

#[test]
fn the_moving_target_is_off_by_default() {
    let mut w = two_bearers(23, ProtoConfig::default());
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(30));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    assert!(w.laptops[0].opened().iter().all(|s| s.generation() == 0));
}

#[test]
fn a_move_whose_new_port_is_blocked_fails_without_disturbing_the_session() {
    let mut w = two_bearers(24, moving(5_000, 0));
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(1));
    // Everything from the next port is lost (a firewall that pins the current one).
    let current = w.laptops[0].core.paths().active();
    let next = current.next_generation();
    let blocked = with_generation(WIFI_ADDR.parse().unwrap(), next.generation());
    w.drop_if = Some(Box::new(move |d: &Datagram| {
        d.from == blocked || d.to == blocked
    }));
    let mut media = MediaRun::new(&w, 0, true, true);
    // The next move starts within 5 s and is given up after the 8 s recovery window.
    media.play(&mut w, Duration::from_secs(14));
    let MediaReports { up, down } = media.finish(&mut w);
    let lp = &w.laptops[0];
    assert_eq!((up.lost, down.lost), (0, 0), "up {up:?} down {down:?}");
    // The failed move closed its socket; the session stayed on its port.
    assert!(lp.closed().contains(&next), "{:?}", lp.closed());
    assert_eq!(lp.core.paths().active(), current);
    assert!(lp.core.session().is_some());
    assert!(lp.events.iter().any(|e| matches!(
        e,
        Event::ReattachResult {
            status: jvpn::proto::path::ReattachStatus::TimedOut,
            ..
        }
    )));
}
