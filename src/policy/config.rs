//! Node configs: `laptop.toml` and `gateway.toml`.
//!
//! The rule enforced here: a node starts only from a config whose every path is absolute
//! (relative paths are taken from the config file's directory), whose keys are valid Ed25519
//! points, and whose peers can be told apart: no two peers share a key, and no address is
//! routed to two peers.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::error::{toml_string, ConfigError, Origin};
use crate::policy::keys::{parse_preshared_key, parse_public_key, PresharedKey};
use crate::policy::types::Policy;
use crate::sys::privileges::Account;

/// The user a node runs as when its config has no `user` key (it exists on Debian and most
/// other systems, and owns nothing).
pub const DEFAULT_USER: &str = "nobody";

/// `[tunnel]`: the TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// `name`: a Linux interface name, at most 15 bytes. Default `jvpn0`.
    pub name: String,
    /// `address`: the device's addresses with prefix lengths; at least one.
    pub addresses: Vec<IpNet>,
    /// `mtu`: default 1420; 576..=9000, at least 1280 when any address is IPv6.
    pub mtu: u16,
}

/// The laptop's `[gateway]`: the one peer it connects to.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayPeerConfig {
    /// `endpoint`: the gateway's IP address and port (host names are not resolved).
    pub endpoint: SocketAddr,
    /// `public_key`: the gateway's identity.
    pub public_key: VerifyingKey,
    /// `routes`: the networks sent through the tunnel (besides the tunnel's own prefixes).
    pub routes: Vec<IpNet>,
    /// `preshared_key`: optional, base64 of 32 bytes.
    pub preshared_key: Option<PresharedKey>,
}

/// A `[[peer]]` of the gateway: a laptop allowed to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// `name`: optional label shown by `status`.
    pub name: Option<String>,
    /// `public_key`: the laptop's identity. An initiation from any other key gets no reply.
    pub public_key: VerifyingKey,
    /// `allowed_ips`: the source addresses this peer may use inside the tunnel, and the
    /// destinations routed to it. Never overlaps another peer's.
    pub allowed_ips: Vec<IpNet>,
    /// `preshared_key`: optional, base64 of 32 bytes.
    pub preshared_key: Option<PresharedKey>,
}

/// A laptop's config file.
#[derive(Debug, Clone, PartialEq)]
pub struct LaptopConfig {
    /// The config file itself (absolute).
    pub source: PathBuf,
    /// `identity`: the identity key file written by `jvpn keygen`.
    pub identity: PathBuf,
    /// `user`: who the node runs as once setup is done (default `nobody`).
    pub user: Account,
    /// The policy in force: the file named by `policy`, else the built-in default.
    pub policy: Policy,
    /// `policy`: where `policy` came from; `None` for the built-in default.
    pub policy_path: Option<PathBuf>,
    /// `[tunnel]`.
    pub tunnel: TunnelConfig,
    /// `[gateway]`: the gateway this laptop connects to.
    pub gateway: GatewayPeerConfig,
    /// `events`: optional file events are appended to as JSON lines.
    pub events: Option<PathBuf>,
    /// `control_socket`: optional Unix socket for `status` and `terminate`.
    pub control_socket: Option<PathBuf>,
    /// `audit`: optional file for signed `transport.rebind` records.
    pub audit: Option<PathBuf>,
}

/// A gateway's config file.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// The config file itself (absolute).
    pub source: PathBuf,
    /// `identity`: the identity key file written by `jvpn keygen`.
    pub identity: PathBuf,
    /// `user`: who the node runs as once setup is done (default `nobody`).
    pub user: Account,
    /// The policy in force: the file named by `policy`, else the built-in default.
    pub policy: Policy,
    /// `policy`: where `policy` came from; `None` for the built-in default.
    pub policy_path: Option<PathBuf>,
    /// `listen`: the UDP address and port to receive on.
    pub listen: SocketAddr,
    /// `[tunnel]`.
    pub tunnel: TunnelConfig,
    /// `[[peer]]`: at least one.
    pub peers: Vec<PeerConfig>,
    /// `events`: optional file events are appended to as JSON lines.
    pub events: Option<PathBuf>,
    /// `control_socket`: optional Unix socket for `status` and `terminate`.
    pub control_socket: Option<PathBuf>,
    /// `audit`: optional file for signed `transport.rebind` records.
    pub audit: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The serde mirror.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLaptop {
    identity: Option<String>,
    user: Option<String>,
    policy: Option<String>,
    events: Option<String>,
    control_socket: Option<String>,
    audit: Option<String>,
    tunnel: Option<RawTunnel>,
    gateway: Option<RawGatewayPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    identity: Option<String>,
    user: Option<String>,
    policy: Option<String>,
    events: Option<String>,
    control_socket: Option<String>,
    audit: Option<String>,
    listen: Option<String>,
    tunnel: Option<RawTunnel>,
    peer: Option<Vec<RawPeer>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTunnel {
    name: Option<String>,
    address: Option<Vec<String>>,
    mtu: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawGatewayPeer {
    endpoint: Option<String>,
    public_key: Option<String>,
    routes: Option<Vec<String>>,
    preshared_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawPeer {
    name: Option<String>,
    public_key: Option<String>,
    allowed_ips: Option<Vec<String>>,
    preshared_key: Option<String>,
}

/// The parts every node config has.
struct Common {
    identity: PathBuf,
    user: Account,
    policy: Policy,
    policy_path: Option<PathBuf>,
    events: Option<PathBuf>,
    control_socket: Option<PathBuf>,
    audit: Option<PathBuf>,
}

/// Converts raw values of one file: knows the file (for errors) and its directory (for paths).
#[derive(Clone, Copy)]
struct Ctx<'a> {
    o: Origin<'a>,
    dir: &'a Path,
}

impl RawLaptop {
    /// `file` names the file in errors as the user wrote it; paths resolve against its
    /// directory.
    pub(crate) fn into_config(self, file: &Path) -> Result<LaptopConfig, ConfigError> {
        let source = absolute(file);
        let dir = source.parent().unwrap_or(Path::new("/"));
        let cx = Ctx {
            o: Origin::new(file),
            dir,
        };
        let common = cx.common(
            (self.identity, self.user),
            self.policy,
            self.events,
            self.control_socket,
            self.audit,
        )?;
        let tunnel = cx.tunnel(self.tunnel)?;
        let raw = self.gateway.unwrap_or_default();
        let endpoint = cx.required(
            "gateway.endpoint",
            raw.endpoint,
            "the gateway's IP:PORT, e.g. \"203.0.113.1:51900\"",
        )?;
        let endpoint = cx.socket_addr("gateway.endpoint", &endpoint, false)?;
        let public_key = cx.required(
            "gateway.public_key",
            raw.public_key,
            "the gateway's public key (`jvpn pubkey`)",
        )?;
        let gateway = GatewayPeerConfig {
            endpoint,
            public_key: parse_public_key(cx.o, "gateway.public_key", &public_key)?,
            routes: cx.networks("gateway.routes", raw.routes.unwrap_or_default())?,
            preshared_key: cx.preshared("gateway.preshared_key", raw.preshared_key)?,
        };
        Ok(LaptopConfig {
            source: source.clone(),
            identity: common.identity,
            user: common.user,
            policy: common.policy,
            policy_path: common.policy_path,
            tunnel,
            gateway,
            events: common.events,
            control_socket: common.control_socket,
            audit: common.audit,
        })
    }
}

impl RawGateway {
    /// `file` names the file in errors as the user wrote it; paths resolve against its
    /// directory.
    pub(crate) fn into_config(self, file: &Path) -> Result<GatewayConfig, ConfigError> {
        let source = absolute(file);
        let dir = source.parent().unwrap_or(Path::new("/"));
        let cx = Ctx {
            o: Origin::new(file),
            dir,
        };
        let common = cx.common(
            (self.identity, self.user),
            self.policy,
            self.events,
            self.control_socket,
            self.audit,
        )?;
        let listen = cx.required(
            "listen",
            self.listen,
            "the UDP address to listen on, e.g. \"0.0.0.0:51900\"",
        )?;
        let listen = cx.socket_addr("listen", &listen, true)?;
        let tunnel = cx.tunnel(self.tunnel)?;
        let raw_peers = self.peer.unwrap_or_default();
        if raw_peers.is_empty() {
            let what = "a gateway needs at least one [[peer]] with public_key and allowed_ips";
            return Err(cx.o.missing("peer", what));
        }
        let peers = raw_peers
            .into_iter()
            .enumerate()
            .map(|(i, raw)| cx.peer(i, raw))
            .collect::<Result<Vec<_>, _>>()?;
        check_peers_distinct(cx.o, &peers)?;
        Ok(GatewayConfig {
            source: source.clone(),
            identity: common.identity,
            user: common.user,
            policy: common.policy,
            policy_path: common.policy_path,
            listen,
            tunnel,
            peers,
            events: common.events,
            control_socket: common.control_socket,
            audit: common.audit,
        })
    }
}

impl Ctx<'_> {
    fn required(
        &self,
        key: &str,
        value: Option<String>,
        what: &str,
    ) -> Result<String, ConfigError> {
        value.ok_or_else(|| self.o.missing(key, format!("set it to {what}")))
    }

    /// A path relative to the config file's directory, made absolute.
    fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.is_empty() || value.contains('\0') {
            let allowed = "must be a file path, absolute or relative to this config file";
            return Err(self.o.invalid_str(key, value, allowed));
        }
        Ok(absolute(&self.dir.join(value)))
    }

    fn optional_path(
        &self,
        key: &str,
        value: Option<String>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        value.map(|v| self.path(key, &v)).transpose()
    }

    fn common(
        &self,
        (identity, user): (Option<String>, Option<String>),
        policy: Option<String>,
        events: Option<String>,
        control_socket: Option<String>,
        audit: Option<String>,
    ) -> Result<Common, ConfigError> {
        let identity = self.required(
            "identity",
            identity,
            "the identity key file from `jvpn keygen --out FILE`",
        )?;
        let identity = self.path("identity", &identity)?;
        if let Some(mode) = crate::identity::too_open(&identity) {
            let allowed = crate::identity::too_open_message(&identity, mode);
            return Err(self
                .o
                .invalid_str("identity", &identity.to_string_lossy(), allowed));
        }
        let user = self.user(user)?;
        let (policy, policy_path) = match policy {
            None => (Policy::default(), None),
            Some(raw) => {
                let path = self.path("policy", &raw)?;
                let policy = Policy::from_file(&path).map_err(|inner| ConfigError::Policy {
                    file: self.o.file.to_path_buf(),
                    value: toml_string(&raw),
                    inner: Box::new(inner),
                })?;
                (policy, Some(path))
            }
        };
        Ok(Common {
            identity,
            user,
            policy,
            policy_path,
            events: self.optional_path("events", events)?,
            control_socket: self.optional_path("control_socket", control_socket)?,
            audit: self.optional_path("audit", audit)?,
        })
    }

    /// `user`: an existing user other than root; default `nobody`.
    fn user(&self, raw: Option<String>) -> Result<Account, ConfigError> {
        let name = raw.unwrap_or_else(|| DEFAULT_USER.to_string());
        let allowed = "must name a user that exists on this system (see `getent passwd`) other than root; the node runs as it once its tunnel and sockets are open";
        match Account::lookup(&name) {
            Ok(Some(account)) if account.uid != 0 => Ok(account),
            Ok(_) => Err(self.o.invalid_str("user", &name, allowed)),
            Err(e) => {
                Err(self
                    .o
                    .invalid_str("user", &name, format!("{allowed} (lookup failed: {e})")))
            }
        }
    }

    fn tunnel(&self, raw: Option<RawTunnel>) -> Result<TunnelConfig, ConfigError> {
        let raw = raw.unwrap_or_default();
        let name = raw.name.unwrap_or_else(|| "jvpn0".to_string());
        let name_ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            let allowed = "must be a Linux interface name: 1 to 15 characters of A-Z a-z 0-9 . _ -";
            return Err(self.o.invalid_str("tunnel.name", &name, allowed));
        }
        let texts = raw.address.unwrap_or_default();
        if texts.is_empty() {
            let what = "the tunnel needs address = [\"10.77.0.2/24\", ...] (at least one address with its prefix length)";
            return Err(self.o.missing("tunnel.address", what));
        }
        let mut addresses = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            addresses.push(self.interface_address(&format!("tunnel.address[{i}]"), text)?);
        }
        let mtu = self.mtu(raw.mtu, &addresses, &texts)?;
        Ok(TunnelConfig {
            name,
            addresses,
            mtu,
        })
    }

    fn interface_address(&self, key: &str, text: &str) -> Result<IpNet, ConfigError> {
        let net: IpNet = text.parse().map_err(|_| {
            self.o
                .invalid_str(key, text, "must be an address with its prefix length, e.g. \"10.77.0.2/24\" or \"fd77::2/64\"")
        })?;
        let ip = net.addr();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || net.prefix_len() == 0 {
            let allowed = "must be a unicast address that is not unspecified or loopback, with a prefix length above 0";
            return Err(self.o.invalid_str(key, text, allowed));
        }
        Ok(net)
    }

    fn mtu(
        &self,
        raw: Option<i64>,
        addresses: &[IpNet],
        texts: &[String],
    ) -> Result<u16, ConfigError> {
        let mtu = raw.unwrap_or(1420);
        let v6 = addresses.iter().position(|a| matches!(a, IpNet::V6(_)));
        let min = if v6.is_some() { 1280 } else { 576 };
        if !(min..=9000).contains(&mtu) {
            let allowed = match v6 {
                Some(i) => format!(
                    "must be between 1280 and 9000 because the tunnel has an IPv6 address (tunnel.address[{i}] = {}), and IPv6 needs 1280",
                    toml_string(&texts[i])
                ),
                None => "must be between 576 and 9000 (1280 and up once the tunnel has an IPv6 address)".to_string(),
            };
            return Err(self.o.invalid("tunnel.mtu", mtu, allowed));
        }
        Ok(u16::try_from(mtu).unwrap_or(1420))
    }

    /// A list of networks (`routes`, `allowed_ips`): prefix length required, no host bits set.
    fn networks(&self, key: &str, texts: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let net: IpNet = text.parse().map_err(|_| {
                self.o
                    .invalid_str(&key, text, "must be a network with its prefix length, e.g. \"10.77.0.0/24\" or \"fd77::/64\"")
            })?;
            if net.trunc() != net {
                let allowed = format!(
                    "has host bits set; write the network, {}",
                    toml_string(&net.trunc().to_string())
                );
                return Err(self.o.invalid_str(&key, text, allowed));
            }
            nets.push(net);
        }
        Ok(nets)
    }

    fn socket_addr(&self, key: &str, text: &str, listen: bool) -> Result<SocketAddr, ConfigError> {
        let example = if listen {
            "\"0.0.0.0:51900\" or \"[::]:51900\""
        } else {
            "\"203.0.113.1:51900\" or \"[2001:db8::1]:51900\""
        };
        let addr: SocketAddr = text.parse().map_err(|_| {
            let allowed = format!("must be IP:PORT, e.g. {example} (host names are not resolved)");
            self.o.invalid_str(key, text, allowed)
        })?;
        if addr.port() == 0 {
            return Err(self
                .o
                .invalid_str(key, text, "must have a port between 1 and 65535"));
        }
        if !listen && (addr.ip().is_unspecified() || addr.ip().is_multicast()) {
            return Err(self.o.invalid_str(
                key,
                text,
                "must be a unicast address the gateway is reachable at",
            ));
        }
        Ok(addr)
    }

    fn preshared(
        &self,
        key: &str,
        value: Option<String>,
    ) -> Result<Option<PresharedKey>, ConfigError> {
        value
            .map(|v| parse_preshared_key(self.o, key, &v))
            .transpose()
    }

    fn peer(&self, i: usize, raw: RawPeer) -> Result<PeerConfig, ConfigError> {
        let key = |k: &str| format!("peer[{i}].{k}");
        if let Some(name) = &raw.name {
            let len = name.chars().count();
            if len == 0 || len > 64 || name.chars().any(char::is_control) {
                return Err(self.o.invalid_str(
                    &key("name"),
                    name,
                    "must be 1 to 64 printable characters",
                ));
            }
        }
        let public_key = self.required(
            &key("public_key"),
            raw.public_key,
            "the laptop's public key (`jvpn pubkey`)",
        )?;
        let public_key = parse_public_key(self.o, &key("public_key"), &public_key)?;
        let texts = raw.allowed_ips.unwrap_or_default();
        if texts.is_empty() {
            let what = "each peer needs allowed_ips = [\"10.77.0.2/32\", ...], the tunnel addresses it may use";
            return Err(self.o.missing(&key("allowed_ips"), what));
        }
        Ok(PeerConfig {
            name: raw.name,
            public_key,
            allowed_ips: self.networks(&key("allowed_ips"), texts)?,
            preshared_key: self.preshared(&key("preshared_key"), raw.preshared_key)?,
        })
    }
}

/// No two peers share a public key or a name, and no address belongs to two peers.
fn check_peers_distinct(o: Origin, peers: &[PeerConfig]) -> Result<(), ConfigError> {
    for (j, peer) in peers.iter().enumerate() {
        let earlier = &peers[..j];
        if let Some(i) = earlier.iter().position(|p| p.public_key == peer.public_key) {
            let key = format!("peer[{j}].public_key");
            let shown = crate::policy::keys::public_key_to_base64(&peer.public_key);
            let allowed =
                format!("is the same key as peer[{i}].public_key; each peer needs its own key");
            return Err(o.invalid_str(&key, &shown, allowed));
        }
        if let Some(name) = &peer.name {
            if let Some(i) = earlier.iter().position(|p| p.name.as_ref() == Some(name)) {
                let allowed = format!("is already the name of peer[{i}]; names must be unique");
                return Err(o.invalid_str(&format!("peer[{j}].name"), name, allowed));
            }
        }
        for (b, net) in peer.allowed_ips.iter().enumerate() {
            for (i, other) in earlier.iter().enumerate() {
                if let Some(a) = other.allowed_ips.iter().position(|n| overlaps(n, net)) {
                    let key = format!("peer[{j}].allowed_ips[{b}]");
                    let allowed = format!(
                        "overlaps peer[{i}].allowed_ips[{a}] = {}; an address may belong to one peer only",
                        toml_string(&other.allowed_ips[a].to_string())
                    );
                    return Err(o.invalid_str(&key, &net.to_string(), allowed));
                }
            }
        }
    }
    Ok(())
}

/// Whether two networks share an address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let same_family = matches!(
        (a.addr(), b.addr()),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    );
    same_family && (a.contains(&b.network()) || b.contains(&a.network()))
}

/// `path` made absolute against the current directory (`..` kept: resolving it lexically would
/// be wrong across symlinks).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
