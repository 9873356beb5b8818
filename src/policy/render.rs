//! Normalized TOML: every key explicit, in a fixed order, so two files that mean the same thing
//! print the same (`jvpn check`). What is printed parses back to an equal value.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::policy::config::{GatewayConfig, LaptopConfig, TunnelConfig};
use crate::policy::error::toml_string;
use crate::policy::keys::{public_key_to_base64, PresharedKey};
use crate::policy::types::{BearerClass, Policy, RecoveryExpiry};

/// Accumulates TOML text. Writing to a `String` cannot fail, so results are ignored.
#[derive(Default)]
pub(crate) struct TomlWriter {
    out: String,
}

impl TomlWriter {
    pub fn comment(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.out, "# {text}");
        self
    }

    pub fn table(&mut self, name: &str) -> &mut Self {
        self.blank_line();
        let _ = writeln!(self.out, "[{name}]");
        self
    }

    pub fn array_table(&mut self, name: &str) -> &mut Self {
        self.blank_line();
        let _ = writeln!(self.out, "[[{name}]]");
        self
    }

    /// `key = VALUE` with `value` already in TOML syntax.
    pub fn raw(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {value}");
        self
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.raw(key, toml_string(value))
    }

    pub fn ms(&mut self, key: &str, value: Duration) -> &mut Self {
        self.raw(key, value.as_millis())
    }

    pub fn strings<S: AsRef<str>>(&mut self, key: &str, values: &[S]) -> &mut Self {
        let items: Vec<String> = values.iter().map(|v| toml_string(v.as_ref())).collect();
        self.raw(key, format!("[{}]", items.join(", ")))
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn blank_line(&mut self) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
    }
}

impl Policy {
    /// The policy as TOML with every key explicit, in the order of `docs/POLICY.md`.
    /// `Policy::from_toml_str` of the result gives back an equal policy.
    pub fn to_normalized_toml(&self) -> String {
        let mut w = TomlWriter::default();
        self.write_toml(&mut w);
        w.finish()
    }

    pub(crate) fn write_toml(&self, w: &mut TomlWriter) {
        w.string("version", &self.version);
        match &self.name {
            Some(name) => w.string("name", name),
            None => w.comment("name is unset"),
        };
        let s = &self.session;
        w.table("session")
            .ms("max_lifetime_ms", s.max_lifetime)
            .ms("transport_lost_ttl_ms", s.transport_lost_ttl);
        self.write_volatility(w);
        let sw = &self.switching;
        let expiry = match sw.on_recovery_expiry {
            RecoveryExpiry::Degraded => "degraded",
            RecoveryExpiry::Terminated => "terminated",
        };
        w.table("switching")
            .raw("max_switches_per_min", sw.max_switches_per_min)
            .ms("switch_cooldown_ms", sw.switch_cooldown)
            .ms("recovery_window_ms", sw.recovery_window)
            .ms("debounce_ms", sw.debounce)
            .string("on_recovery_expiry", expiry);
        let sec = &self.security;
        w.table("security")
            .ms("reattach_proof_max_age_ms", sec.reattach_proof_max_age)
            .raw("replay_window_size", sec.replay_window_size)
            .raw("max_auth_failures", sec.max_auth_failures)
            .ms("auth_failure_window_ms", sec.auth_failure_window);
        let k = &self.keys;
        w.table("keys")
            .ms("rekey_after_ms", k.rekey_after)
            .ms("key_max_age_ms", k.key_max_age)
            .raw("rekey_after_packets", k.rekey_after_packets)
            .ms("rekey_grace_ms", k.rekey_grace)
            .ms("min_rekey_interval_ms", k.min_rekey_interval);
        let h = &self.handshake;
        w.table("handshake")
            .ms("retry_initial_ms", h.retry_initial)
            .ms("retry_max_ms", h.retry_max)
            .ms("timeout_ms", h.timeout)
            .ms("keepalive_ms", h.keepalive);
        self.write_bearers(w);
        let m = &self.moving_target;
        w.table("moving_target")
            .raw("enabled", m.enabled)
            .ms("interval_ms", m.interval)
            .ms("jitter_ms", m.jitter);
    }

    fn write_volatility(&self, w: &mut TomlWriter) {
        let v = &self.volatility;
        w.table("volatility")
            .ms("heartbeat_interval_ms", v.heartbeat_interval)
            .ms("heartbeat_volatile_ms", v.heartbeat_volatile)
            .ms("loss_window_ms", v.loss_window)
            .raw(
                "loss_volatile_threshold",
                toml::Value::Float(v.loss_volatile_threshold),
            )
            .raw("max_consecutive_drops", v.max_consecutive_drops)
            .ms("volatile_to_degraded_ms", v.volatile_to_degraded);
        match v.latency_threshold {
            Some(latency) => w.ms("latency_threshold_ms", latency),
            None => {
                w.comment("latency_threshold_ms is unset: latency never makes a session VOLATILE")
            }
        };
    }

    fn write_bearers(&self, w: &mut TomlWriter) {
        let b = &self.bearers;
        let preference: Vec<&str> = b.preference.iter().map(|c| c.as_str()).collect();
        w.table("bearers").strings("preference", &preference);
        if b.rules.is_empty() {
            w.comment("no [[bearers.rule]]: every interface is of class \"unknown\"")
                .raw("rule", "[]");
        }
        for class in BearerClass::ALL {
            let settings = b.settings(class);
            w.table(&format!("bearers.{class}"))
                .raw("metered", settings.metered)
                .ms("probe_interval_ms", settings.probe_interval);
        }
        for rule in &b.rules {
            w.array_table("bearers.rule")
                .string("pattern", &rule.pattern)
                .string("class", rule.class.as_str());
        }
    }
}

/// Whether rendered configs show preshared keys. `jvpn check` never does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    Redact,
    #[cfg_attr(not(test), allow(dead_code))]
    Include,
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn write_common(
    w: &mut TomlWriter,
    (identity, user): (&Path, &str),
    policy: &Policy,
    policy_path: Option<&Path>,
) {
    w.string("identity", &path_text(identity));
    w.string("user", user);
    match policy_path {
        Some(path) => w.string("policy", &path_text(path)),
        None => w.comment("policy is unset: the built-in default policy"),
    };
    let name = policy.name.as_deref().unwrap_or("(unnamed)");
    w.comment(&format!(
        "policy in force: version {} ({name})",
        toml_string(&policy.version)
    ));
}

fn write_sinks(w: &mut TomlWriter, sinks: [(&str, Option<&PathBuf>); 3]) {
    for (key, path) in sinks {
        match path {
            Some(path) => w.string(key, &path_text(path)),
            None => w.comment(&format!("{key} is unset")),
        };
    }
}

fn write_tunnel(w: &mut TomlWriter, tunnel: &TunnelConfig) {
    let addresses: Vec<String> = tunnel.addresses.iter().map(|a| a.to_string()).collect();
    w.table("tunnel")
        .string("name", &tunnel.name)
        .strings("address", &addresses)
        .raw("mtu", tunnel.mtu);
}

fn write_psk(w: &mut TomlWriter, psk: Option<&PresharedKey>, secrets: Secrets) {
    match (psk, secrets) {
        (Some(psk), Secrets::Include) => w.string("preshared_key", &psk.to_base64()),
        (Some(_), Secrets::Redact) => w.comment("preshared_key is set (not shown)"),
        (None, _) => w.comment("preshared_key is unset"),
    };
}

fn nets(list: &[IpNet]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

impl LaptopConfig {
    /// The config as TOML with every path absolute and defaults explicit. Preshared keys are
    /// not shown.
    pub fn to_normalized_toml(&self) -> String {
        self.render(Secrets::Redact)
    }

    pub(crate) fn render(&self, secrets: Secrets) -> String {
        let mut w = TomlWriter::default();
        write_common(
            &mut w,
            (&self.identity, &self.user.name),
            &self.policy,
            self.policy_path.as_deref(),
        );
        write_sinks(
            &mut w,
            [
                ("events", self.events.as_ref()),
                ("control_socket", self.control_socket.as_ref()),
                ("audit", self.audit.as_ref()),
            ],
        );
        write_tunnel(&mut w, &self.tunnel);
        let g = &self.gateway;
        w.table("gateway")
            .string("endpoint", &g.endpoint.to_string())
            .string("public_key", &public_key_to_base64(&g.public_key))
            .strings("routes", &nets(&g.routes));
        write_psk(&mut w, g.preshared_key.as_ref(), secrets);
        w.finish()
    }
}

impl GatewayConfig {
    /// The config as TOML with every path absolute and defaults explicit. Preshared keys are
    /// not shown.
    pub fn to_normalized_toml(&self) -> String {
        self.render(Secrets::Redact)
    }

    pub(crate) fn render(&self, secrets: Secrets) -> String {
        let mut w = TomlWriter::default();
        write_common(
            &mut w,
            (&self.identity, &self.user.name),
            &self.policy,
            self.policy_path.as_deref(),
        );
        w.string("listen", &self.listen.to_string());
        write_sinks(
            &mut w,
            [
                ("events", self.events.as_ref()),
                ("control_socket", self.control_socket.as_ref()),
                ("audit", self.audit.as_ref()),
            ],
        );
        write_tunnel(&mut w, &self.tunnel);
        for peer in &self.peers {
            w.array_table("peer");
            match &peer.name {
                Some(name) => w.string("name", name),
                None => w.comment("name is unset"),
            };
            w.string("public_key", &public_key_to_base64(&peer.public_key))
                .strings("allowed_ips", &nets(&peer.allowed_ips));
            write_psk(&mut w, peer.preshared_key.as_ref(), secrets);
        }
        w.finish()
    }
}
