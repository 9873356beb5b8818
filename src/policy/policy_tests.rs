//! Policy files: the shipped set, defaults, rejections (one row per rule), round trips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::{check_file, BearerClass, BearerRule, ConfigError, Policy, RecoveryExpiry};

fn repo_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn shipped_policies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_dir("policy"))
        .expect("policy/ directory beside Cargo.toml")
        .map(|entry| entry.expect("readable policy/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn parse(text: &str) -> Result<Policy, ConfigError> {
    Policy::from_toml_str(text, Path::new("test.toml"))
}

#[test]
fn every_shipped_policy_parses_and_round_trips() {
    let files = shipped_policies();
    let names: Vec<_> = files.iter().filter_map(|p| p.file_name()).collect();
    assert!(names.iter().any(|n| *n == "default.toml"), "{names:?}");
    assert!(names.iter().any(|n| *n == "voice.toml"), "{names:?}");
    for file in files {
        let policy = Policy::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
        let again = parse(&policy.to_normalized_toml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy, again, "{}", file.display());
        let checked = check_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(checked.starts_with("# jvpn policy file "), "{checked}");
    }
}

#[test]
fn default_policy_equals_default_toml() {
    let file = Policy::from_file(&repo_dir("policy/default.toml")).unwrap();
    assert_eq!(file, Policy::default());
    assert_eq!(
        Policy::default().validate().map_err(|e| e.to_string()),
        Ok(())
    );
}

#[test]
fn voice_policy_detects_faster_than_default() {
    let voice = Policy::from_file(&repo_dir("policy/voice.toml")).unwrap();
    let default = Policy::default();
    assert!(voice.volatility.heartbeat_volatile < default.volatility.heartbeat_volatile);
    assert!(voice.volatility.heartbeat_interval < default.volatility.heartbeat_interval);
    assert_eq!(
        voice.volatility.heartbeat_interval,
        Duration::from_millis(100)
    );
    assert_eq!(
        voice.keys, default.keys,
        "keys not listed take the defaults"
    );
}

#[test]
fn a_file_with_only_a_version_takes_every_default() {
    let policy = parse("version = \"v1\"").unwrap();
    let expected = Policy {
        version: "v1".into(),
        name: None,
        ..Policy::default()
    };
    assert_eq!(policy, expected);
}

#[test]
fn a_tuned_policy_round_trips_with_optional_and_empty_values() {
    let text = r#"
        version = "lab.2024-06_b"
        [volatility]
        latency_threshold_ms = 250
        [switching]
        on_recovery_expiry = "terminated"
        [bearers]
        preference = ["cellular", "unknown", "wifi", "wired"]
        rule = []
        [bearers.cellular]
        metered = false
        [moving_target]
        enabled = true
        interval_ms = 20000
        jitter_ms = 0
    "#;
    let policy = parse(text).unwrap();
    assert_eq!(
        policy.volatility.latency_threshold,
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        policy.switching.on_recovery_expiry,
        RecoveryExpiry::Terminated
    );
    assert!(policy.bearers.rules.is_empty());
    assert_eq!(policy.bearers.classify("wlan0"), BearerClass::Unknown);
    assert_eq!(policy.bearers.rank(BearerClass::Cellular), 0);
    assert!(!policy.bearers.cellular.metered);
    let normalized = policy.to_normalized_toml();
    assert_eq!(parse(&normalized).unwrap(), policy, "{normalized}");
    assert_eq!(parse(&normalized).unwrap().to_normalized_toml(), normalized);
}

#[test]
fn default_bearer_classes_and_preference() {
    let b = Policy::default().bearers;
    let cases = [
        ("wlan0", BearerClass::Wifi),
        ("wlp2s0", BearerClass::Wifi),
        ("wwan0", BearerClass::Cellular),
        ("rmnet_data0", BearerClass::Cellular),
        ("enp0s31f6", BearerClass::Wired),
        ("eth0", BearerClass::Wired),
        ("veth1", BearerClass::Unknown),
        ("usb0", BearerClass::Unknown),
        ("", BearerClass::Unknown),
    ];
    for (ifname, class) in cases {
        assert_eq!(b.classify(ifname), class, "{ifname}");
    }
    let ranks: Vec<usize> = BearerClass::ALL.iter().map(|c| b.rank(*c)).collect();
    assert_eq!(ranks, [0, 1, 2, 3], "wired > wifi > cellular > unknown");
    assert!(b.rank_of("eth0") < b.rank_of("wlan0"));
    assert!(b.settings(BearerClass::Cellular).metered);
}

#[test]
fn bearer_rules_match_in_order_with_globs() {
    let mut b = Policy::default().bearers;
    b.rules = vec![
        BearerRule {
            pattern: "wlan?".into(),
            class: BearerClass::Cellular,
        },
        BearerRule {
            pattern: "*".into(),
            class: BearerClass::Wired,
        },
    ];
    assert_eq!(b.classify("wlan1"), BearerClass::Cellular);
    assert_eq!(b.classify("wlan10"), BearerClass::Wired);
    for (pattern, name, matches) in [
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("*0", "eth0", true),
        ("e?h*", "eth", true),
        ("e?h*", "eh", false),
        ("**", "", true),
    ] {
        assert_eq!(
            super::types::glob_match(pattern, name),
            matches,
            "{pattern} {name}"
        );
    }
}

/// One row per rule: (section or top-level TOML, expected key path, expected bad value).
const REJECTIONS: &[(&str, &str, &str)] = &[
    // ranges and zero bounds
    ("[session]\nmax_lifetime_ms = 0", "session.max_lifetime_ms", "= 0: must be between 60000 and 604800000 ms"),
    ("[session]\ntransport_lost_ttl_ms = -5", "session.transport_lost_ttl_ms", "= -5: must be between"),
    ("[volatility]\nheartbeat_interval_ms = 0", "volatility.heartbeat_interval_ms", "= 0"),
    ("[volatility]\nmax_consecutive_drops = 0", "volatility.max_consecutive_drops", "= 0: must be between 1 and 10000"),
    ("[volatility]\nmax_consecutive_drops = 99999999999", "volatility.max_consecutive_drops", "= 99999999999"),
    ("[volatility]\nvolatile_to_degraded_ms = 0", "volatility.volatile_to_degraded_ms", "= 0"),
    ("[volatility]\nlatency_threshold_ms = 0", "volatility.latency_threshold_ms", "= 0"),
    ("[volatility]\nloss_volatile_threshold = 0.0", "volatility.loss_volatile_threshold", "= 0.0: must be a fraction"),
    ("[volatility]\nloss_volatile_threshold = 1.5", "volatility.loss_volatile_threshold", "= 1.5"),
    ("[volatility]\nloss_volatile_threshold = nan", "volatility.loss_volatile_threshold", "= nan"),
    ("[switching]\nmax_switches_per_min = 0", "switching.max_switches_per_min", "= 0: must be between 1 and 600"),
    ("[switching]\nswitch_cooldown_ms = 0", "switching.switch_cooldown_ms", "= 0"),
    ("[switching]\nrecovery_window_ms = 0", "switching.recovery_window_ms", "= 0"),
    ("[switching]\ndebounce_ms = 0", "switching.debounce_ms", "= 0"),
    ("[switching]\non_recovery_expiry = \"retry\"", "switching.on_recovery_expiry", "= \"retry\": must be \"degraded\" or \"terminated\""),
    ("[security]\nreplay_window_size = 0", "security.replay_window_size", "= 0: must be between 2048 and 65536"),
    ("[security]\nreplay_window_size = 1024", "security.replay_window_size", "= 1024"),
    ("[security]\nreplay_window_size = 131072", "security.replay_window_size", "= 131072"),
    ("[security]\nreplay_window_size = 4100", "security.replay_window_size", "= 4100: must be a multiple of 64"),
    ("[security]\nmax_auth_failures = 0", "security.max_auth_failures", "= 0"),
    ("[security]\nreattach_proof_max_age_ms = 0", "security.reattach_proof_max_age_ms", "= 0"),
    ("[security]\nauth_failure_window_ms = 0", "security.auth_failure_window_ms", "= 0"),
    ("[keys]\nrekey_after_packets = 0", "keys.rekey_after_packets", "= 0"),
    ("[keys]\nrekey_after_packets = 9223372036854775807", "keys.rekey_after_packets", "= 9223372036854775807"),
    ("[keys]\nrekey_grace_ms = 0", "keys.rekey_grace_ms", "= 0"),
    ("[handshake]\nretry_initial_ms = 0", "handshake.retry_initial_ms", "= 0"),
    ("[handshake]\nkeepalive_ms = 0", "handshake.keepalive_ms", "= 0: must be between 100 and 300000 ms"),
    ("[handshake]\ntimeout_ms = 0", "handshake.timeout_ms", "= 0"),
    ("[bearers.wifi]\nprobe_interval_ms = 0", "bearers.wifi.probe_interval_ms", "= 0: must be between 100 and 600000 ms"),
    ("[moving_target]\ninterval_ms = 0", "moving_target.interval_ms", "= 0"),
    // cross-field rules
    ("[session]\ntransport_lost_ttl_ms = 3600000\nmax_lifetime_ms = 3600000", "session.transport_lost_ttl_ms", "= 3600000: must be less than session.max_lifetime_ms (3600000)"),
    ("[volatility]\nheartbeat_interval_ms = 1000\nheartbeat_volatile_ms = 1000", "volatility.heartbeat_volatile_ms", "= 1000: must be at least 2 x volatility.heartbeat_interval_ms (2000)"),
    ("[volatility]\nheartbeat_interval_ms = 500\nheartbeat_volatile_ms = 400", "volatility.heartbeat_volatile_ms", "= 400"),
    ("[volatility]\nloss_window_ms = 600", "volatility.loss_window_ms", "= 600: must be at least 2 x volatility.heartbeat_interval_ms (1000)"),
    ("[keys]\nrekey_after_ms = 180000", "keys.key_max_age_ms", "= 180000: must be greater than keys.rekey_after_ms (180000)"),
    ("[keys]\nkey_max_age_ms = 28800000", "keys.key_max_age_ms", "= 28800000: must be less than session.max_lifetime_ms (28800000)"),
    ("[keys]\nmin_rekey_interval_ms = 130000", "keys.min_rekey_interval_ms", "= 130000: must be at most keys.rekey_after_ms (120000)"),
    ("[keys]\nrekey_grace_ms = 20000", "keys.rekey_grace_ms", "= 20000: must be at most keys.min_rekey_interval_ms (10000)"),
    ("[handshake]\nretry_initial_ms = 20000", "handshake.retry_max_ms", "= 16000: must be at least handshake.retry_initial_ms (20000)"),
    ("[handshake]\ntimeout_ms = 10000", "handshake.timeout_ms", "= 10000: must be at least handshake.retry_max_ms (16000)"),
    ("[moving_target]\ninterval_ms = 30000", "moving_target.jitter_ms", "= 30000: must be less than moving_target.interval_ms (30000)"),
    ("[moving_target]\ninterval_ms = 10000\njitter_ms = 5000", "moving_target.interval_ms", "= 10000: minus moving_target.jitter_ms (5000) must be at least 7500"),
    // strings, lists and names
    ("[bearers]\npreference = [\"wired\", \"wifi\"]", "bearers.preference", "= [\"wired\", \"wifi\"]: must list each of"),
    ("[bearers]\npreference = [\"wired\", \"wifi\", \"wifi\", \"unknown\"]", "bearers.preference", "= [\"wired\", \"wifi\", \"wifi\", \"unknown\"]: must list each"),
    ("[bearers]\npreference = [\"wired\", \"lte\", \"cellular\", \"unknown\"]", "bearers.preference[1]", "= \"lte\": must be one of wired, wifi, cellular, unknown"),
    ("[[bearers.rule]]\npattern = \"wl*\"\nclass = \"radio\"", "bearers.rule[0].class", "= \"radio\": must be one of"),
    ("[[bearers.rule]]\npattern = \"wl*\"\nclass = \"wifi\"\n[[bearers.rule]]\npattern = \"w l\"\nclass = \"wifi\"", "bearers.rule[1].pattern", "= \"w l\""),
    ("[[bearers.rule]]\nclass = \"wifi\"", "bearers.rule[0].pattern", "missing"),
    // schema: unknown keys and wrong types name the key and line
    ("[session]\nmax_lifetime = 5", "session.max_lifetime", "unknown field `max_lifetime`"),
    ("[sesion]\nmax_lifetime_ms = 5", "sesion", "unknown field `sesion`"),
    ("[volatility]\nheartbeat_interval_ms = \"500ms\"", "volatility.heartbeat_interval_ms", "invalid type: string \"500ms\""),
    ("[moving_target]\nenabled = \"yes\"", "moving_target.enabled", "invalid type: string \"yes\""),
    ("[[bearers.rule]]\npattern = \"a*\"\nclass = \"wifi\"\n[[bearers.rule]]\npattern = 5\nclass = \"wifi\"", "bearers.rule[1].pattern", "invalid type: integer `5`"),
];

#[test]
fn each_broken_rule_is_refused_with_key_and_value() {
    for (section, key, needle) in REJECTIONS {
        let text = format!("version = \"t1\"\n{section}\n");
        let err = match parse(&text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(message.starts_with("test.toml:"), "{message}");
        assert_eq!(err.key(), Some(*key), "{message}");
        // A value error reads `KEY = VALUE: ALLOWED`; a schema error `KEY: MESSAGE`.
        let expected = match needle.starts_with("= ") {
            true => format!("{key} {needle}"),
            false => format!("{key}: "),
        };
        assert!(
            message.contains(&expected),
            "{message}\n  expected: {expected}"
        );
        assert!(message.contains(needle), "{message}\n  expected: {needle}");
    }
}

#[test]
fn version_is_required_and_checked() {
    let missing = parse("name = \"x\"").unwrap_err().to_string();
    assert!(
        missing.starts_with("test.toml: version: missing;"),
        "{missing}"
    );
    for bad in ["", "has space", "é", "a/b", &"x".repeat(65)] {
        let text = format!("version = {}", toml::Value::from(bad));
        let message = parse(&text).unwrap_err().to_string();
        let expected = format!(
            "test.toml: version = {}: must be 1 to 64 characters",
            toml::Value::from(bad)
        );
        assert!(message.starts_with(&expected), "{message}");
    }
    assert!(parse(&format!("version = \"{}\"", "x".repeat(64))).is_ok());
    let wrong_type = parse("version = 3").unwrap_err().to_string();
    assert!(
        wrong_type.starts_with("test.toml:1:11: version: invalid type: integer `3`"),
        "{wrong_type}"
    );
}

#[test]
fn schema_and_syntax_errors_name_the_line() {
    let unknown =
        parse("version = \"a\"\n\n[switching]\ndebounce_ms = 5\nfast = true\n").unwrap_err();
    let message = unknown.to_string();
    assert!(
        message.starts_with("test.toml:5:1: switching.fast: unknown field `fast`"),
        "{message}"
    );
    let syntax = parse("version = \"a\"\n[session\n")
        .unwrap_err()
        .to_string();
    assert!(syntax.starts_with("test.toml:2:"), "{syntax}");
    assert!(syntax.contains("invalid TOML"), "{syntax}");
}

#[test]
fn a_missing_file_names_the_file_and_the_os_error() {
    let err = Policy::from_file(Path::new("/nonexistent/jvpn/p.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to read /nonexistent/jvpn/p.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn a_policy_built_in_code_is_validated_too() {
    let mut policy = Policy::default();
    policy.security.replay_window_size = 100;
    let err = policy.validate().unwrap_err().to_string();
    assert!(err.contains("security.replay_window_size = 100"), "{err}");
    let mut policy = Policy::default();
    policy.bearers.preference[0] = BearerClass::Wifi;
    let err = policy.validate().unwrap_err().to_string();
    assert!(
        err.contains("bearers.preference = [\"wifi\", \"wifi\""),
        "{err}"
    );
}

#[test]
fn every_policy_key_is_documented() {
    let docs = repo_dir("docs/POLICY.md");
    let Ok(text) = std::fs::read_to_string(&docs) else {
        panic!("{} is missing", docs.display());
    };
    let table: toml::Table = Policy::default().to_normalized_toml().parse().unwrap();
    let mut keys = Vec::new();
    flatten("", &toml::Value::Table(table), &mut keys);
    keys.push("volatility.latency_threshold_ms".into());
    for key in keys {
        let key = ["wired", "wifi", "cellular", "unknown"]
            .iter()
            .fold(key, |k, class| {
                k.replace(&format!("bearers.{class}."), "bearers.<class>.")
            });
        assert!(
            text.contains(&format!("`{key}`")),
            "docs/POLICY.md does not document `{key}`"
        );
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(|i| i.is_table()) && !items.is_empty() => {
            for item in items.iter().take(1) {
                flatten(&format!("{prefix}[]"), item, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn documented_ranges_match_the_code() {
    let text = std::fs::read_to_string(repo_dir("docs/POLICY.md")).unwrap();
    for (key, min, max) in super::validate::LIMITS {
        let row = text
            .lines()
            .find(|line| line.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("docs/POLICY.md has no table row for `{key}`"));
        assert!(
            row.contains(&format!("| {min}–{max}")),
            "range of `{key}` differs from the code: {row}"
        );
    }
}
