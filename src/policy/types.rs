//! The validated policy: plain data, every `*_ms` key as a [`Duration`].
//!
//! A [`Policy`] value that came out of [`Policy::from_file`](crate::policy::Policy::from_file)
//! has passed every range and cross-field rule; one built in code can be checked with
//! [`Policy::validate`](crate::policy::Policy::validate). `Policy::default()` is exactly the
//! shipped `policy/default.toml`.

use std::time::Duration;

pub use crate::proto::bearer::BearerClass;

/// Everything a session's behaviour may be tuned by. See `docs/POLICY.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Reported in every event as `policy_version`.
    pub version: String,
    /// A human label; not used for decisions.
    pub name: Option<String>,
    /// `[session]`.
    pub session: SessionPolicy,
    /// `[volatility]`.
    pub volatility: VolatilityPolicy,
    /// `[switching]`.
    pub switching: SwitchingPolicy,
    /// `[security]`.
    pub security: SecurityPolicy,
    /// `[keys]`.
    pub keys: KeyPolicy,
    /// `[handshake]`.
    pub handshake: HandshakePolicy,
    /// `[bearers]`.
    pub bearers: BearerPolicy,
    /// `[moving_target]`.
    pub moving_target: MovingTargetPolicy,
}

/// `[session]`: the absolute bounds of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// `max_lifetime_ms`: the session ends (`session_lifetime_exceeded`) after this long.
    pub max_lifetime: Duration,
    /// `transport_lost_ttl_ms`: with no usable bearer for this long the session ends
    /// (`transport_ttl_exceeded`).
    pub transport_lost_ttl: Duration,
}

/// `[volatility]`: when an attached session counts as unstable.
#[derive(Debug, Clone, PartialEq)]
pub struct VolatilityPolicy {
    /// `heartbeat_interval_ms`: liveness probe cadence on the active path.
    pub heartbeat_interval: Duration,
    /// `heartbeat_volatile_ms`: no authenticated packet for this long → VOLATILE.
    pub heartbeat_volatile: Duration,
    /// `loss_window_ms`: the window the loss fraction is measured over.
    pub loss_window: Duration,
    /// `loss_volatile_threshold`: loss fraction in (0, 1] that makes the session VOLATILE.
    pub loss_volatile_threshold: f64,
    /// `max_consecutive_drops`: this many probes lost in a row → VOLATILE.
    pub max_consecutive_drops: u32,
    /// `volatile_to_degraded_ms`: VOLATILE for this long without recovery → DEGRADED.
    pub volatile_to_degraded: Duration,
    /// `latency_threshold_ms`: optional; a round trip above it → VOLATILE. `None`: latency is
    /// not a trigger.
    pub latency_threshold: Option<Duration>,
}

/// `[switching]`: how often and how fast the session may jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchingPolicy {
    /// `max_switches_per_min`: switches in any 60 s window.
    pub max_switches_per_min: u32,
    /// `switch_cooldown_ms`: least time between two switch attempts.
    pub switch_cooldown: Duration,
    /// `recovery_window_ms`: RECOVERING always resolves within this.
    pub recovery_window: Duration,
    /// `debounce_ms`: bearer changes after the first within this window are coalesced.
    pub debounce: Duration,
    /// `on_recovery_expiry`: the state taken when the recovery window expires.
    pub on_recovery_expiry: RecoveryExpiry,
}

/// The state a session takes when its recovery window expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecoveryExpiry {
    /// `"degraded"`: keep the session, DEGRADED, and look for another bearer.
    Degraded,
    /// `"terminated"`: end the session.
    Terminated,
}

/// `[security]`: replay protection and offence limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityPolicy {
    /// `reattach_proof_max_age_ms`: a reattach proof older than this is stale.
    pub reattach_proof_max_age: Duration,
    /// `replay_window_size`: packets in the anti-replay window; a multiple of 64 in
    /// 2048..=65536. Replay protection cannot be turned off.
    pub replay_window_size: u32,
    /// `max_auth_failures`: failed authentications per source within the window before the
    /// source is ignored.
    pub max_auth_failures: u32,
    /// `auth_failure_window_ms`: the window `max_auth_failures` is counted over.
    pub auth_failure_window: Duration,
}

/// `[keys]`: rekey and key expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// `rekey_after_ms`: start a rekey when the current keys are this old.
    pub rekey_after: Duration,
    /// `key_max_age_ms`: keys older than this are never used (`KeyExpired`).
    pub key_max_age: Duration,
    /// `rekey_after_packets`: start a rekey after this many packets under one key.
    pub rekey_after_packets: u64,
    /// `rekey_grace_ms`: old keys still decrypt for this long after a rekey.
    pub rekey_grace: Duration,
    /// `min_rekey_interval_ms`: least time between two rekeys (bounds rekey storms).
    pub min_rekey_interval: Duration,
}

/// `[handshake]`: establishing a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// `retry_initial_ms`: first retransmission delay; doubles per retry.
    pub retry_initial: Duration,
    /// `retry_max_ms`: the retransmission delay never grows past this.
    pub retry_max: Duration,
    /// `timeout_ms`: a handshake not complete after this long fails.
    pub timeout: Duration,
    /// `keepalive_ms`: the longest a node stays silent towards its peer on the active path.
    /// Never 0: liveness detection and NAT bindings depend on it.
    pub keepalive: Duration,
}

/// `[moving_target]`: deliberate re-anchoring on a cadence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovingTargetPolicy {
    /// `enabled`: whether the laptop moves its transport on a cadence.
    pub enabled: bool,
    /// `interval_ms`: mean time between moves.
    pub interval: Duration,
    /// `jitter_ms`: each move happens at `interval ± jitter`, uniformly.
    pub jitter: Duration,
}

/// One `[[bearers.rule]]`: interfaces whose name matches `pattern` belong to `class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerRule {
    /// A glob over the interface name: `*` matches any run of characters, `?` exactly one.
    pub pattern: String,
    /// The class of matching interfaces.
    pub class: BearerClass,
}

/// `[bearers.<class>]`: settings of one bearer class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerClassSettings {
    /// `metered`: traffic costs money; probe it sparingly and prefer others.
    pub metered: bool,
    /// `probe_interval_ms`: probe cadence of a standby (non-active) path of this class.
    pub probe_interval: Duration,
}

/// `[bearers]`: which interface is which kind of bearer, and which kind is preferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerPolicy {
    /// Checked in order; the first match wins; no match → [`BearerClass::Unknown`].
    pub rules: Vec<BearerRule>,
    /// Every class exactly once, most preferred first.
    pub preference: [BearerClass; 4],
    /// `[bearers.wired]`.
    pub wired: BearerClassSettings,
    /// `[bearers.wifi]`.
    pub wifi: BearerClassSettings,
    /// `[bearers.cellular]`.
    pub cellular: BearerClassSettings,
    /// `[bearers.unknown]`.
    pub unknown: BearerClassSettings,
}

impl BearerPolicy {
    /// The class of the interface named `ifname`: the first matching rule, else `Unknown`.
    pub fn classify(&self, ifname: &str) -> BearerClass {
        self.rules
            .iter()
            .find(|rule| glob_match(&rule.pattern, ifname))
            .map_or(BearerClass::Unknown, |rule| rule.class)
    }

    /// Preference rank of `class`: 0 is the most preferred, 3 the least.
    pub fn rank(&self, class: BearerClass) -> usize {
        self.preference
            .iter()
            .position(|c| *c == class)
            .unwrap_or(self.preference.len())
    }

    /// Preference rank of the interface named `ifname` (see [`BearerPolicy::rank`]).
    pub fn rank_of(&self, ifname: &str) -> usize {
        self.rank(self.classify(ifname))
    }

    /// The settings of `class`.
    pub fn settings(&self, class: BearerClass) -> &BearerClassSettings {
        match class {
            BearerClass::Wired => &self.wired,
            BearerClass::Wifi => &self.wifi,
            BearerClass::Cellular => &self.cellular,
            BearerClass::Unknown => &self.unknown,
        }
    }

    pub(crate) fn settings_mut(&mut self, class: BearerClass) -> &mut BearerClassSettings {
        match class {
            BearerClass::Wired => &mut self.wired,
            BearerClass::Wifi => &mut self.wifi,
            BearerClass::Cellular => &mut self.cellular,
            BearerClass::Unknown => &mut self.unknown,
        }
    }
}

/// Matches `name` against a glob with `*` (any run, possibly empty) and `?` (one character).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

impl Default for Policy {
    /// The built-in policy; identical to the shipped `policy/default.toml`.
    fn default() -> Self {
        Policy {
            version: "default-1".to_string(),
            name: Some("default".to_string()),
            session: SessionPolicy::default(),
            volatility: VolatilityPolicy::default(),
            switching: SwitchingPolicy::default(),
            security: SecurityPolicy::default(),
            keys: KeyPolicy::default(),
            handshake: HandshakePolicy::default(),
            bearers: BearerPolicy::default(),
            moving_target: MovingTargetPolicy::default(),
        }
    }
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            max_lifetime: ms(8 * 60 * 60 * 1000),
            transport_lost_ttl: ms(15_000),
        }
    }
}

impl Default for VolatilityPolicy {
    fn default() -> Self {
        VolatilityPolicy {
            heartbeat_interval: ms(500),
            heartbeat_volatile: ms(2_000),
            loss_window: ms(2_000),
            loss_volatile_threshold: 0.20,
            max_consecutive_drops: 3,
            volatile_to_degraded: ms(4_000),
            latency_threshold: None,
        }
    }
}

impl Default for SwitchingPolicy {
    fn default() -> Self {
        SwitchingPolicy {
            max_switches_per_min: 8,
            switch_cooldown: ms(1_500),
            recovery_window: ms(8_000),
            debounce: ms(250),
            on_recovery_expiry: RecoveryExpiry::Degraded,
        }
    }
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        SecurityPolicy {
            reattach_proof_max_age: ms(5_000),
            replay_window_size: 4096,
            max_auth_failures: 16,
            auth_failure_window: ms(60_000),
        }
    }
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            rekey_after: ms(120_000),
            key_max_age: ms(180_000),
            rekey_after_packets: 1 << 48,
            rekey_grace: ms(5_000),
            min_rekey_interval: ms(10_000),
        }
    }
}

impl Default for HandshakePolicy {
    fn default() -> Self {
        HandshakePolicy {
            retry_initial: ms(1_000),
            retry_max: ms(16_000),
            timeout: ms(90_000),
            keepalive: ms(10_000),
        }
    }
}

impl Default for MovingTargetPolicy {
    fn default() -> Self {
        MovingTargetPolicy {
            enabled: false,
            interval: ms(300_000),
            jitter: ms(30_000),
        }
    }
}

impl Default for BearerPolicy {
    fn default() -> Self {
        let rule = |pattern: &str, class| BearerRule {
            pattern: pattern.to_string(),
            class,
        };
        let settings = |metered, probe_ms| BearerClassSettings {
            metered,
            probe_interval: ms(probe_ms),
        };
        BearerPolicy {
            rules: vec![
                rule("en*", BearerClass::Wired),
                rule("eth*", BearerClass::Wired),
                rule("wl*", BearerClass::Wifi),
                rule("ww*", BearerClass::Cellular),
                rule("rmnet*", BearerClass::Cellular),
            ],
            preference: BearerClass::ALL,
            wired: settings(false, 1_000),
            wifi: settings(false, 1_000),
            cellular: settings(true, 5_000),
            unknown: settings(false, 2_000),
        }
    }
}
