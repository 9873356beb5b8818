//! Simulation ring for jumping: bearer loss, silent failure, make-before-break, flapping, NAT
//! rebinding and an attacker who copies, races and replays packets. Virtual clock, seeded.
//! Media is 50 packets/s each way; budgets are those of the jumping issue.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use jvpn::policy::BearerClass;
use jvpn::proto::path::{ReattachStatus, SwitchReason};
use jvpn::proto::{Core, DropReason, Event, PathConfig, ProtoConfig, UplinkId};

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

/// Runs media for `before`, applies `cut`, runs media for `after`; reports both directions
/// against what was sent.
fn media_across(
    w: &mut World,
    up: bool,
    down: bool,
    before: Duration,
    after: Duration,
    cut: impl FnOnce(&mut World),
) -> MediaReports {
    let mut media = MediaRun::new(w, 0, up, down);
    media.play(w, before);
    cut(w);
    media.play(w, after);
    media.finish(w)
}

/// Asserts a direction's loss and longest silence against a budget.
fn assert_budget(dir: &str, r: &MediaReport, max_lost: usize, max_silence: Duration) {
    assert!(r.sent > 0, "{dir}: nothing was sent");
    assert!(
        r.lost <= max_lost,
        "{dir}: lost {} > {max_lost}: {r:?}",
        r.lost
    );
    assert!(
        r.longest_silence <= max_silence,
        "{dir}: longest silence {:?} > {max_silence:?}: {r:?}",
        r.longest_silence
    );
}

#[test]
fn wifi_link_down_moves_the_session_to_cellular_losing_at_most_one_packet_each_way() {
    let mut w = two_bearers(1, ProtoConfig::default());
    let id = w.laptops[0].core.session().unwrap().id();
    let hs = handshakes(&w);
    let r = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(1),
        |w| w.link_down(0, WIFI),
    );
    assert_budget("uplink", &r.up, 1, Duration::from_millis(60));
    assert_budget("downlink", &r.down, 1, Duration::from_millis(60));
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
        w.gateway.session_views(w.now)[0].endpoint,
        "203.0.113.50:61000".parse().unwrap()
    );
}

#[test]
fn a_downlink_only_stream_resumes_as_fast_as_a_two_way_one() {
    let mut w = two_bearers(2, ProtoConfig::default());
    let r = media_across(
        &mut w,
        false,
        true,
        Duration::from_secs(1),
        Duration::from_secs(1),
        |w| w.link_down(0, WIFI),
    );
    assert_budget("downlink", &r.down, 1, Duration::from_millis(60));
    assert_eq!(r.up.sent, 0);
}

#[test]
fn a_silent_wifi_is_left_within_half_a_second_under_the_voice_policy() {
    let mut w = two_bearers(3, voice());
    let r = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(2),
        |w| w.blackhole(0, WIFI, true),
    );
    // The budget of netns-tests/roam.sh for this case: 500 ms of silence is 25 packets, and
    // one more may be in flight on the dead path.
    assert_budget("uplink", &r.up, 26, Duration::from_millis(500));
    assert_budget("downlink", &r.down, 26, Duration::from_millis(500));
    assert_eq!(switches(&w)[0].2, SwitchReason::HeartbeatTimeout);
}

#[test]
fn a_silent_wifi_is_left_within_three_seconds_under_the_default_policy() {
    let mut w = two_bearers(4, ProtoConfig::default());
    let r = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(5),
        |w| w.blackhole(0, WIFI, true),
    );
    // At most about two seconds lost of the 300 packets sent.
    assert_budget("uplink", &r.up, 110, Duration::from_secs(3));
    assert_budget("downlink", &r.down, 110, Duration::from_secs(3));
}

#[test]
fn wifi_coming_back_is_taken_make_before_break_with_nothing_lost() {
    let mut w = two_bearers(5, ProtoConfig::default());
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    let r = media_across(
        &mut w,
        true,
        true,
        Duration::from_secs(1),
        Duration::from_secs(2),
        |w| w.link_up(0, WIFI),
    );
    assert_budget("uplink", &r.up, 0, Duration::from_millis(60));
    assert_budget("downlink", &r.down, 0, Duration::from_millis(60));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    assert_eq!(
        switches(&w).last().unwrap().2,
        SwitchReason::PreferredAvailable
    );
}

#[test]
fn ten_wifi_flaps_in_two_seconds_stay_within_the_switch_bounds_and_media_flows() {
    let mut w = two_bearers(6, ProtoConfig::default());
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_millis(500));
    for _ in 0..10 {
        w.link_down(0, WIFI);
        media.play(&mut w, Duration::from_millis(100));
        w.link_up(0, WIFI);
        media.play(&mut w, Duration::from_millis(100));
    }
    media.play(&mut w, Duration::from_secs(3));
    let r = media.finish(&mut w);
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
    assert_budget("uplink", &r.up, 1, Duration::from_millis(60));
    assert_budget("downlink", &r.down, 1, Duration::from_millis(60));
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
    let r = media_across(
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
        w.gateway.drop_counts().get(DropReason::Replay) >= 1,
        "the laptop's own reattach arrived second"
    );
    assert_eq!(
        w.gateway.session_views(w.now)[0].endpoint,
        "203.0.113.50:61000".parse().unwrap()
    );
    assert!(w.laptops[0].events.iter().any(|e| matches!(
        e,
        Event::ReattachResult {
            status: ReattachStatus::Accepted,
            ..
        }
    )));
    assert_budget("uplink", &r.up, 3, Duration::from_millis(100));
    assert_budget("downlink", &r.down, 3, Duration::from_millis(100));
}

#[test]
fn a_nat_rebinding_on_cellular_keeps_the_session_and_resends_what_the_old_mapping_swallowed() {
    let mut w = two_bearers(7, ProtoConfig::default());
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(1));
    let r = media_across(
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
    assert_budget("uplink", &r.up, 1, Duration::from_millis(100));
    assert_budget("downlink", &r.down, 0, Duration::from_millis(100));
    let view = &w.gateway.session_views(w.now)[0];
    assert_eq!(view.endpoint, "203.0.113.50:62000".parse().unwrap());
    assert!(view.validated);
}

#[test]
fn a_raced_copy_from_an_attacker_never_holds_the_session() {
    let mut w = two_bearers(8, ProtoConfig::default());
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let mut media = MediaRun::new(&w, 0, true, true);
    for _ in 0..50 {
        // One packet each way; the attacker copies the fresh uplink datagram and gets it
        // there first.
        media.play_with(&mut w, MEDIA_INTERVAL, |w| {
            let gateway = w.gateway_addr;
            let mut copy = w
                .capture
                .iter()
                .rev()
                .find(|d| d.to == gateway)
                .unwrap()
                .clone();
            copy.from = attacker;
            w.inject_at(w.now, copy);
        });
        assert_ne!(
            w.gateway.session_views(w.now)[0].endpoint,
            attacker,
            "never bound to the attacker after a round"
        );
    }
    let r = media.finish(&mut w);
    assert_eq!(r.down.lost, 0, "the laptop keeps its media: {:?}", r.down);
    assert_eq!(
        r.up.lost, 0,
        "the gateway gets the laptop's media: {:?}",
        r.up
    );
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
    MediaRun::new(&w, 0, true, false).play(&mut w, Duration::from_millis(500));
    let laptop = w.gateway.session_views(w.now)[0].endpoint;
    let old: Vec<Datagram> = w
        .capture
        .iter()
        .filter(|d| d.to == w.gateway_addr)
        .cloned()
        .collect();
    let attacker: std::net::SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let replays_before = w.gateway.drop_counts().get(DropReason::Replay);
    for mut d in old.clone() {
        d.from = attacker;
        w.inject_at(w.now, d);
    }
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.gateway.session_views(w.now)[0].endpoint, laptop);
    assert!(
        w.gateway.drop_counts().get(DropReason::Replay) - replays_before >= old.len() as u64 - 2
    );
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
    let r = media_across(
        &mut w,
        true,
        true,
        Duration::from_millis(200),
        Duration::from_millis(800),
        |_| {},
    );
    assert_budget("uplink", &r.up, 0, Duration::from_millis(60));
    assert_budget("downlink", &r.down, 0, Duration::from_millis(60));
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
    assert_eq!(w.gateway.drop_counts().get(DropReason::AuthFailed), 100);
    assert_ne!(w.gateway.session_views(w.now)[0].endpoint, attacker);
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
    let endpoint = w.gateway.session_views(w.now)[0].endpoint;
    let version = w.gateway.session_views(w.now)[0].state_version;
    // ... and releases it much later.
    w.inject_at(w.now, held);
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.gateway.session_views(w.now)[0].endpoint, endpoint);
    assert_eq!(w.gateway.session_views(w.now)[0].state_version, version);
    assert!(
        w.gateway_events.iter().any(|e| matches!(
            e,
            Event::ReattachResult {
                status: ReattachStatus::Rejected(_),
                ..
            }
        )) || w.gateway.drop_counts().get(DropReason::Replay) > 0
    );
}

#[test]
fn the_same_seed_gives_the_same_jumps() {
    let run = |seed| {
        let mut w = two_bearers(seed, voice());
        let mut media = MediaRun::new(&w, 0, true, true);
        media.play(&mut w, Duration::from_millis(300));
        w.blackhole(0, WIFI, true);
        media.play(&mut w, Duration::from_secs(1));
        w.blackhole(0, WIFI, false);
        media.play(&mut w, Duration::from_secs(3));
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
    MediaRun::new(&w, 0, true, true).play(&mut w, Duration::from_secs(4));
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
