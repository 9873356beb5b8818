//! Policy files: the serde mirror of the TOML and its conversion into a validated [`Policy`].
//!
//! The rule enforced here: a policy is used only after every value is in range and every
//! cross-field rule holds (`validate.rs`). Absent keys take the defaults of [`Policy::default`];
//! unknown keys and wrong types are refused with their key path and line.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::error::{read_text, ConfigError, Origin};
use crate::policy::types::{BearerClass, BearerRule, Policy, RecoveryExpiry};
use crate::policy::validate::{range_text, CLASS_NAMES, VERSION_RULE};

impl Policy {
    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, ConfigError> {
        Policy::from_toml_str(&read_text(path)?, path)
    }

    /// Parses and validates policy text; `origin` names the file in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Policy, ConfigError> {
        let origin = Origin::new(origin);
        origin.parse_table(text)?;
        let raw: RawPolicy = origin.deserialize(text)?;
        let policy = raw.into_policy(origin)?;
        policy.check(origin)?;
        Ok(policy)
    }

    /// Checks every range and cross-field rule of a policy built in code. Errors name the file
    /// as `(in-memory policy)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(Origin::new(Path::new("(in-memory policy)")))
    }
}

// ---------------------------------------------------------------------------------------------
// The serde mirror: every key optional, unknown keys refused. Integers are read as i64 (what
// TOML has) so that a negative value is reported with its allowed range, like any other.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPolicy {
    version: Option<String>,
    name: Option<String>,
    session: RawSession,
    volatility: RawVolatility,
    switching: RawSwitching,
    security: RawSecurity,
    keys: RawKeys,
    handshake: RawHandshake,
    bearers: RawBearers,
    moving_target: RawMovingTarget,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSession {
    max_lifetime_ms: Option<i64>,
    transport_lost_ttl_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawVolatility {
    heartbeat_interval_ms: Option<i64>,
    heartbeat_volatile_ms: Option<i64>,
    loss_window_ms: Option<i64>,
    loss_volatile_threshold: Option<f64>,
    max_consecutive_drops: Option<i64>,
    volatile_to_degraded_ms: Option<i64>,
    latency_threshold_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSwitching {
    max_switches_per_min: Option<i64>,
    switch_cooldown_ms: Option<i64>,
    recovery_window_ms: Option<i64>,
    debounce_ms: Option<i64>,
    on_recovery_expiry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    reattach_proof_max_age_ms: Option<i64>,
    replay_window_size: Option<i64>,
    max_auth_failures: Option<i64>,
    auth_failure_window_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawKeys {
    rekey_after_ms: Option<i64>,
    key_max_age_ms: Option<i64>,
    rekey_after_packets: Option<i64>,
    rekey_grace_ms: Option<i64>,
    min_rekey_interval_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawHandshake {
    retry_initial_ms: Option<i64>,
    retry_max_ms: Option<i64>,
    timeout_ms: Option<i64>,
    keepalive_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawBearers {
    preference: Option<Vec<String>>,
    rule: Option<Vec<RawRule>>,
    wired: RawClassSettings,
    wifi: RawClassSettings,
    cellular: RawClassSettings,
    unknown: RawClassSettings,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRule {
    pattern: Option<String>,
    class: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawClassSettings {
    metered: Option<bool>,
    probe_interval_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMovingTarget {
    enabled: Option<bool>,
    interval_ms: Option<i64>,
    jitter_ms: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Conversion: defaults for absent keys, types checked; ranges are checked afterwards by `check`.

/// Converts an integer that must fit `T` (unsigned); otherwise reports the key's range.
fn int<T: TryFrom<i64>>(o: Origin, key: &str, v: i64) -> Result<T, ConfigError> {
    T::try_from(v).map_err(|_| o.invalid(key, v, range_text(key)))
}

fn set_ms(
    o: Origin,
    key: &str,
    raw: Option<i64>,
    target: &mut Duration,
) -> Result<(), ConfigError> {
    if let Some(v) = raw {
        *target = Duration::from_millis(int(o, key, v)?);
    }
    Ok(())
}

fn set_int<T: TryFrom<i64>>(
    o: Origin,
    key: &str,
    raw: Option<i64>,
    target: &mut T,
) -> Result<(), ConfigError> {
    if let Some(v) = raw {
        *target = int(o, key, v)?;
    }
    Ok(())
}

impl RawPolicy {
    fn into_policy(self, o: Origin) -> Result<Policy, ConfigError> {
        let version = self.version.ok_or_else(|| {
            let what = "every policy sets version = \"...\" (reported in every event); it";
            o.missing("version", format!("{what} {VERSION_RULE}"))
        })?;
        let mut p = Policy {
            version,
            name: self.name,
            ..Policy::default()
        };
        self.session.apply(o, &mut p)?;
        self.volatility.apply(o, &mut p)?;
        self.switching.apply(o, &mut p)?;
        self.security.apply(o, &mut p)?;
        self.keys.apply(o, &mut p)?;
        self.handshake.apply(o, &mut p)?;
        self.bearers.apply(o, &mut p)?;
        self.moving_target.apply(o, &mut p)?;
        Ok(p)
    }
}

impl RawSession {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let s = &mut p.session;
        set_ms(
            o,
            "session.max_lifetime_ms",
            self.max_lifetime_ms,
            &mut s.max_lifetime,
        )?;
        set_ms(
            o,
            "session.transport_lost_ttl_ms",
            self.transport_lost_ttl_ms,
            &mut s.transport_lost_ttl,
        )
    }
}

impl RawVolatility {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let v = &mut p.volatility;
        set_ms(
            o,
            "volatility.heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            &mut v.heartbeat_interval,
        )?;
        set_ms(
            o,
            "volatility.heartbeat_volatile_ms",
            self.heartbeat_volatile_ms,
            &mut v.heartbeat_volatile,
        )?;
        set_ms(
            o,
            "volatility.loss_window_ms",
            self.loss_window_ms,
            &mut v.loss_window,
        )?;
        if let Some(t) = self.loss_volatile_threshold {
            v.loss_volatile_threshold = t;
        }
        set_int(
            o,
            "volatility.max_consecutive_drops",
            self.max_consecutive_drops,
            &mut v.max_consecutive_drops,
        )?;
        set_ms(
            o,
            "volatility.volatile_to_degraded_ms",
            self.volatile_to_degraded_ms,
            &mut v.volatile_to_degraded,
        )?;
        if let Some(raw) = self.latency_threshold_ms {
            let ms = int(o, "volatility.latency_threshold_ms", raw)?;
            v.latency_threshold = Some(Duration::from_millis(ms));
        }
        Ok(())
    }
}

impl RawSwitching {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let s = &mut p.switching;
        set_int(
            o,
            "switching.max_switches_per_min",
            self.max_switches_per_min,
            &mut s.max_switches_per_min,
        )?;
        set_ms(
            o,
            "switching.switch_cooldown_ms",
            self.switch_cooldown_ms,
            &mut s.switch_cooldown,
        )?;
        set_ms(
            o,
            "switching.recovery_window_ms",
            self.recovery_window_ms,
            &mut s.recovery_window,
        )?;
        set_ms(
            o,
            "switching.debounce_ms",
            self.debounce_ms,
            &mut s.debounce,
        )?;
        if let Some(action) = self.on_recovery_expiry {
            s.on_recovery_expiry = match action.as_str() {
                "degraded" => RecoveryExpiry::Degraded,
                "terminated" => RecoveryExpiry::Terminated,
                _ => {
                    let key = "switching.on_recovery_expiry";
                    return Err(o.invalid_str(
                        key,
                        &action,
                        "must be \"degraded\" or \"terminated\"",
                    ));
                }
            };
        }
        Ok(())
    }
}

impl RawSecurity {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let s = &mut p.security;
        set_ms(
            o,
            "security.reattach_proof_max_age_ms",
            self.reattach_proof_max_age_ms,
            &mut s.reattach_proof_max_age,
        )?;
        set_int(
            o,
            "security.replay_window_size",
            self.replay_window_size,
            &mut s.replay_window_size,
        )?;
        set_int(
            o,
            "security.max_auth_failures",
            self.max_auth_failures,
            &mut s.max_auth_failures,
        )?;
        set_ms(
            o,
            "security.auth_failure_window_ms",
            self.auth_failure_window_ms,
            &mut s.auth_failure_window,
        )
    }
}

impl RawKeys {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let k = &mut p.keys;
        set_ms(
            o,
            "keys.rekey_after_ms",
            self.rekey_after_ms,
            &mut k.rekey_after,
        )?;
        set_ms(
            o,
            "keys.key_max_age_ms",
            self.key_max_age_ms,
            &mut k.key_max_age,
        )?;
        set_int(
            o,
            "keys.rekey_after_packets",
            self.rekey_after_packets,
            &mut k.rekey_after_packets,
        )?;
        set_ms(
            o,
            "keys.rekey_grace_ms",
            self.rekey_grace_ms,
            &mut k.rekey_grace,
        )?;
        set_ms(
            o,
            "keys.min_rekey_interval_ms",
            self.min_rekey_interval_ms,
            &mut k.min_rekey_interval,
        )
    }
}

impl RawHandshake {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let h = &mut p.handshake;
        set_ms(
            o,
            "handshake.retry_initial_ms",
            self.retry_initial_ms,
            &mut h.retry_initial,
        )?;
        set_ms(
            o,
            "handshake.retry_max_ms",
            self.retry_max_ms,
            &mut h.retry_max,
        )?;
        set_ms(o, "handshake.timeout_ms", self.timeout_ms, &mut h.timeout)?;
        set_ms(
            o,
            "handshake.keepalive_ms",
            self.keepalive_ms,
            &mut h.keepalive,
        )
    }
}

impl RawBearers {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let b = &mut p.bearers;
        if let Some(names) = self.preference {
            b.preference = preference(o, &names)?;
        }
        if let Some(rules) = self.rule {
            b.rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.into_rule(o, i))
                .collect::<Result<_, _>>()?;
        }
        let classes = [self.wired, self.wifi, self.cellular, self.unknown];
        for (class, raw) in BearerClass::ALL.into_iter().zip(classes) {
            let settings = b.settings_mut(class);
            if let Some(metered) = raw.metered {
                settings.metered = metered;
            }
            let key = format!("bearers.{class}.probe_interval_ms");
            set_ms(o, &key, raw.probe_interval_ms, &mut settings.probe_interval)?;
        }
        Ok(())
    }
}

fn class_from(o: Origin, key: &str, name: &str) -> Result<BearerClass, ConfigError> {
    name.parse()
        .map_err(|()| o.invalid_str(key, name, format!("must be one of {CLASS_NAMES}")))
}

/// The preference list: class names, four of them (that each appears once is checked with the
/// other rules).
fn preference(o: Origin, names: &[String]) -> Result<[BearerClass; 4], ConfigError> {
    let classes = names
        .iter()
        .enumerate()
        .map(|(i, name)| class_from(o, &format!("bearers.preference[{i}]"), name))
        .collect::<Result<Vec<_>, _>>()?;
    classes.try_into().map_err(|_| {
        let list = toml::Value::from(names.to_vec()).to_string();
        let allowed = format!("must list each of {CLASS_NAMES} exactly once, most preferred first");
        o.invalid("bearers.preference", list, allowed)
    })
}

impl RawRule {
    fn into_rule(self, o: Origin, index: usize) -> Result<BearerRule, ConfigError> {
        let key = format!("bearers.rule[{index}]");
        let pattern = self.pattern.ok_or_else(|| {
            o.missing(
                &format!("{key}.pattern"),
                "each rule needs pattern = \"GLOB\", e.g. \"wl*\"",
            )
        })?;
        let class = self.class.ok_or_else(|| {
            o.missing(
                &format!("{key}.class"),
                format!("each rule needs class = one of {CLASS_NAMES}"),
            )
        })?;
        let class = class_from(o, &format!("{key}.class"), &class)?;
        Ok(BearerRule { pattern, class })
    }
}

impl RawMovingTarget {
    fn apply(self, o: Origin, p: &mut Policy) -> Result<(), ConfigError> {
        let m = &mut p.moving_target;
        if let Some(enabled) = self.enabled {
            m.enabled = enabled;
        }
        set_ms(
            o,
            "moving_target.interval_ms",
            self.interval_ms,
            &mut m.interval,
        )?;
        set_ms(o, "moving_target.jitter_ms", self.jitter_ms, &mut m.jitter)
    }
}
