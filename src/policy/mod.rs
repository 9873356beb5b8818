//! Policy files and node configs: TOML in, validated types out.
//!
//! The rule this module enforces: nothing reaches a session that has not passed every range and
//! cross-field rule. Each file is read into a serde mirror (`deny_unknown_fields`, every key
//! optional) and then converted into validated types, so a refusal can name the file, the key
//! path, the bad value and what is allowed. A policy can tune thresholds but never disable
//! replay protection, versioning or a bound. See `docs/POLICY.md`.
//!
//! - [`Policy`]: a policy file (`policy/*.toml`); `Policy::default()` is `policy/default.toml`.
//! - [`LaptopConfig`], [`GatewayConfig`]: node configs; their paths are made absolute against
//!   the config file's directory, and the policy they name is loaded with them.
//! - [`proto_config`]: the core's timing and limits from a policy.
//! - [`check_file`]: what `jvpn check FILE` prints.
//! - [`ConfigError`]: the one error type.

mod config;
mod core_config;
mod error;
mod keys;
mod policy_file;
mod render;
mod types;
mod validate;

use std::path::Path;

pub use config::{GatewayConfig, GatewayPeerConfig, LaptopConfig, PeerConfig, TunnelConfig};
pub use core_config::proto_config;
pub use error::ConfigError;
pub use keys::{public_key_to_base64, PresharedKey};
pub use types::{
    BearerClass, BearerClassSettings, BearerPolicy, BearerRule, HandshakePolicy, KeyPolicy,
    MovingTargetPolicy, Policy, RecoveryExpiry, SecurityPolicy, SessionPolicy, SwitchingPolicy,
    VolatilityPolicy,
};

use config::{RawGateway, RawLaptop};
use error::{read_text, Origin};

/// A node config of either kind.
#[allow(clippy::large_enum_variant)] // loaded once at startup; boxing would only add noise
#[derive(Debug, Clone, PartialEq)]
pub enum NodeConfig {
    /// A laptop config (`[gateway]`).
    Laptop(LaptopConfig),
    /// A gateway config (`listen`, `[[peer]]`).
    Gateway(GatewayConfig),
}

impl NodeConfig {
    /// The policy in force for this node.
    pub fn policy(&self) -> &Policy {
        match self {
            NodeConfig::Laptop(c) => &c.policy,
            NodeConfig::Gateway(c) => &c.policy,
        }
    }

    /// The config file (absolute).
    pub fn source(&self) -> &Path {
        match self {
            NodeConfig::Laptop(c) => &c.source,
            NodeConfig::Gateway(c) => &c.source,
        }
    }
}

/// The kinds of file `jvpn check` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A policy file (`version`, `[session]`, ...).
    Policy,
    /// A laptop config.
    Laptop,
    /// A gateway config.
    Gateway,
}

impl FileKind {
    fn describe(self) -> &'static str {
        match self {
            FileKind::Policy => "policy file",
            FileKind::Laptop => "laptop config",
            FileKind::Gateway => "gateway config",
        }
    }
}

/// Reads a laptop or gateway config (told apart by `[gateway]` versus `listen`/`[[peer]]`).
pub fn load_config(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = read_text(path)?;
    match parse_any(&text, path)? {
        Parsed::Laptop(c) => Ok(NodeConfig::Laptop(c)),
        Parsed::Gateway(c) => Ok(NodeConfig::Gateway(c)),
        Parsed::Policy(_) => Err(Origin::new(path).wrong_kind(
            "is a policy file, not a node config; a node config names its policy with policy = \"PATH\"",
        )),
    }
}

impl LaptopConfig {
    /// Reads a laptop config; a gateway config or policy file is refused as the wrong kind.
    pub fn from_file(path: &Path) -> Result<LaptopConfig, ConfigError> {
        match load_config(path)? {
            NodeConfig::Laptop(c) => Ok(c),
            NodeConfig::Gateway(_) => Err(Origin::new(path).wrong_kind(
                "is a gateway config (it has listen or [[peer]]), not a laptop config ([gateway])",
            )),
        }
    }
}

impl GatewayConfig {
    /// Reads a gateway config; a laptop config or policy file is refused as the wrong kind.
    pub fn from_file(path: &Path) -> Result<GatewayConfig, ConfigError> {
        match load_config(path)? {
            NodeConfig::Gateway(c) => Ok(c),
            NodeConfig::Laptop(_) => Err(Origin::new(path).wrong_kind(
                "is a laptop config (it has [gateway]), not a gateway config (listen, [[peer]])",
            )),
        }
    }
}

/// Validates a policy file, laptop config or gateway config and returns its normalized TOML,
/// whose first line is a comment naming the kind. Preshared keys are never printed.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    let text = read_text(path)?;
    let parsed = parse_any(&text, path)?;
    let body = match &parsed {
        Parsed::Policy(p) => p.to_normalized_toml(),
        Parsed::Laptop(c) => c.to_normalized_toml(),
        Parsed::Gateway(c) => c.to_normalized_toml(),
    };
    Ok(format!(
        "# jvpn {} {}, normalized\n{body}",
        parsed.kind().describe(),
        path.display()
    ))
}

/// Which kind of file `text` is, from its top-level keys.
pub fn detect_kind(text: &str, path: &Path) -> Result<FileKind, ConfigError> {
    let origin = Origin::new(path);
    let table = origin.parse_table(text)?;
    const POLICY_KEYS: [&str; 9] = [
        "version",
        "session",
        "volatility",
        "switching",
        "security",
        "keys",
        "handshake",
        "bearers",
        "moving_target",
    ];
    let policy = POLICY_KEYS.iter().any(|k| table.contains_key(*k));
    let laptop = table.contains_key("gateway");
    let gateway = table.contains_key("listen") || table.contains_key("peer");
    match (policy, laptop, gateway) {
        (_, true, true) => Err(origin.wrong_kind(
            "has both [gateway] (laptop config) and listen or [[peer]] (gateway config); a file is one or the other",
        )),
        (true, false, false) => Ok(FileKind::Policy),
        (false, true, false) => Ok(FileKind::Laptop),
        (false, false, true) => Ok(FileKind::Gateway),
        (true, _, _) => Err(origin.wrong_kind(
            "mixes policy keys with node config keys; put the policy in its own file and name it with policy = \"PATH\"",
        )),
        (false, false, false) => Err(origin.wrong_kind(
            "is not a jvpn file: expected a policy (version = ...), a laptop config ([gateway]) or a gateway config (listen, [[peer]])",
        )),
    }
}

#[allow(clippy::large_enum_variant)] // short-lived, one per file read
enum Parsed {
    Policy(Policy),
    Laptop(LaptopConfig),
    Gateway(GatewayConfig),
}

impl Parsed {
    fn kind(&self) -> FileKind {
        match self {
            Parsed::Policy(_) => FileKind::Policy,
            Parsed::Laptop(_) => FileKind::Laptop,
            Parsed::Gateway(_) => FileKind::Gateway,
        }
    }
}

fn parse_any(text: &str, path: &Path) -> Result<Parsed, ConfigError> {
    let origin = Origin::new(path);
    Ok(match detect_kind(text, path)? {
        FileKind::Policy => Parsed::Policy(Policy::from_toml_str(text, path)?),
        FileKind::Laptop => {
            Parsed::Laptop(origin.deserialize::<RawLaptop>(text)?.into_config(path)?)
        }
        FileKind::Gateway => {
            Parsed::Gateway(origin.deserialize::<RawGateway>(text)?.into_config(path)?)
        }
    })
}

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod policy_tests;
