//! The policy → core configuration conversion: the only place that turns policy values into
//! the core's timing and limits (`ProtoConfig`). Derived values (silence before a session is
//! replaced, reattach retry, validation timeout) are computed here and documented in
//! `docs/POLICY.md`.

use std::time::Duration;

use super::{BearerClass, Policy, RecoveryExpiry};
use crate::proto::lifecycle::LifecycleConfig;
use crate::proto::rekey::KeyLimits;
use crate::proto::{PathConfig, ProtoConfig};

/// The core's timing and limits, from the policy. See `docs/POLICY.md` for the derivations.
pub fn proto_config(policy: &Policy) -> ProtoConfig {
    let h = &policy.handshake;
    let peer_silent_after = h.keepalive * 3 + Duration::from_secs(5);
    ProtoConfig {
        handshake_retry_initial: h.retry_initial,
        handshake_retry_max: h.retry_max,
        handshake_timeout: h.timeout,
        keepalive: h.keepalive,
        peer_silent_after,
        replay_window_bits: policy.security.replay_window_size as usize,
        initiation_min_interval: Duration::from_millis(20),
        paths: path_config(policy),
        lifecycle: LifecycleConfig {
            max_lifetime: policy.session.max_lifetime,
            transport_lost_ttl: policy.session.transport_lost_ttl,
            volatile_to_degraded: policy.volatility.volatile_to_degraded,
            terminate_on_recovery_expiry: policy.switching.on_recovery_expiry
                == RecoveryExpiry::Terminated,
        },
        keys: KeyLimits {
            rekey_after: policy.keys.rekey_after,
            rekey_after_packets: policy.keys.rekey_after_packets,
            key_max_age: policy.keys.key_max_age,
            grace: policy.keys.rekey_grace,
            min_rekey_interval: policy.keys.min_rekey_interval,
            on_transport_change: true,
        },
    }
}

/// Path timing and bounds from the policy.
fn path_config(policy: &Policy) -> PathConfig {
    let v = &policy.volatility;
    let sw = &policy.switching;
    let b = &policy.bearers;
    PathConfig {
        heartbeat_interval: v.heartbeat_interval,
        heartbeat_volatile: v.heartbeat_volatile,
        max_consecutive_drops: v.max_consecutive_drops,
        loss_window: v.loss_window,
        loss_threshold: v.loss_volatile_threshold,
        debounce: sw.debounce,
        max_switches_per_min: sw.max_switches_per_min,
        switch_cooldown: sw.switch_cooldown,
        recovery_window: sw.recovery_window,
        reattach_retry: (v.heartbeat_interval / 2).max(Duration::from_millis(50)),
        reattach_proof_max_age: policy.security.reattach_proof_max_age,
        validation_timeout: (sw.recovery_window / 4).max(Duration::from_millis(200)),
        standby_probe: BearerClass::ALL
            .into_iter()
            .map(|c| (c, b.settings(c).probe_interval))
            .collect(),
        max_auth_failures: policy.security.max_auth_failures,
        auth_failure_window: policy.security.auth_failure_window,
        moving_target: policy
            .moving_target
            .enabled
            .then_some((policy.moving_target.interval, policy.moving_target.jitter)),
    }
}
