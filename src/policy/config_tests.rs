//! Node configs: the issue's examples, path resolution, kinds, rejections, round trips.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::policy::render::Secrets;
use crate::policy::{
    check_file, load_config, ConfigError, GatewayConfig, LaptopConfig, NodeConfig, Policy,
    PresharedKey,
};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("jvpn-policy-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let voice = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/voice.toml");
        std::fs::copy(voice, dir.join("policy/voice.toml")).unwrap();
        std::fs::write(
            dir.join("policy/bad.toml"),
            "version = \"b\"\n[session]\nmax_lifetime_ms = 0\n",
        )
        .unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn public_key(seed: u8) -> String {
    STANDARD.encode(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .as_bytes(),
    )
}

/// 32 bytes that do not decode to a curve point.
fn not_a_point() -> String {
    let bytes = (2u8..)
        .map(|b| {
            let mut a = [0u8; 32];
            a[0] = b;
            a
        })
        .find(|a| VerifyingKey::from_bytes(a).is_err())
        .unwrap();
    STANDARD.encode(bytes)
}

fn weak_key() -> String {
    let mut identity = [0u8; 32];
    identity[0] = 1; // the neutral element: small order
    STANDARD.encode(identity)
}

const PSK: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

const LAPTOP: &str = r#"identity = "laptop.key"
policy = "../policy/voice.toml"
events = "events.jsonl"
[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24", "fd77::2/64"]
mtu = 1420
[gateway]
endpoint = "203.0.113.1:51900"
public_key = "{PK1}"
routes = ["10.77.0.0/24", "fd77::/64"]
preshared_key = "{PSK}"
"#;

const GATEWAY: &str = r#"identity = "gateway.key"
listen = "0.0.0.0:51900"
[tunnel]
address = ["10.77.0.1/24", "fd77::1/64"]
[[peer]]
name = "alice"
public_key = "{PK1}"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
[[peer]]
name = "bob"
public_key = "{PK2}"
allowed_ips = ["10.77.0.3/32", "fd77::3/128"]
preshared_key = "{PSK}"
"#;

fn fill(template: &str) -> String {
    template
        .replace("{PK1}", &public_key(1))
        .replace("{PK2}", &public_key(2))
        .replace("{PSK}", PSK)
        .replace("{NOT_A_POINT}", &not_a_point())
        .replace("{WEAK}", &weak_key())
}

fn load(dir: &TempDir, text: &str) -> Result<NodeConfig, ConfigError> {
    let path = dir.write("configs/node.toml", &fill(text));
    load_config(&path)
}

#[test]
fn the_issue_laptop_example_loads_with_paths_resolved() {
    let dir = TempDir::new();
    let NodeConfig::Laptop(c) = load(&dir, LAPTOP).unwrap() else {
        panic!("not a laptop config");
    };
    let configs = std::path::absolute(dir.0.join("configs")).unwrap();
    assert_eq!(c.source, configs.join("node.toml"));
    assert_eq!(c.identity, configs.join("laptop.key"));
    assert_eq!(c.events, Some(configs.join("events.jsonl")));
    assert_eq!(c.policy_path, Some(configs.join("../policy/voice.toml")));
    assert_eq!(c.policy.version, "voice-1");
    assert_eq!((c.tunnel.name.as_str(), c.tunnel.mtu), ("jvpn0", 1420));
    assert_eq!(c.tunnel.addresses[1].to_string(), "fd77::2/64");
    assert_eq!(c.gateway.endpoint.to_string(), "203.0.113.1:51900");
    assert_eq!(c.gateway.routes.len(), 2);
    assert_eq!(
        c.gateway.preshared_key.as_ref().map(|k| k.as_bytes()[0]),
        Some(1)
    );
    assert_eq!(c.control_socket, None);
}

#[test]
fn the_issue_gateway_example_loads_with_defaults() {
    let dir = TempDir::new();
    let c = GatewayConfig::from_file(&dir.write("configs/gw.toml", &fill(GATEWAY))).unwrap();
    assert_eq!(c.policy, Policy::default());
    assert_eq!(c.policy_path, None);
    assert_eq!((c.tunnel.name.as_str(), c.tunnel.mtu), ("jvpn0", 1420));
    assert_eq!(c.listen.port(), 51900);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[1].name.as_deref(), Some("bob"));
    assert!(c.peers[0].preshared_key.is_none());
}

#[test]
fn absolute_paths_stay_as_written() {
    let dir = TempDir::new();
    let text = LAPTOP.replace("\"laptop.key\"", "\"/etc/jvpn/laptop.key\"");
    let c = LaptopConfig::from_file(&dir.write("configs/l.toml", &fill(&text))).unwrap();
    assert_eq!(c.identity, Path::new("/etc/jvpn/laptop.key"));
}

#[test]
fn the_wrong_kind_of_file_is_refused_by_name() {
    let dir = TempDir::new();
    let laptop = dir.write("configs/l.toml", &fill(LAPTOP));
    let gateway = dir.write("configs/g.toml", &fill(GATEWAY));
    let policy = dir.0.join("policy/voice.toml");
    let err = GatewayConfig::from_file(&laptop).unwrap_err().to_string();
    assert!(err.contains("is a laptop config"), "{err}");
    let err = LaptopConfig::from_file(&gateway).unwrap_err().to_string();
    assert!(err.contains("is a gateway config"), "{err}");
    let err = load_config(&policy).unwrap_err().to_string();
    assert!(err.contains("is a policy file, not a node config"), "{err}");
    let both = dir.write(
        "configs/both.toml",
        &format!("listen = \"0.0.0.0:1\"\n{}", fill(LAPTOP)),
    );
    let err = check_file(&both).unwrap_err().to_string();
    assert!(err.contains("[gateway]"), "{err}");
    let neither = dir.write("configs/n.toml", "identity = \"k\"\n");
    let err = check_file(&neither).unwrap_err().to_string();
    assert!(err.contains("is not a jvpn file"), "{err}");
}

#[test]
fn check_names_the_kind_and_never_prints_a_preshared_key() {
    let dir = TempDir::new();
    for (name, template, kind) in [
        ("l.toml", LAPTOP, "laptop config"),
        ("g.toml", GATEWAY, "gateway config"),
    ] {
        let path = dir.write(&format!("configs/{name}"), &fill(template));
        let out = check_file(&path).unwrap();
        let first = out.lines().next().unwrap();
        assert!(first.starts_with(&format!("# jvpn {kind} ")), "{first}");
        assert!(!out.contains(PSK), "{out}");
        assert!(out.contains("# preshared_key is set (not shown)"), "{out}");
        assert!(out.contains(&public_key(1)), "{out}");
    }
}

#[test]
fn normalized_configs_reparse_to_equal_values() {
    let dir = TempDir::new();
    let laptop = LaptopConfig::from_file(&dir.write("configs/l.toml", &fill(LAPTOP))).unwrap();
    let gateway = GatewayConfig::from_file(&dir.write("configs/g.toml", &fill(GATEWAY))).unwrap();
    // Written elsewhere: every path is absolute, so the directory no longer matters.
    let again = dir.write("l2.toml", &laptop.render(Secrets::Include));
    let mut reparsed = LaptopConfig::from_file(&again).unwrap();
    reparsed.source = laptop.source.clone();
    assert_eq!(reparsed, laptop);
    let again = dir.write("g2.toml", &gateway.render(Secrets::Include));
    let mut reparsed = GatewayConfig::from_file(&again).unwrap();
    reparsed.source = gateway.source.clone();
    assert_eq!(reparsed, gateway);
    // The redacted form parses too, without the keys.
    let redacted = dir.write("g3.toml", &gateway.to_normalized_toml());
    let reparsed = GatewayConfig::from_file(&redacted).unwrap();
    assert!(reparsed.peers.iter().all(|p| p.preshared_key.is_none()));
}

#[test]
fn debug_output_redacts_preshared_keys() {
    let dir = TempDir::new();
    let c = load(&dir, LAPTOP).unwrap();
    let debug = format!("{c:?}");
    assert!(debug.contains("PresharedKey(<redacted>)"), "{debug}");
    let psk = PresharedKey::from_bytes([7; 32]);
    assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
    assert!(!debug.contains("[1, 2, 3, 4"), "{debug}");
}

/// One row per rule: (base file, line replaced, replacement, expected key path, expected text).
const REJECTIONS: &[(&str, &str, &str, &str, &str)] = &[
    ("L", "public_key = \"{PK1}\"", "public_key = \"not base64!\"", "gateway.public_key", "= \"not base64!\": must be the base64 of a 32-byte Ed25519 public key"),
    ("L", "public_key = \"{PK1}\"", "public_key = \"AAAA\"", "gateway.public_key", "decodes to 3 bytes, not 32"),
    ("L", "public_key = \"{PK1}\"", "public_key = \"{NOT_A_POINT}\"", "gateway.public_key", "not a point on the curve"),
    ("L", "public_key = \"{PK1}\"", "public_key = \"{WEAK}\"", "gateway.public_key", "small-order"),
    ("L", "public_key = \"{PK1}\"\n", "", "gateway.public_key", "missing"),
    ("L", "name = \"jvpn0\"", "name = \"much-too-long-if0\"", "tunnel.name", "= \"much-too-long-if0\": must be a Linux interface name"),
    ("L", "name = \"jvpn0\"", "name = \"tun/0\"", "tunnel.name", "= \"tun/0\""),
    ("L", "name = \"jvpn0\"", "name = \"\"", "tunnel.name", "= \"\""),
    ("L", "mtu = 1420", "mtu = 1200", "tunnel.mtu", "= 1200: must be between 1280 and 9000 because the tunnel has an IPv6 address (tunnel.address[1] = \"fd77::2/64\")"),
    ("L", "mtu = 1420", "mtu = 9001", "tunnel.mtu", "= 9001"),
    ("L", "mtu = 1420", "mtu = 70000", "tunnel.mtu", "= 70000"),
    ("L", "mtu = 1420", "mtu = 0", "tunnel.mtu", "= 0"),
    ("G", "address = [\"10.77.0.1/24\", \"fd77::1/64\"]", "address = [\"10.77.0.1/24\"]\nmtu = 500", "tunnel.mtu", "= 500: must be between 576 and 9000"),
    ("L", "address = [\"10.77.0.2/24\", \"fd77::2/64\"]", "address = []", "tunnel.address", "missing"),
    ("L", "address = [\"10.77.0.2/24\", \"fd77::2/64\"]", "address = [\"10.77.0.2\"]", "tunnel.address[0]", "= \"10.77.0.2\": must be an address with its prefix length"),
    ("L", "address = [\"10.77.0.2/24\", \"fd77::2/64\"]", "address = [\"10.77.0.2/24\", \"::/64\"]", "tunnel.address[1]", "= \"::/64\""),
    ("L", "address = [\"10.77.0.2/24\", \"fd77::2/64\"]", "address = \"10.77.0.2/24\"", "tunnel.address", "invalid type: string"),
    ("L", "endpoint = \"203.0.113.1:51900\"", "endpoint = \"vpn.example.com:51900\"", "gateway.endpoint", "host names are not resolved"),
    ("L", "endpoint = \"203.0.113.1:51900\"", "endpoint = \"203.0.113.1:0\"", "gateway.endpoint", "= \"203.0.113.1:0\": must have a port"),
    ("L", "endpoint = \"203.0.113.1:51900\"", "endpoint = \"0.0.0.0:51900\"", "gateway.endpoint", "= \"0.0.0.0:51900\""),
    ("L", "routes = [\"10.77.0.0/24\", \"fd77::/64\"]", "routes = [\"10.77.0.0/24\", \"fd77::5/64\"]", "gateway.routes[1]", "= \"fd77::5/64\": has host bits set; write the network, \"fd77::/64\""),
    ("L", "routes = [\"10.77.0.0/24\", \"fd77::/64\"]", "routes = [\"10.77.0.0/33\"]", "gateway.routes[0]", "= \"10.77.0.0/33\""),
    ("L", "identity = \"laptop.key\"\n", "", "identity", "identity: missing"),
    ("L", "events = \"events.jsonl\"", "events = \"\"", "events", "= \"\": must be a file path"),
    ("L", "mtu = 1420", "mtu = \"1420\"", "tunnel.mtu", "invalid type: string \"1420\""),
    ("L", "mtu = 1420", "mtu = 1420\nmtu6 = 1400", "tunnel.mtu6", "unknown field `mtu6`"),
    ("L", "policy = \"../policy/voice.toml\"", "policy = \"../policy/none.toml\"", "policy", "= \"../policy/none.toml\": failed to read"),
    ("L", "policy = \"../policy/voice.toml\"", "policy = \"../policy/bad.toml\"", "policy", "bad.toml: session.max_lifetime_ms = 0: must be between"),
    ("G", "public_key = \"{PK2}\"", "public_key = \"{PK1}\"", "peer[1].public_key", "is the same key as peer[0].public_key"),
    ("G", "name = \"bob\"", "name = \"alice\"", "peer[1].name", "= \"alice\": is already the name of peer[0]"),
    ("G", "name = \"bob\"", "name = \"\"", "peer[1].name", "= \"\": must be 1 to 64"),
    ("G", "allowed_ips = [\"10.77.0.3/32\", \"fd77::3/128\"]", "allowed_ips = [\"10.77.0.0/24\"]", "peer[1].allowed_ips[0]", "= \"10.77.0.0/24\": overlaps peer[0].allowed_ips[0] = \"10.77.0.2/32\""),
    ("G", "allowed_ips = [\"10.77.0.3/32\", \"fd77::3/128\"]", "allowed_ips = [\"10.77.0.3/32\", \"fd77::2/128\"]", "peer[1].allowed_ips[1]", "overlaps peer[0].allowed_ips[1] = \"fd77::2/128\""),
    ("G", "allowed_ips = [\"10.77.0.3/32\", \"fd77::3/128\"]", "allowed_ips = []", "peer[1].allowed_ips", "missing"),
    ("G", "allowed_ips = [\"10.77.0.3/32\", \"fd77::3/128\"]", "allowed_ips = [\"10.77.0.3/32\"]\nendpoint = \"1.2.3.4:5\"", "peer[1].endpoint", "unknown field `endpoint`"),
    ("G", "preshared_key = \"{PSK}\"", "preshared_key = \"c2VjcmV0LXNob3J0\"", "peer[1].preshared_key", "= <redacted, 16 characters>: must be the base64 of 32 random bytes"),
    ("G", "listen = \"0.0.0.0:51900\"", "listen = \"0.0.0.0\"", "listen", "= \"0.0.0.0\": must be IP:PORT"),
    ("G", "listen = \"0.0.0.0:51900\"", "listen = \"[::]:0\"", "listen", "must have a port"),
    ("G", "identity = \"gateway.key\"", "identity = 7", "identity", "invalid type: integer `7`"),
    ("L", "identity = \"laptop.key\"\n", "identity = \"laptop.key\"\nuser = \"no-such-user-jvpn\"\n", "user", "= \"no-such-user-jvpn\": must name a user that exists on this system"),
    ("G", "identity = \"gateway.key\"", "identity = \"gateway.key\"\nuser = \"root\"", "user", "= \"root\": must name a user that exists on this system (see `getent passwd`) other than root"),
];

#[test]
fn the_default_user_is_nobody_and_check_shows_it() {
    let dir = TempDir::new();
    let NodeConfig::Laptop(c) = load(&dir, LAPTOP).unwrap() else {
        panic!("not a laptop config");
    };
    assert_eq!(c.user.name, "nobody");
    assert_ne!(c.user.uid, 0);
    assert!(c.to_normalized_toml().contains("user = \"nobody\""));
}

#[test]
fn an_identity_readable_by_others_is_refused_by_check_as_openssh_does() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let key = dir.write("configs/laptop.key", "not read by check\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&dir, LAPTOP).expect_err("a 0644 identity must be refused");
    assert_eq!(err.key(), Some("identity"), "{err}");
    let abs = std::path::absolute(&key).unwrap();
    let shown = format!("permissions 0644 for '{}' are too open", abs.display());
    assert!(err.to_string().contains(&shown), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&dir, LAPTOP).is_ok());
}

#[test]
fn an_oversized_config_or_policy_is_refused_naming_the_file_and_the_limit() {
    let dir = TempDir::new();
    let padding = format!("#{}\n", "x".repeat(1 << 20));
    let err = load(&dir, &format!("{LAPTOP}{padding}")).unwrap_err();
    let limit = "is larger than 1048576 bytes (1 MiB), the most a config or policy file may be";
    assert_eq!(
        err.to_string(),
        format!("{} {limit}", dir.0.join("configs/node.toml").display())
    );
    dir.write("policy/big.toml", &format!("version = \"big\"\n{padding}"));
    let text = LAPTOP.replace("voice.toml", "big.toml");
    let err = load(&dir, &text).unwrap_err();
    assert_eq!(err.key(), Some("policy"), "{err}");
    assert!(
        err.to_string().contains(&format!("big.toml {limit}")),
        "{err}"
    );
    let fits = format!("{LAPTOP}#{}\n", "x".repeat((1 << 20) - 1000));
    assert!(load(&dir, &fits).is_ok(), "a file under the limit loads");
}

#[test]
fn each_broken_config_rule_is_refused_with_key_and_value() {
    let dir = TempDir::new();
    for (base, from, to, key, needle) in REJECTIONS {
        let template = if *base == "L" { LAPTOP } else { GATEWAY };
        assert!(
            template.contains(from),
            "row for {key}: base has no {from:?}"
        );
        let text = template.replace(from, to);
        let err = match load(&dir, &text) {
            Ok(_) => panic!("accepted:\n{}", fill(&text)),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(message.contains("node.toml"), "{message}");
        assert_eq!(err.key(), Some(*key), "{message}");
        assert!(message.contains(needle), "{message}\n  expected: {needle}");
        if needle.starts_with("= ") {
            assert!(message.contains(&format!("{key} {needle}")), "{message}");
        }
        assert!(
            !message.contains("c2VjcmV0LXNob3J0"),
            "secret leaked: {message}"
        );
    }
}

#[test]
fn a_gateway_without_peers_is_refused() {
    let dir = TempDir::new();
    let text =
        "identity = \"g.key\"\nlisten = \"0.0.0.0:1\"\n[tunnel]\naddress = [\"10.0.0.1/24\"]\n";
    let err = load(&dir, text).unwrap_err();
    assert_eq!(err.key(), Some("peer"), "{err}");
    assert!(err.to_string().contains("at least one [[peer]]"), "{err}");
}

#[test]
fn a_missing_config_names_the_file() {
    let err = load_config(Path::new("/nonexistent/jvpn/laptop.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to read /nonexistent/jvpn/laptop.toml: No such file or directory (os error 2)"
    );
}
