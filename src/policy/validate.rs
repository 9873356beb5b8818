//! Validation of a typed [`Policy`]: every value in its range, then the rules that tie keys
//! together. A policy can tune thresholds but never switch off replay protection, versioning or
//! a bound: no range admits a value (such as 0) that would disable its limit.

use std::time::Duration;

use crate::policy::error::{ConfigError, Origin};
use crate::policy::types::{BearerClass, Policy};

pub(crate) const VERSION_RULE: &str = "must be 1 to 64 characters of A-Z a-z 0-9 . _ -";
pub(crate) const CLASS_NAMES: &str = "wired, wifi, cellular, unknown";

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
pub(crate) fn range_text(key: &str) -> String {
    let (min, max) = limit(key);
    let unit = if key.ends_with("_ms") { " ms" } else { "" };
    format!("must be between {min} and {max}{unit}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        for (key, value) in self.ranged_values() {
            let (min, max) = limit(key);
            if !(min..=max).contains(&value) {
                return Err(o.invalid(key, value, range_text(key)));
            }
        }
        for class in BearerClass::ALL {
            let key = format!("bearers.{class}.probe_interval_ms");
            let value = millis(self.bearers.settings(class).probe_interval);
            let (min, max) = limit(&key);
            if !(min..=max).contains(&value) {
                return Err(o.invalid(&key, value, range_text(&key)));
            }
        }
        Ok(())
    }

    /// Every scalar key that has a range in `limit`, with its value in the unit of its name.
    fn ranged_values(&self) -> Vec<(&'static str, u64)> {
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
        let mut values: Vec<(&'static str, u64)> = vec![
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
        values
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
        let rules = (self.liveness_rules().into_iter())
            .chain(self.key_rules())
            .chain(self.retry_rules());
        if let Some(rule) = rules.into_iter().find(|r| !r.holds()) {
            return Err(rule.error(o));
        }
        self.check_moving_target_budget(o)
    }

    /// How the session and volatility durations must relate.
    fn liveness_rules(&self) -> [Rule; 3] {
        let (s, v) = (&self.session, &self.volatility);
        let twice_heartbeat = v.heartbeat_interval * 2;
        [
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
        ]
    }

    /// How the handshake retries and the moving target's jitter must relate.
    fn retry_rules(&self) -> [Rule; 3] {
        let (h, m) = (&self.handshake, &self.moving_target);
        [
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
        ]
    }

    /// How the key lifetimes must relate to each other and to the session's.
    fn key_rules(&self) -> [Rule; 4] {
        let (s, k) = (&self.session, &self.keys);
        [
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
        ]
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

fn distinct(classes: &[BearerClass; 4]) -> bool {
    BearerClass::ALL.iter().all(|c| classes.contains(c))
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
