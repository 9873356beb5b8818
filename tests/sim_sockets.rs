//! Simulation ring for socket ownership: the laptop core is the only owner of its sockets. A
//! new uplink gets exactly one socket, a vanished one loses every generation it had open, a
//! moving-target move opens the next generation and closes the old one, and nothing is sent
//! by a socket the core has not opened (the simulation opens a socket only on the core's
//! word). Virtual clock, seeded.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use jvpn::policy::BearerClass;
use jvpn::proto::{PathConfig, ProtoConfig, SocketChange, UplinkId};

const WIFI: u32 = 2;
const CELL: u32 = 3;
const WIFI_ADDR: &str = "192.0.2.10:40000";
const CELL_ADDR: &str = "203.0.113.50:61000";

fn open(id: UplinkId, device: &str) -> SocketChange {
    SocketChange::Open {
        id,
        device: device.into(),
    }
}

/// The socket changes laptop 0's core asked for since the first `from`.
fn changes_since(w: &World, from: usize) -> &[SocketChange] {
    &w.laptops[0].socket_changes[from..]
}

fn open_now(w: &World) -> Vec<UplinkId> {
    w.laptops[0].open.iter().copied().collect()
}

/// Datagrams that left laptop 0 from `addr`.
fn sent_from(w: &World, addr: &str) -> usize {
    let addr: SocketAddr = addr.parse().unwrap();
    w.capture.iter().filter(|d| d.from == addr).count()
}

#[test]
fn a_new_uplink_opens_exactly_one_socket_and_a_vanished_one_closes_it() {
    let mut w = World::with_config(1, 31, ProtoConfig::default());
    w.give_links(0, &[(WIFI, BearerClass::Wifi, "wlan0", WIFI_ADDR)]);
    assert_eq!(
        changes_since(&w, 0),
        [open(UplinkId(WIFI), "wlan0")],
        "the first snapshot"
    );
    w.establish();
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(1));

    let before = w.laptops[0].socket_changes.len();
    let cell_before = sent_from(&w, CELL_ADDR);
    w.give_links(0, &[(CELL, BearerClass::Cellular, "wwan0", CELL_ADDR)]);
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(3));
    assert_eq!(
        changes_since(&w, before),
        [open(UplinkId(CELL), "wwan0")],
        "a new uplink, then three seconds of traffic"
    );
    assert_eq!(open_now(&w), [UplinkId(WIFI), UplinkId(CELL)]);
    assert!(
        sent_from(&w, CELL_ADDR) > cell_before,
        "the new socket was used (probes)"
    );

    let before = w.laptops[0].socket_changes.len();
    w.link_down(0, CELL);
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(3));
    assert_eq!(
        changes_since(&w, before),
        [SocketChange::Close(UplinkId(CELL))]
    );
    assert_eq!(open_now(&w), [UplinkId(WIFI)]);

    let before = w.laptops[0].socket_changes.len();
    w.link_up(0, CELL);
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(1));
    assert_eq!(
        changes_since(&w, before),
        [open(UplinkId(CELL), "wwan0")],
        "an uplink that comes back gets a socket again"
    );
    assert_eq!(w.laptops[0].unopened_sends, [], "sent by unopened sockets");
}

/// Moves every 5 s exactly.
fn moving() -> ProtoConfig {
    ProtoConfig {
        paths: PathConfig {
            moving_target: Some((Duration::from_secs(5), Duration::ZERO)),
            max_switches_per_min: 15,
            ..PathConfig::default()
        },
        ..ProtoConfig::default()
    }
}

#[test]
fn a_move_opens_the_next_generation_closes_the_old_one_and_a_vanished_uplink_closes_all() {
    let mut w = World::with_config(1, 32, moving());
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", WIFI_ADDR),
            (CELL, BearerClass::Cellular, "wwan0", CELL_ADDR),
        ],
    );
    w.establish();
    let wifi = UplinkId(WIFI);
    let (g1, g2) = (wifi.with_generation(1), wifi.with_generation(2));
    let before = w.laptops[0].socket_changes.len();
    while w.laptops[0].core.paths().active() == wifi {
        assert!(w.elapsed() < Duration::from_secs(12), "no move");
        MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_millis(100));
    }
    assert_eq!(w.laptops[0].core.paths().active(), g1);
    assert_eq!(
        changes_since(&w, before),
        [open(g1, "wlan0"), SocketChange::Close(wifi)],
        "one move"
    );
    assert_eq!(open_now(&w), [UplinkId(CELL), g1]);

    // A firewall pins the current port: the next move stays under way with two sockets of
    // Wi-Fi open, until Wi-Fi vanishes.
    let blocked = with_generation(WIFI_ADDR.parse().unwrap(), 2);
    w.drop_if = Some(Box::new(move |d: &Datagram| {
        d.from == blocked || d.to == blocked
    }));
    while !w.laptops[0].open.contains(&g2) {
        assert!(w.elapsed() < Duration::from_secs(20), "no second move");
        MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_millis(100));
    }
    let before = w.laptops[0].socket_changes.len();
    w.link_down(0, WIFI);
    assert_eq!(
        changes_since(&w, before),
        [SocketChange::Close(g1), SocketChange::Close(g2)],
        "every generation of the vanished uplink"
    );
    assert_eq!(open_now(&w), [UplinkId(CELL)]);

    // The session goes on by Cellular (moving there too); the failed move closes nothing twice.
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(10));
    assert_eq!(
        w.laptops[0].core.paths().active().interface(),
        UplinkId(CELL)
    );
    let wifi_changes = changes_since(&w, before)
        .iter()
        .filter(|c| !matches!(c, SocketChange::Open { device, .. } if device == "wwan0"))
        .filter(|c| !matches!(c, SocketChange::Close(id) if id.interface() == UplinkId(CELL)))
        .count();
    assert_eq!(wifi_changes, 2, "{:?}", changes_since(&w, before));
    // Until the path logic leaves it, data still goes by the vanished active socket (the
    // driver answers each with a send error); never by one the core did not open.
    let lp = &w.laptops[0];
    let never_opened: Vec<_> = lp
        .unopened_sends
        .iter()
        .filter(|via| !lp.opened().contains(via))
        .collect();
    assert_eq!(
        never_opened,
        [] as [&UplinkId; 0],
        "sent by never opened sockets"
    );
    assert!(lp.unopened_sends.iter().all(|via| *via == g1));
}
