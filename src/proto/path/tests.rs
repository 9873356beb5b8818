//! The path manager alone, on exact deadlines: for each timer, `poll_timeout` names the instant
//! and the [`Timer`] the `PathConfig` values give, nothing happens just before it, and exactly
//! the expected actions happen at it.
// Instant::now() is a test's epoch, nothing more.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use super::*;

const WIFI: UplinkId = UplinkId(2);
const CELL: UplinkId = UplinkId(3);
const ETH: UplinkId = UplinkId(4);
const JUST: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn uplink(id: UplinkId, class: BearerClass, rank: usize) -> Uplink {
    Uplink {
        id,
        name: format!("if{}", id.0),
        class,
        rank,
    }
}

fn wifi() -> Uplink {
    uplink(WIFI, BearerClass::Wifi, 1)
}

fn cell() -> Uplink {
    uplink(CELL, BearerClass::Cellular, 2)
}

fn eth() -> Uplink {
    uplink(ETH, BearerClass::Wired, 0)
}

/// Probes so rare (10 s, silence after 30 s) that only the timer under test is due.
fn quiet() -> PathConfig {
    PathConfig {
        heartbeat_interval: ms(10_000),
        heartbeat_volatile: ms(30_000),
        debounce: ms(250),
        switch_cooldown: ms(1500),
        max_switches_per_min: 8,
        recovery_window: ms(8000),
        reattach_retry: ms(250),
        standby_probe: [
            (BearerClass::Wired, ms(10_000)),
            (BearerClass::Wifi, ms(10_000)),
            (BearerClass::Cellular, ms(10_000)),
        ]
        .into_iter()
        .collect(),
        ..PathConfig::default()
    }
}

/// A live manager on Wi-Fi with cellular on standby, both reported at `t0`; the standby's
/// first probe (due at once) is already sent.
fn live(cfg: PathConfig, t0: Instant) -> PathManager {
    let mut p = PathManager::new(cfg, t0);
    let mut out = Vec::new();
    p.set_uplinks(vec![wifi(), cell()], t0, &mut out);
    p.set_live(true, t0);
    assert_eq!(out, []);
    assert_eq!(p.active(), WIFI);
    assert_eq!(p.poll_timeout(), Some((t0, Timer::Probe)));
    assert_eq!(tick(&mut p, t0), [PathAction::Probe { via: CELL, seq: 1 }]);
    p
}

fn tick(p: &mut PathManager, now: Instant) -> Vec<PathAction> {
    let mut out = Vec::new();
    p.on_timeout(now, &mut out);
    out
}

fn report(p: &mut PathManager, snapshot: Vec<Uplink>, now: Instant) -> Vec<PathAction> {
    let mut out = Vec::new();
    p.set_uplinks(snapshot, now, &mut out);
    out
}

fn jump(to: BearerClass, via: UplinkId, seq: u32, reason: SwitchReason) -> [PathAction; 2] {
    [
        PathAction::Attempt {
            to,
            attempt: 1,
            make_before_break: false,
            reason,
        },
        PathAction::Reattach {
            via,
            seq,
            old_path_alive: false,
        },
    ]
}

#[test]
fn bearer_changes_after_an_applied_one_wait_for_the_debounce() {
    let t0 = Instant::now();
    let mut p = live(quiet(), t0);
    // A wired uplink appears 100 ms after the last applied snapshot: held until t0 + 250 ms.
    assert_eq!(
        report(&mut p, vec![wifi(), cell(), eth()], t0 + ms(100)),
        []
    );
    assert_eq!(p.poll_timeout(), Some((t0 + ms(250), Timer::Reevaluate)));
    assert_eq!(tick(&mut p, t0 + ms(250) - JUST), []);
    assert_eq!(
        p.uplinks().count(),
        2,
        "not applied just before the deadline"
    );
    // Applied at the deadline, and the new uplink is probed at once.
    assert_eq!(
        tick(&mut p, t0 + ms(250)),
        [PathAction::Probe { via: ETH, seq: 2 }]
    );
    assert_eq!(p.uplinks().count(), 3);
    // Applying it starts a new debounce, and the wired uplink's hold-down (next test).
    assert_eq!(
        p.poll_timeout(),
        Some((t0 + ms(250) + ms(1500), Timer::Reevaluate))
    );
}

#[test]
fn losing_the_active_uplink_is_acted_on_at_once_inside_the_debounce() {
    let t0 = Instant::now();
    let mut p = live(quiet(), t0);
    let t1 = t0 + ms(100);
    assert_eq!(
        report(&mut p, vec![cell()], t1),
        jump(BearerClass::Cellular, CELL, 2, SwitchReason::TransportDead)
    );
    assert_eq!(
        p.active(),
        CELL,
        "break-before-make: data goes the new way at once"
    );
    // The reattach is resent every `reattach_retry`.
    assert_eq!(p.poll_timeout(), Some((t1 + ms(250), Timer::Reattach)));
    assert_eq!(tick(&mut p, t1 + ms(250) - JUST), []);
    assert_eq!(
        tick(&mut p, t1 + ms(250)),
        [PathAction::Reattach {
            via: CELL,
            seq: 2,
            old_path_alive: false
        }]
    );
}

#[test]
fn a_returning_preferred_bearer_is_held_down_for_the_switch_cooldown() {
    let t0 = Instant::now();
    let mut p = live(quiet(), t0);
    // Wired appears after the debounce: applied at once, but only preferred once it has been
    // present for `switch_cooldown` (flapping never moves the session).
    let t1 = t0 + ms(300);
    assert_eq!(report(&mut p, vec![wifi(), cell(), eth()], t1), []);
    assert_eq!(p.poll_timeout(), Some((t1, Timer::Probe)));
    assert_eq!(tick(&mut p, t1), [PathAction::Probe { via: ETH, seq: 2 }]);
    assert_eq!(p.poll_timeout(), Some((t1 + ms(1500), Timer::Reevaluate)));
    assert_eq!(tick(&mut p, t1 + ms(1500) - JUST), []);
    assert_eq!(p.active(), WIFI);
    assert_eq!(
        tick(&mut p, t1 + ms(1500)),
        [
            PathAction::Attempt {
                to: BearerClass::Wired,
                attempt: 1,
                make_before_break: true,
                reason: SwitchReason::PreferredAvailable,
            },
            PathAction::Reattach {
                via: ETH,
                seq: 3,
                old_path_alive: true,
            },
        ]
    );
    assert_eq!(
        p.active(),
        WIFI,
        "make-before-break: the old path carries on"
    );
}

#[test]
fn a_switch_inside_the_cooldown_is_denied_and_retried_exactly_when_it_ends() {
    let t0 = Instant::now();
    let mut p = live(quiet(), t0);
    let t1 = t0 + ms(100);
    report(&mut p, vec![cell()], t1);
    let mut out = Vec::new();
    p.on_reattach_ack(2, 4, t1 + ms(20), &mut out);
    assert_eq!(p.active(), CELL);
    // 200 ms after the first attempt cellular dies too and Wi-Fi is back.
    let t2 = t1 + ms(200);
    assert_eq!(
        report(&mut p, vec![wifi()], t2),
        [PathAction::Denied {
            reason: DenyReason::CooldownActive,
            dead: Some(SwitchReason::TransportDead),
        }]
    );
    // The returning Wi-Fi is probed at once; the retry is due when the cooldown ends.
    assert_eq!(p.poll_timeout(), Some((t2, Timer::Probe)));
    assert_eq!(tick(&mut p, t2), [PathAction::Probe { via: WIFI, seq: 3 }]);
    assert_eq!(p.poll_timeout(), Some((t1 + ms(1500), Timer::Reevaluate)));
    assert_eq!(tick(&mut p, t1 + ms(1500) - JUST), []);
    assert_eq!(
        tick(&mut p, t1 + ms(1500)),
        jump(BearerClass::Wifi, WIFI, 4, SwitchReason::TransportDead)
    );
}

#[test]
fn a_reattach_never_answered_is_given_up_at_the_recovery_window() {
    let t0 = Instant::now();
    let mut p = live(quiet(), t0);
    let t1 = t0 + ms(100);
    report(&mut p, vec![cell()], t1);
    // Resent at every `reattach_retry` up to the last one before the window ends.
    let mut resends = 0;
    while let Some((at, Timer::Reattach)) = p.poll_timeout() {
        if at == t1 + ms(8000) {
            break;
        }
        assert_eq!(at, t1 + ms(250) * (resends + 1));
        assert_eq!(tick(&mut p, at).len(), 1);
        resends += 1;
    }
    assert_eq!(resends, 31);
    assert_eq!(p.poll_timeout(), Some((t1 + ms(8000), Timer::Reattach)));
    assert_eq!(tick(&mut p, t1 + ms(8000) - JUST), []);
    let out = tick(&mut p, t1 + ms(8000));
    assert_eq!(
        out[0],
        PathAction::Result {
            status: ReattachStatus::TimedOut,
            make_before_break: false,
            via: CELL,
        }
    );
    // Cellular is the only uplink left: the session tries it again, as a fresh attempt.
    assert_eq!(
        out[1..],
        jump(BearerClass::Cellular, CELL, 3, SwitchReason::TransportDead)
    );
}

#[test]
fn the_active_path_is_probed_a_heartbeat_after_the_last_thing_heard_or_sent() {
    let cfg = PathConfig {
        heartbeat_interval: ms(500),
        ..quiet()
    };
    let t0 = Instant::now();
    let mut p = live(cfg, t0);
    assert_eq!(p.poll_timeout(), Some((t0 + ms(500), Timer::Probe)));
    assert_eq!(tick(&mut p, t0 + ms(500) - JUST), []);
    let probe = |seq| [PathAction::Probe { via: WIFI, seq }];
    assert_eq!(tick(&mut p, t0 + ms(500)), probe(2));
    assert_eq!(p.poll_timeout(), Some((t0 + ms(1000), Timer::Probe)));
    // Something heard at 700 ms moves the next probe to 1200 ms.
    p.on_authenticated(WIFI, t0 + ms(700));
    assert_eq!(p.poll_timeout(), Some((t0 + ms(1200), Timer::Probe)));
    assert_eq!(tick(&mut p, t0 + ms(1200) - JUST), []);
    assert_eq!(tick(&mut p, t0 + ms(1200)), probe(3));
}

#[test]
fn standby_uplinks_are_probed_at_their_class_interval() {
    let mut cfg = quiet();
    cfg.standby_probe.insert(BearerClass::Cellular, ms(5000));
    let t0 = Instant::now();
    let mut p = live(cfg, t0);
    assert_eq!(p.poll_timeout(), Some((t0 + ms(5000), Timer::Probe)));
    assert_eq!(tick(&mut p, t0 + ms(5000) - JUST), []);
    assert_eq!(
        tick(&mut p, t0 + ms(5000)),
        [PathAction::Probe { via: CELL, seq: 2 }]
    );
    assert_eq!(p.poll_timeout(), Some((t0 + ms(10_000), Timer::Probe)));
}

#[test]
fn a_silent_active_path_is_left_at_the_heartbeat_timeout() {
    let cfg = PathConfig {
        heartbeat_volatile: ms(2000),
        ..quiet()
    };
    let t0 = Instant::now();
    let mut p = live(cfg, t0);
    p.on_authenticated(WIFI, t0 + ms(300));
    assert_eq!(p.poll_timeout(), Some((t0 + ms(2300), Timer::PathSilent)));
    assert_eq!(tick(&mut p, t0 + ms(2300) - JUST), []);
    assert_eq!(
        tick(&mut p, t0 + ms(2300)),
        jump(
            BearerClass::Cellular,
            CELL,
            2,
            SwitchReason::HeartbeatTimeout
        )
    );
}
