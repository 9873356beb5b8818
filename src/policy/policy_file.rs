//! Policy files: the serde mirror of the TOML and its conversion into a validated [`Policy`].
//!
//! The rule enforced here: a policy is used only after every value is in range and every
//! cross-field rule holds. A policy can tune thresholds but never switch off replay protection,
//! versioning or a bound (no bound accepts 0 where 0 would disable it).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::error::{read_text, ConfigError, Origin};
use crate::policy::types::{BearerClass, BearerRule, Policy, RecoveryExpiry};

/// Inclusive ranges of every numeric key, in the key's unit (milliseconds for `*_ms`).
/// `docs/POLICY.md` documents the same table.
pub(crate) const LIMITS: &[(&str, u64, u64)] = &[
    ("session.max_lifetime_ms", 60_000, 604_800_000),
    ("session.transport_lost_ttl_ms", 1_000, 3_600_000),
    ("volatility.heartbeat_interval_ms", 10, 60_000),
    ("volatility.heartbeat_volatile_ms", 20, 600_000),
    ("volatility.loss_window_ms", 20, 600_000),
    ("volatility.max_consecutive_drops", 1, 10_000),
    ("volatility.volatile_to_degraded_ms", 10, 3_600_000),
    ("volatility.latency_threshold_ms", 1, 60_000),
    ("switching.max_switches_per_min", 1, 600),
    ("switching.switch_cooldown_ms", 10, 300_000),
    ("switching.recovery_window_ms", 100, 600_000),
    ("switching.debounce_ms", 1, 10_000),
    ("security.reattach_proof_max_age_ms", 100, 60_000),
    ("security.replay_window_size", 2048, 65_536),
    ("security.max_auth_failures", 1, 100_000),
    ("security.auth_failure_window_ms", 1_000, 86_400_000),
    ("keys.rekey_after_ms", 1_000, 86_400_000),
    ("keys.key_max_age_ms", 2_000, 604_800_000),
    ("keys.rekey_after_packets", 1_024, 1 << 60),
    ("keys.rekey_grace_ms", 10, 60_000),
    ("keys.min_rekey_interval_ms", 100, 3_600_000),
    ("handshake.retry_initial_ms", 10, 60_000),
    ("handshake.retry_max_ms", 10, 300_000),
    ("handshake.timeout_ms", 1_000, 600_000),
    ("handshake.keepalive_ms", 100, 300_000),
    ("bearers.<class>.probe_interval_ms", 100, 600_000),
    ("moving_target.interval_ms", 1_000, 86_400_000),
    ("moving_target.jitter_ms", 0, 3_600_000),
];

const VERSION_RULE: &str = "must be 1 to 64 characters of A-Z a-z 0-9 . _ -";
const CLASS_NAMES: &str = "wired, wifi, cellular, unknown";

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

/// The inclusive range of `key`.
pub(crate) fn limit(key: &str) -> (u64, u64) {
    let lookup = match key.strip_prefix("bearers.") {
        Some(rest) if rest.ends_with(".probe_interval_ms") => "bearers.<class>.probe_interval_ms",
        _ => key,
    };
    LIMITS
        .iter()
        .find(|(k, _, _)| *k == lookup)
        .map(|(_, min, max)| (*min, *max))
        .unwrap_or((0, u64::MAX))
}

/// "must be between MIN and MAX [ms]".
fn range_text(key: &str) -> String {
    let (min, max) = limit(key);
    let unit = if key.ends_with("_ms") { " ms" } else { "" };
    format!("must be between {min} and {max}{unit}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        let mut p = Policy::default();
        p.version = self.version.ok_or_else(|| {
            o.missing(
                "version",
                format!("every policy sets version = \"...\" (reported in every event); it {VERSION_RULE}"),
            )
        })?;
        p.name = self.name;
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

fn preference(o: Origin, names: &[String]) -> Result<[BearerClass; 4], ConfigError> {
    let classes = names
        .iter()
        .enumerate()
        .map(|(i, name)| class_from(o, &format!("bearers.preference[{i}]"), name))
        .collect::<Result<Vec<_>, _>>()?;
    let list = toml::Value::from(names.to_vec()).to_string();
    let all_once = format!("must list each of {CLASS_NAMES} exactly once, most preferred first");
    let array: [BearerClass; 4] = classes
        .try_into()
        .map_err(|_| o.invalid("bearers.preference", &list, all_once.clone()))?;
    if !distinct(&array) {
        return Err(o.invalid("bearers.preference", list, all_once));
    }
    Ok(array)
}

fn distinct(classes: &[BearerClass; 4]) -> bool {
    BearerClass::ALL.iter().all(|c| classes.contains(c))
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

// ---------------------------------------------------------------------------------------------
// Validation of the typed policy: ranges, then rules that tie keys together.

impl Policy {
    pub(crate) fn check(&self, o: Origin) -> Result<(), ConfigError> {
        check_text(o, "version", &self.version, 64, VERSION_RULE, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
        })?;
        if let Some(name) = &self.name {
            let rule = "must be 1 to 64 printable characters";
            check_text(o, "name", name, 64, rule, |c| !c.is_control())?;
        }
        self.check_ranges(o)?;
        self.check_fractions(o)?;
        self.check_bearers(o)?;
        self.check_cross(o)
    }

    fn check_ranges(&self, o: Origin) -> Result<(), ConfigError> {
        let (s, v, w, sec, k, h, m) = (
            &self.session,
            &self.volatility,
            &self.switching,
            &self.security,
            &self.keys,
            &self.handshake,
            &self.moving_target,
        );
        let ms = millis;
        let mut values: Vec<(&str, u64)> = vec![
            ("session.max_lifetime_ms", ms(s.max_lifetime)),
            ("session.transport_lost_ttl_ms", ms(s.transport_lost_ttl)),
            ("volatility.heartbeat_interval_ms", ms(v.heartbeat_interval)),
            ("volatility.heartbeat_volatile_ms", ms(v.heartbeat_volatile)),
            ("volatility.loss_window_ms", ms(v.loss_window)),
            (
                "volatility.max_consecutive_drops",
                v.max_consecutive_drops.into(),
            ),
            (
                "volatility.volatile_to_degraded_ms",
                ms(v.volatile_to_degraded),
            ),
            (
                "switching.max_switches_per_min",
                w.max_switches_per_min.into(),
            ),
            ("switching.switch_cooldown_ms", ms(w.switch_cooldown)),
            ("switching.recovery_window_ms", ms(w.recovery_window)),
            ("switching.debounce_ms", ms(w.debounce)),
            (
                "security.reattach_proof_max_age_ms",
                ms(sec.reattach_proof_max_age),
            ),
            ("security.replay_window_size", sec.replay_window_size.into()),
            ("security.max_auth_failures", sec.max_auth_failures.into()),
            (
                "security.auth_failure_window_ms",
                ms(sec.auth_failure_window),
            ),
            ("keys.rekey_after_ms", ms(k.rekey_after)),
            ("keys.key_max_age_ms", ms(k.key_max_age)),
            ("keys.rekey_after_packets", k.rekey_after_packets),
            ("keys.rekey_grace_ms", ms(k.rekey_grace)),
            ("keys.min_rekey_interval_ms", ms(k.min_rekey_interval)),
            ("handshake.retry_initial_ms", ms(h.retry_initial)),
            ("handshake.retry_max_ms", ms(h.retry_max)),
            ("handshake.timeout_ms", ms(h.timeout)),
            ("handshake.keepalive_ms", ms(h.keepalive)),
            ("moving_target.interval_ms", ms(m.interval)),
            ("moving_target.jitter_ms", ms(m.jitter)),
        ];
        if let Some(latency) = v.latency_threshold {
            values.push(("volatility.latency_threshold_ms", ms(latency)));
        }
        for (key, value) in values {
            let (min, max) = limit(key);
            if !(min..=max).contains(&value) {
                return Err(o.invalid(key, value, range_text(key)));
            }
        }
        for class in BearerClass::ALL {
            let key = format!("bearers.{class}.probe_interval_ms");
            let value = ms(self.bearers.settings(class).probe_interval);
            let (min, max) = limit(&key);
            if !(min..=max).contains(&value) {
                return Err(o.invalid(&key, value, range_text(&key)));
            }
        }
        Ok(())
    }

    fn check_fractions(&self, o: Origin) -> Result<(), ConfigError> {
        let t = self.volatility.loss_volatile_threshold;
        if !(t > 0.0 && t <= 1.0) {
            let key = "volatility.loss_volatile_threshold";
            let shown = toml::Value::Float(t).to_string();
            return Err(o.invalid(
                key,
                shown,
                "must be a fraction greater than 0 and at most 1 (0.2 = 20 % loss)",
            ));
        }
        let size = self.security.replay_window_size;
        if size % 64 != 0 {
            let key = "security.replay_window_size";
            return Err(o.invalid(key, size, "must be a multiple of 64 between 2048 and 65536"));
        }
        Ok(())
    }

    fn check_bearers(&self, o: Origin) -> Result<(), ConfigError> {
        for (i, rule) in self.bearers.rules.iter().enumerate() {
            let key = format!("bearers.rule[{i}].pattern");
            let allowed = "must be 1 to 32 characters of A-Z a-z 0-9 . _ - and the wildcards * ?";
            check_text(o, &key, &rule.pattern, 32, allowed, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')
            })?;
        }
        if !distinct(&self.bearers.preference) {
            let names: Vec<&str> = self.bearers.preference.iter().map(|c| c.as_str()).collect();
            let list = toml::Value::from(names).to_string();
            let allowed =
                format!("must list each of {CLASS_NAMES} exactly once, most preferred first");
            return Err(o.invalid("bearers.preference", list, allowed));
        }
        Ok(())
    }

    fn check_cross(&self, o: Origin) -> Result<(), ConfigError> {
        let (s, v, k, h, m) = (
            &self.session,
            &self.volatility,
            &self.keys,
            &self.handshake,
            &self.moving_target,
        );
        let twice_heartbeat = v.heartbeat_interval * 2;
        let rules = [
            Rule::less(
                "session.transport_lost_ttl_ms",
                s.transport_lost_ttl,
                "session.max_lifetime_ms",
                s.max_lifetime,
            ),
            Rule::at_least(
                "volatility.heartbeat_volatile_ms",
                v.heartbeat_volatile,
                "2 x volatility.heartbeat_interval_ms",
                twice_heartbeat,
            )
            .why("so one lost probe is not an outage"),
            Rule::at_least(
                "volatility.loss_window_ms",
                v.loss_window,
                "2 x volatility.heartbeat_interval_ms",
                twice_heartbeat,
            )
            .why("so a loss fraction has samples"),
            Rule::greater(
                "keys.key_max_age_ms",
                k.key_max_age,
                "keys.rekey_after_ms",
                k.rekey_after,
            )
            .why("so a rekey can finish before the keys expire"),
            Rule::less(
                "keys.key_max_age_ms",
                k.key_max_age,
                "session.max_lifetime_ms",
                s.max_lifetime,
            ),
            Rule::at_most(
                "keys.min_rekey_interval_ms",
                k.min_rekey_interval,
                "keys.rekey_after_ms",
                k.rekey_after,
            ),
            Rule::at_most(
                "keys.rekey_grace_ms",
                k.rekey_grace,
                "keys.min_rekey_interval_ms",
                k.min_rekey_interval,
            )
            .why("so at most two key generations are live"),
            Rule::at_least(
                "handshake.retry_max_ms",
                h.retry_max,
                "handshake.retry_initial_ms",
                h.retry_initial,
            ),
            Rule::at_least(
                "handshake.timeout_ms",
                h.timeout,
                "handshake.retry_max_ms",
                h.retry_max,
            ),
            Rule::less(
                "moving_target.jitter_ms",
                m.jitter,
                "moving_target.interval_ms",
                m.interval,
            ),
        ];
        if let Some(rule) = rules.iter().find(|r| !r.holds()) {
            return Err(rule.error(o));
        }
        self.check_moving_target_budget(o)
    }

    /// Moving target alone must never exhaust the switch budget.
    fn check_moving_target_budget(&self, o: Origin) -> Result<(), ConfigError> {
        let m = &self.moving_target;
        let per_min = u64::from(self.switching.max_switches_per_min.max(1));
        let least_gap = 60_000u64.div_ceil(per_min);
        let gap = millis(m.interval).saturating_sub(millis(m.jitter));
        if gap < least_gap {
            let allowed = format!(
                "minus moving_target.jitter_ms ({}) must be at least {least_gap} \
                 (60000 / switching.max_switches_per_min), so moving alone never hits the switch rate limit",
                millis(m.jitter)
            );
            return Err(o.invalid("moving_target.interval_ms", millis(m.interval), allowed));
        }
        Ok(())
    }
}

/// Checks a string's length (in characters, 1..=max) and characters.
fn check_text(
    o: Origin,
    key: &str,
    value: &str,
    max: usize,
    allowed: &str,
    char_ok: impl Fn(char) -> bool,
) -> Result<(), ConfigError> {
    let len = value.chars().count();
    if len == 0 || len > max || !value.chars().all(char_ok) {
        return Err(o.invalid_str(key, value, allowed));
    }
    Ok(())
}

/// A rule tying `key` to another key: `value <op> bound`.
struct Rule {
    key: &'static str,
    value: Duration,
    op: Op,
    other: &'static str,
    bound: Duration,
    why: &'static str,
}

#[derive(Clone, Copy)]
enum Op {
    Less,
    AtMost,
    Greater,
    AtLeast,
}

impl Rule {
    fn new(
        key: &'static str,
        value: Duration,
        op: Op,
        other: &'static str,
        bound: Duration,
    ) -> Rule {
        Rule {
            key,
            value,
            op,
            other,
            bound,
            why: "",
        }
    }
    fn less(key: &'static str, value: Duration, other: &'static str, bound: Duration) -> Rule {
        Rule::new(key, value, Op::Less, other, bound)
    }
    fn at_most(key: &'static str, value: Duration, other: &'static str, bound: Duration) -> Rule {
        Rule::new(key, value, Op::AtMost, other, bound)
    }
    fn greater(key: &'static str, value: Duration, other: &'static str, bound: Duration) -> Rule {
        Rule::new(key, value, Op::Greater, other, bound)
    }
    fn at_least(key: &'static str, value: Duration, other: &'static str, bound: Duration) -> Rule {
        Rule::new(key, value, Op::AtLeast, other, bound)
    }
    fn why(self, why: &'static str) -> Rule {
        Rule { why, ..self }
    }

    fn holds(&self) -> bool {
        match self.op {
            Op::Less => self.value < self.bound,
            Op::AtMost => self.value <= self.bound,
            Op::Greater => self.value > self.bound,
            Op::AtLeast => self.value >= self.bound,
        }
    }

    fn error(&self, o: Origin) -> ConfigError {
        let op = match self.op {
            Op::Less => "less than",
            Op::AtMost => "at most",
            Op::Greater => "greater than",
            Op::AtLeast => "at least",
        };
        let mut allowed = format!("must be {op} {} ({})", self.other, millis(self.bound));
        if !self.why.is_empty() {
            allowed = format!("{allowed}, {}", self.why);
        }
        o.invalid(self.key, millis(self.value), allowed)
    }
}
