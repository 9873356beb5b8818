//! Simulation ring for rekey and key expiry: rekeys by time and by transport change keep the
//! SessionID and lose nothing under a 50 packets/s stream; a trigger storm is denied, never a
//! loop; keys that cannot be renewed expire explicitly, also in the middle of a recovery.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use jvpn::policy::BearerClass;
use jvpn::proto::rekey::{KeyLimits, RekeyDenial, RekeyTrigger};
use jvpn::proto::state::Reason;
use jvpn::proto::{Core, Event, ProtoConfig};

const WIFI: u32 = 2;
const CELL: u32 = 3;

fn short_keys() -> ProtoConfig {
    ProtoConfig {
        keys: KeyLimits {
            rekey_after: Duration::from_secs(10),
            key_max_age: Duration::from_secs(20),
            min_rekey_interval: Duration::from_secs(5),
            grace: Duration::from_secs(2),
            ..KeyLimits::default()
        },
        ..ProtoConfig::default()
    }
}

fn rotations(events: &[Event]) -> Vec<(u32, RekeyTrigger)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::KeyRotated { epoch, trigger, .. } => Some((*epoch, *trigger)),
            _ => None,
        })
        .collect()
}

/// A RekeyInit is the only 69-byte control datagram (16 header + 37 + 16 tag).
fn is_rekey_init(d: &Datagram) -> bool {
    d.bytes[0] == 5 && d.bytes.len() == 69 && d.to.port() == 51900
}

#[test]
fn rekeys_by_time_keep_the_session_id_and_lose_nothing_under_a_call() {
    let mut w = World::with_config(1, 1, short_keys());
    w.establish();
    let id = w.laptops[0].core.session().unwrap().id();
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(35));
    w.run_for(Duration::from_millis(100));
    let MediaReports { up, down } = media.report(&w);
    // The gateway moves to a new epoch on the first packet under it.
    w.laptop_sends(
        0,
        &ipv4(laptop_inner(0), gateway_inner(), b"after the last rekey"),
    );
    w.run_for(Duration::from_millis(100));
    // About 40 s of session (5 s to establish, 35 s of media): a rekey every 10 s.
    let lap = rotations(&w.laptops[0].events);
    assert_eq!(
        lap.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(lap.iter().all(|r| r.1 == RekeyTrigger::TimeElapsed));
    assert_eq!(
        rotations(&w.gateway_events).len(),
        4,
        "the gateway rotates too"
    );
    assert_eq!(
        w.laptops[0].core.session().unwrap().id(),
        id,
        "same SessionID"
    );
    assert_eq!(w.laptops[0].core.session().unwrap().epoch(), 4);
    assert_eq!(up.lost, 0, "no uplink packet lost: {up:?}");
    assert_eq!(down.lost, 0, "no downlink packet lost: {down:?}");
}

#[test]
fn a_jump_triggers_a_rekey_by_transport_change() {
    let mut w = World::with_config(1, 2, short_keys());
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", "192.0.2.10:40000"),
            (CELL, BearerClass::Cellular, "wwan0", "203.0.113.50:61000"),
        ],
    );
    w.establish();
    w.run_for(Duration::from_secs(1));
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        rotations(&w.laptops[0].events),
        vec![(1, RekeyTrigger::TransportChange)]
    );
}

#[test]
fn a_storm_of_rekey_triggers_is_denied_not_looped() {
    let mut w = World::with_config(1, 3, short_keys());
    w.establish();
    w.run_for(Duration::from_secs(1));
    for _ in 0..50 {
        let now = w.now;
        w.laptops[0]
            .core
            .start_rekey(RekeyTrigger::PolicyTrigger, now);
        w.run_for(Duration::from_millis(10));
    }
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        rotations(&w.laptops[0].events),
        vec![(1, RekeyTrigger::PolicyTrigger)],
        "one rekey"
    );
    let denied = w.laptops[0]
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::RekeyDenied {
                    reason: RekeyDenial::RateLimited | RekeyDenial::InProgress,
                    ..
                }
            )
        })
        .count();
    assert_eq!(denied, 49);
}

#[test]
fn keys_that_cannot_be_renewed_expire_explicitly_and_a_new_session_follows() {
    let mut w = World::with_config(1, 4, short_keys());
    w.drop_if = Some(Box::new(is_rekey_init));
    w.establish();
    let first = w.laptops[0].core.session().unwrap().id();
    w.run_for(Duration::from_secs(21));
    let lap = &w.laptops[0].events;
    assert!(lap.iter().any(|e| matches!(
        e,
        Event::RekeyDenied {
            reason: RekeyDenial::NoResponse,
            ..
        }
    )));
    assert!(lap
        .iter()
        .any(|e| matches!(e, Event::KeyExpired { session_id, .. } if *session_id == first)));
    assert!(lap.iter().any(|e| matches!(
        e,
        Event::SessionTerminated { session_id, reason: Reason::KeyExpired, .. } if *session_id == first
    )));
    let now_id = w.laptops[0].core.session().expect("a new session").id();
    assert_ne!(now_id, first);
}

#[test]
fn keys_expiring_in_the_middle_of_a_recovery_end_the_session() {
    let mut w = World::with_config(1, 5, short_keys());
    w.drop_if = Some(Box::new(is_rekey_init));
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", "192.0.2.10:40000"),
            (CELL, BearerClass::Cellular, "wwan0", "203.0.113.50:61000"),
        ],
    );
    w.establish();
    let first = w.laptops[0].core.session().unwrap().id();
    w.run_for(Duration::from_secs(15));
    // Recovering from t=15 s (the cellular path is dead too); keys expire at 20 s.
    w.blackhole(0, CELL, true);
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(6));
    let ended: Vec<Reason> = w.laptops[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionTerminated {
                session_id, reason, ..
            } if *session_id == first => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![Reason::KeyExpired]);
}

#[test]
fn a_reloaded_policy_with_new_key_limits_rotates_the_keys_by_policy_trigger() {
    let mut w = World::with_config(1, 6, short_keys());
    w.establish();
    w.run_for(Duration::from_secs(1));
    let mut reloaded = short_keys();
    reloaded.keys.rekey_after = Duration::from_secs(8);
    let now = w.now;
    w.laptops[0].core.set_proto(reloaded.clone(), now);
    w.run_for(Duration::from_millis(100));
    assert_eq!(
        rotations(&w.laptops[0].events),
        vec![(1, RekeyTrigger::PolicyTrigger)]
    );
    // The same policy again changes nothing.
    let now = w.now;
    w.laptops[0].core.set_proto(reloaded, now);
    w.run_for(Duration::from_millis(100));
    assert_eq!(rotations(&w.laptops[0].events).len(), 1);
}
