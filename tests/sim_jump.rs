//! Simulation ring for jumping: bearer loss, silent failure, make-before-break, flapping, NAT
//! rebinding and an attacker who copies, races and replays packets. Virtual clock, seeded.
//! Media is 50 packets/s each way; budgets are those of the jumping issue.

mod common;

use std::time::Duration;

use common::*;
use jvpn::policy::BearerClass;
use jvpn::proto::path::{ReattachStatus, SwitchReason};
use jvpn::proto::{DropReason, Event, PathConfig, ProtoConfig, UplinkId};

const WIFI: u32 = 2;
const CELL: u32 = 3;

fn voice() -> ProtoConfig {
    ProtoConfig {
        paths: PathConfig {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_volatile: Duration::from_millis(300),
            switch_cooldown: Duration::from_millis(500),
            max_switches_per_min: 12,
            reattach_retry: Duration::from_millis(50),
            ..PathConfig::default()
        },
        ..ProtoConfig::default()
    }
}

/// A laptop with Wi-Fi and cellular, on Wi-Fi, with an established session.
fn two_bearers(seed: u64, proto: ProtoConfig) -> World {
    let mut w = World::with_config(1, seed, proto);
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", "192.0.2.10:40000"),
            (CELL, BearerClass::Cellular, "wwan0", "203.0.113.50:61000"),
        ],
    );
    w.establish();
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    w
}

fn handshakes(w: &World) -> usize {
    w.laptops[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::HandshakeInitiated { .. }))
        .count()
}

fn switches(w: &World) -> Vec<(Option<BearerClass>, BearerClass, SwitchReason)> {
    w.laptops[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TransportSwitch {
                from, to, reason, ..
            } => Some((*from, *to, *reason)),
            _ => None,
        })
        .collect()
}

/// Runs media for `before`, applies `cut`, runs media for `after`; returns (up, down) reports.
fn media_across(
    w: &mut World,
    up: bool,
    down: bool,
    before: Duration,
    after: Duration,
    cut: impl FnOnce(&mut World),
) -> (MediaReport, MediaReport) {
    let gw_before = w.gateway_tun_out.len();
    let lp_before = w.laptops[0].tun_out.len();
    let first = 1_000_000;
    let mut seq = first - 1;
    w.media(0, before, up, down, &mut seq);
    cut(w);
    w.media(0, after, up, down, &mut seq);
    w.run_for(Duration::from_millis(100));
    let gw_times = vec![w.now; w.gateway_tun_out.len()];
    let up_r = media_report(
        &w.gateway_tun_out[gw_before..],
        &gw_times[gw_before..],
        first,
        seq,
    );
    let lp = &w.laptops[0];
    let down_r = media_report(
        &lp.tun_out[lp_before..],
        &lp.tun_at[lp_before..],
        first,
        seq,
    );
    (up_r, down_r)
}

#[test]
fn wifi_link_down_moves_the_session_to_cellular_losing_at_most_one_packet_each_way() {
    let mut w = two_bearers(1, ProtoConfig::default());
    let id = w.laptops[0].core.session().unwrap().id();
    let hs = handshakes(&w);
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(1),
        |w| w.link_down(0, WIFI),
    );
    assert!(down.lost <= 1, "downlink {down:?}");
    assert!(
        down.longest_silence <= Duration::from_millis(60),
        "downlink {down:?}"
    );
    // Uplink arrival times at the gateway come from its own capture below.
    let up = uplink_report(&w);
    assert!(up.lost <= 1, "uplink {up:?}");
    assert!(
        up.longest_silence <= Duration::from_millis(60),
        "uplink {up:?}"
    );
    assert_eq!(
        w.laptops[0].core.session().unwrap().id(),
        id,
        "same SessionID"
    );
    assert_eq!(handshakes(&w), hs, "no new handshake");
    assert_eq!(
        switches(&w),
        vec![(
            Some(BearerClass::Wifi),
            BearerClass::Cellular,
            SwitchReason::TransportDead
        )]
    );
    assert_eq!(
        w.gateway.sessions(w.now)[0].endpoint,
        "203.0.113.50:61000".parse().unwrap()
    );
}

/// The uplink stream's loss and longest silence, from the gateway's TUN writes in the capture
/// order (arrival times are the delivery times of the carrying datagrams).
fn uplink_report(w: &World) -> MediaReport {
    let times = &w.gateway_tun_at;
    let first = 1_000_000;
    let last = w
        .gateway_tun_out
        .iter()
        .filter(|p| p.len() >= 24)
        .map(|p| u32::from_be_bytes(p[20..24].try_into().unwrap()))
        .max()
        .unwrap_or(first);
    media_report(&w.gateway_tun_out, times, first, last)
}

#[test]
fn a_downlink_only_stream_resumes_as_fast_as_a_two_way_one() {
    let mut w = two_bearers(2, ProtoConfig::default());
    let (_, down) = media_across(
        &mut w,
        false,
        true,
        Duration::from_secs(1),
        Duration::from_secs(1),
        |w| w.link_down(0, WIFI),
    );
    assert!(down.lost <= 1, "{down:?}");
    assert!(
        down.longest_silence <= Duration::from_millis(60),
        "{down:?}"
    );
}

#[test]
fn a_silent_wifi_is_left_within_half_a_second_under_the_voice_policy() {
    let mut w = two_bearers(3, voice());
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(2),
        |w| w.blackhole(0, WIFI, true),
    );
    assert!(
        down.longest_silence <= Duration::from_millis(500),
        "{down:?}"
    );
    let up = uplink_report(&w);
    assert!(up.longest_silence <= Duration::from_millis(500), "{up:?}");
    assert_eq!(switches(&w)[0].2, SwitchReason::HeartbeatTimeout);
}

#[test]
fn a_silent_wifi_is_left_within_three_seconds_under_the_default_policy() {
    let mut w = two_bearers(4, ProtoConfig::default());
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(5),
        |w| w.blackhole(0, WIFI, true),
    );
    assert!(down.longest_silence <= Duration::from_secs(3), "{down:?}");
    assert!(
        down.received >= 190,
        "at most about two seconds lost: {down:?}"
    );
}

#[test]
fn wifi_coming_back_is_taken_make_before_break_with_nothing_lost() {
    let mut w = two_bearers(5, ProtoConfig::default());
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(2),
        |w| w.link_up(0, WIFI),
    );
    assert_eq!(down.lost, 0, "{down:?}");
    assert_eq!(uplink_report(&w).lost, 0);
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    assert_eq!(
        switches(&w).last().unwrap().2,
        SwitchReason::PreferredAvailable
    );
}

#[test]
fn ten_wifi_flaps_in_two_seconds_stay_within_the_switch_bounds_and_media_flows() {
    let mut w = two_bearers(6, ProtoConfig::default());
    let first = 1_000_000;
    let mut seq = first - 1;
    let lp_before = w.laptops[0].tun_out.len();
    w.media(0, Duration::from_millis(500), true, true, &mut seq);
    for _ in 0..10 {
        w.link_down(0, WIFI);
        w.media(0, Duration::from_millis(100), true, true, &mut seq);
        w.link_up(0, WIFI);
        w.media(0, Duration::from_millis(100), true, true, &mut seq);
    }
    w.media(0, Duration::from_secs(3), true, true, &mut seq);
    let attempts = w.laptops[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::ReattachAttempt { .. }))
        .count();
    // One jump to cellular at the first flap; Wi-Fi is taken back only once it has stayed up
    // for the cooldown after the flapping ends.
    assert_eq!(attempts, 2, "{:?}", w.laptops[0].events);
    assert_eq!(
        switches(&w).iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![
            SwitchReason::TransportDead,
            SwitchReason::PreferredAvailable
        ]
    );
    let lp = &w.laptops[0];
    let down = media_report(
        &lp.tun_out[lp_before..],
        &lp.tun_at[lp_before..],
        first,
        seq,
    );
    assert!(down.lost <= 1, "{down:?}");
    assert!(
        down.longest_silence <= Duration::from_millis(60),
        "{down:?}"
    );
    assert!(uplink_report(&w).lost <= 1);
}

#[test]
fn a_switch_inside_the_cooldown_is_denied_and_made_when_allowed() {
    let mut w = two_bearers(12, ProtoConfig::default());
    w.link_down(0, WIFI);
    let t0 = w.now;
    w.run_for(Duration::from_millis(200));
    // Cellular dies too while Wi-Fi comes back, 200 ms after the first switch.
    w.laptops[0].links.get_mut(&UplinkId(WIFI)).unwrap().up = true;
    w.link_down(0, CELL);
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::TransportSwitchDenied {
            reason: jvpn::proto::path::DenyReason::CooldownActive,
            ..
        }
    )));
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    assert_eq!(switches(&w).len(), 2);
    assert!(w.now - t0 >= Duration::from_millis(1500));
}

#[test]
fn a_raced_copy_of_the_reattach_loses_to_the_laptop_answering_the_challenge() {
    let mut w = two_bearers(13, ProtoConfig::default());
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_millis(500),
        Duration::from_secs(1),
        |w| {
            let before = w.capture.len();
            w.link_down(0, WIFI);
            let reattach = w.capture[before..]
                .iter()
                .find(|d| d.bytes[0] == 5)
                .unwrap()
                .clone();
            w.inject_at(
                w.now,
                Datagram {
                    from: attacker,
                    ..reattach
                },
            );
        },
    );
    assert!(
        w.capture
            .iter()
            .any(|d| d.to == attacker && d.bytes[0] == 5),
        "the copy won the race and was challenged"
    );
    assert!(
        w.gateway.drops().get(DropReason::Replay) >= 1,
        "the laptop's own reattach arrived second"
    );
    assert_eq!(
        w.gateway.sessions(w.now)[0].endpoint,
        "203.0.113.50:61000".parse().unwrap()
    );
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::ReattachResult {
            status: ReattachStatus::Accepted,
            ..
        }
    )));
    assert!(down.lost <= 3, "{down:?}");
    assert!(
        down.longest_silence <= Duration::from_millis(100),
        "{down:?}"
    );
}

#[test]
fn a_nat_rebinding_on_cellular_keeps_the_session_and_resends_what_the_old_mapping_swallowed() {
    let mut w = two_bearers(7, ProtoConfig::default());
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(1));
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(1),
        |w| {
            w.laptops[0].links.get_mut(&UplinkId(CELL)).unwrap().addr =
                "203.0.113.50:62000".parse().unwrap();
        },
    );
    // The downlink packets in flight to the old mapping are lost on the wire, and sent again
    // as soon as the gateway hears from the new one.
    assert!(w.gateway.resent >= 1, "nothing was resent");
    assert_eq!(down.lost, 0, "{down:?}");
    assert!(uplink_report(&w).lost <= 1);
    let view = &w.gateway.sessions(w.now)[0];
    assert_eq!(view.endpoint, "203.0.113.50:62000".parse().unwrap());
    assert!(view.validated);
}

#[test]
fn a_raced_copy_from_an_attacker_never_holds_the_session() {
    let mut w = two_bearers(8, ProtoConfig::default());
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let first: u32 = 1_000_000;
    let mut seq = first - 1;
    let lp_before = w.laptops[0].tun_out.len();
    for _ in 0..50 {
        seq += 1;
        let p = ipv4(laptop_inner(0), gateway_inner(), &seq.to_be_bytes());
        w.laptop_sends(0, &p);
        // The attacker copies the fresh datagram and gets it there first.
        let mut copy = w.capture.last().unwrap().clone();
        copy.from = attacker;
        w.inject_at(w.now, copy);
        w.gateway_sends(&ipv4(gateway_inner(), laptop_inner(0), &seq.to_be_bytes()));
        let next = w.now + Duration::from_millis(20);
        w.run_until(next);
        assert_ne!(
            w.gateway.sessions(w.now)[0].endpoint,
            attacker,
            "never bound to the attacker after a round"
        );
    }
    let lp = &w.laptops[0];
    let down = media_report(
        &lp.tun_out[lp_before..],
        &lp.tun_at[lp_before..],
        first,
        seq,
    );
    assert_eq!(down.lost, 0, "the laptop keeps its media: {down:?}");
    // Whatever reached the attacker stayed within 3x what it sent.
    let to_attacker: usize = w
        .capture
        .iter()
        .filter(|d| d.to == attacker)
        .map(|d| d.bytes.len())
        .sum();
    let from_attacker: usize = w
        .capture
        .iter()
        .filter(|d| d.from == attacker)
        .map(|d| d.bytes.len())
        .sum::<usize>()
        + 50 * 60;
    assert!(to_attacker <= 3 * from_attacker);
}

#[test]
fn replays_from_a_new_address_never_move_the_session() {
    let mut w = two_bearers(9, ProtoConfig::default());
    let mut seq = 0;
    w.media(0, Duration::from_millis(500), true, false, &mut seq);
    let laptop = w.gateway.sessions(w.now)[0].endpoint;
    let old: Vec<Datagram> = w
        .capture
        .iter()
        .filter(|d| d.to == w.gateway_addr)
        .cloned()
        .collect();
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let replays_before = w.gateway.drops().get(DropReason::Replay);
    for mut d in old.clone() {
        d.from = attacker;
        w.inject_at(w.now, d);
    }
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.gateway.sessions(w.now)[0].endpoint, laptop);
    assert!(w.gateway.drops().get(DropReason::Replay) - replays_before >= old.len() as u64 - 2);
    assert!(
        !w.capture.iter().any(|d| d.to == attacker),
        "nothing is sent to a replayer"
    );
}

#[test]
fn garbage_reattaches_are_offences_that_do_not_disturb_the_session() {
    let mut w = two_bearers(10, ProtoConfig::default());
    let tag = w
        .capture
        .iter()
        .rev()
        .find(|d| d.to == w.gateway_addr && d.bytes[0] == 4)
        .unwrap()
        .bytes[4..8]
        .to_vec();
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    for i in 0..100u64 {
        let mut b = vec![0u8; 16 + 256 + 16];
        b[0] = 5;
        b[4..8].copy_from_slice(&tag);
        b[8..16].copy_from_slice(&(1_000_000 + i).to_le_bytes());
        w.inject_at(
            w.now,
            Datagram {
                from: attacker,
                to: w.gateway_addr,
                bytes: b,
            },
        );
    }
    let (_, down) = media_across(
        &mut w,
        true,
        true,
        Duration::from_millis(200),
        Duration::from_millis(800),
        |_| {},
    );
    assert_eq!(down.lost, 0);
    let failures: Vec<_> = w
        .gateway_events
        .iter()
        .filter_map(|e| match e {
            Event::SecurityValidationFailed {
                failures,
                suppressed,
                ..
            } => Some((*failures, *suppressed)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        vec![(1, false), (17, true)],
        "reported once, then once when past the limit"
    );
    assert_eq!(w.gateway.drops().get(DropReason::AuthFailed), 100);
    assert_ne!(w.gateway.sessions(w.now)[0].endpoint, attacker);
}

#[test]
fn a_held_back_reattach_released_later_is_refused_and_changes_nothing() {
    let mut w = two_bearers(11, ProtoConfig::default());
    // The attacker swallows the reattach sent over cellular when Wi-Fi fails...
    w.laptops[0]
        .links
        .get_mut(&UplinkId(CELL))
        .unwrap()
        .blackhole = true;
    w.link_down(0, WIFI);
    let held = w
        .capture
        .iter()
        .rev()
        .find(|d| d.bytes[0] == 5 && d.from.port() == 61000)
        .unwrap()
        .clone();
    // ... Wi-Fi comes back and the session settles on it ...
    w.laptops[0]
        .links
        .get_mut(&UplinkId(CELL))
        .unwrap()
        .blackhole = false;
    w.run_for(Duration::from_secs(2));
    w.link_up(0, WIFI);
    w.run_for(Duration::from_secs(12));
    let endpoint = w.gateway.sessions(w.now)[0].endpoint;
    let version = w.gateway.sessions(w.now)[0].state_version;
    // ... and releases it much later.
    w.inject_at(w.now, held);
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.gateway.sessions(w.now)[0].endpoint, endpoint);
    assert_eq!(w.gateway.sessions(w.now)[0].state_version, version);
    assert!(
        w.gateway_events.iter().any(|e| matches!(
            e,
            Event::ReattachResult {
                status: ReattachStatus::Rejected(_),
                ..
            }
        )) || w.gateway.drops().get(DropReason::Replay) > 0
    );
}

#[test]
fn the_same_seed_gives_the_same_jumps() {
    let run = |seed| {
        let mut w = two_bearers(seed, voice());
        let mut seq = 0;
        w.media(0, Duration::from_millis(300), true, true, &mut seq);
        w.blackhole(0, WIFI, true);
        w.media(0, Duration::from_secs(1), true, true, &mut seq);
        w.blackhole(0, WIFI, false);
        w.media(0, Duration::from_secs(3), true, true, &mut seq);
        (
            w.capture
                .iter()
                .map(|d| d.bytes.clone())
                .collect::<Vec<_>>(),
            format!("{:?}", w.laptops[0].events),
        )
    };
    assert_eq!(run(77), run(77));
}

#[test]
fn unanswered_probes_in_a_row_move_the_session_before_the_heartbeat_timeout() {
    let proto = ProtoConfig {
        paths: PathConfig {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_volatile: Duration::from_millis(2000),
            max_consecutive_drops: 3,
            ..PathConfig::default()
        },
        ..ProtoConfig::default()
    };
    let mut w = two_bearers(20, proto);
    let cut = w.now;
    w.blackhole(0, WIFI, true);
    w.run_for(Duration::from_secs(1));
    let s = switches(&w);
    assert_eq!(
        s.first().map(|x| x.2),
        Some(SwitchReason::ConsecutiveDrops),
        "{s:?}"
    );
    assert!(w.now - cut < Duration::from_secs(2));
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::SessionStateChange {
            reason: jvpn::proto::state::Reason::ConsecutiveDropExceeded,
            ..
        }
    )));
}

#[test]
fn heavy_downlink_loss_on_the_active_path_moves_the_session() {
    let mut w = two_bearers(21, ProtoConfig::default());
    // Every other datagram to the laptop's Wi-Fi address is lost (50 % > the 20 % threshold).
    let wifi: std::net::SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let n = std::cell::Cell::new(0u32);
    w.drop_if = Some(Box::new(move |d: &Datagram| {
        if d.to != wifi || d.bytes[0] != 4 {
            return false;
        }
        n.set(n.get() + 1);
        n.get() % 2 == 0
    }));
    let mut seq = 0;
    w.media(0, Duration::from_secs(4), true, true, &mut seq);
    let s = switches(&w);
    assert_eq!(
        s.first().map(|x| x.2),
        Some(SwitchReason::LossThreshold),
        "{s:?}"
    );
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::SessionStateChange {
            reason: jvpn::proto::state::Reason::LossThresholdExceeded,
            ..
        }
    )));
}
