//! Running a node: turns a validated config into a core, a TUN device and a socket, drops
//! privileges, and hands them to the driver until SIGINT/SIGTERM.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::driver;
use crate::events::SinkSpec;
use crate::identity::{Identity, PublicKey};
use crate::policy::{proto_config, GatewayConfig, LaptopConfig, Policy, PresharedKey};
use crate::proto::client::{Client, ClientConfig};
use crate::proto::gateway::{self, Gateway, PeerSpec};
use crate::proto::{Core, Event, Seed, StaticKeys};
use crate::sys::udp::Sockets;
use crate::sys::uplinks::UplinkWatch;
use crate::sys::{privileges, tun::Tun};

/// Events, the control socket and policy reload of one running node. Started while the process
/// still has its privileges (the socket and event files are created then).
struct Observability {
    hub: crate::events::EventHub,
    control_rx: tokio::sync::mpsc::Receiver<crate::control::ControlRequest>,
    control_task: tokio::task::JoinHandle<()>,
    info: crate::control::NodeInfo,
    policy_path: Option<std::path::PathBuf>,
    audit: Option<crate::audit::log::AuditWorker>,
}

impl Observability {
    fn start(
        role: crate::control::NodeRole,
        identity: &Identity,
        (policy, policy_path): (&Policy, Option<std::path::PathBuf>),
        (configured, cli): (Option<&std::path::PathBuf>, Vec<SinkSpec>),
        (socket, tunnel): (Option<&std::path::Path>, &str),
        peers: Vec<String>,
        (audit_path, peer_keys): (Option<&std::path::Path>, Vec<[u8; 32]>),
    ) -> anyhow::Result<Self> {
        let audit = match audit_path {
            Some(p) => {
                let log = crate::audit::AuditLog::open(p, identity.signing_key().clone())?;
                tracing::info!(file = %p.display(), next_seq = log.next_seq(), "audit trail on");
                Some(crate::audit::log::AuditWorker::spawn(log, peer_keys)?)
            }
            None => None,
        };
        let hub = crate::events::EventHub::new(sinks(configured, cli))?;
        let socket = crate::control::socket_path_for(socket, tunnel)?;
        let server = crate::control::ControlServer::bind(&socket)?;
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
        let control_task = tokio::spawn(server.serve(control_tx, hub.clone()));
        let info = crate::control::NodeInfo {
            role,
            node_id: identity.public().to_string(),
            policy_version: policy.version.clone(),
            tunnel: tunnel.to_owned(),
            started: driver::now(),
            peers,
        };
        Ok(Self {
            hub,
            control_rx,
            control_task,
            info,
            policy_path,
            audit,
        })
    }

    /// Runs the driver until a signal, writing every event to the log and the sinks, then
    /// closes the control socket and flushes the sinks.
    async fn run<C: Core>(
        self,
        core: &mut C,
        tun: &Tun,
        sockets: &mut Sockets,
        uplinks: Option<UplinkWatch>,
        log: impl Fn(&Event),
    ) -> anyhow::Result<()> {
        let Self {
            hub,
            control_rx,
            control_task,
            info,
            policy_path,
            audit,
        } = self;
        let node_id = info.node_id.clone();
        // Shared with the reload hook, so events report the policy in force.
        let policy_version = Rc::new(RefCell::new(info.policy_version.clone()));
        let applied_version = policy_version.clone();
        let emit = |e: &Event, v: Option<u64>| {
            log(e);
            hub.emit(&crate::events::record_of(
                e,
                &node_id,
                &policy_version.borrow(),
                v,
            ));
        };
        let control = driver::Control {
            requests: control_rx,
            info,
            reload: Some(reloader(policy_path)),
            applied: Some(Box::new(move |p: &Policy| {
                *applied_version.borrow_mut() = p.version.clone()
            })),
            audit,
        };
        driver::run(
            core,
            tun,
            sockets,
            uplinks,
            emit,
            Some(control),
            shutdown_signal(),
        )?;
        control_task.abort();
        let _ = control_task.await;
        hub.flush(Duration::from_secs(1));
        Ok(())
    }
}

/// The SIGHUP hook: re-reads the policy file the config names (the built-in default has no
/// file to re-read). Once it applies, its version is the one events report.
fn reloader(path: Option<std::path::PathBuf>) -> driver::Reload {
    Box::new(move || {
        let path = path
            .as_ref()
            .ok_or("the config names no policy file (the built-in default is in force)")?;
        Policy::from_file(path).map_err(|e| e.to_string())
    })
}

/// Setup is done: every thread becomes the config's `user` with no capabilities (or the node
/// does not run). Warns when that user cannot read the policy file a SIGHUP re-reads.
fn drop_privileges(
    user: &privileges::Account,
    policy_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    privileges::drop_to(user)
        .with_context(|| format!("failed to drop privileges to user {:?}", user.name))?;
    if let Some(path) = policy_path {
        if let Err(e) = std::fs::File::open(path) {
            tracing::warn!(file = %path.display(), user = %user.name, error = %e, "SIGHUP cannot re-read this policy file as the node's user; make it readable by that user");
        }
    }
    Ok(())
}

/// Event sinks: `--events` when given (replacing the config's), else the config's `events`.
fn sinks(configured: Option<&std::path::PathBuf>, cli: Vec<SinkSpec>) -> Vec<SinkSpec> {
    if !cli.is_empty() {
        return cli;
    }
    configured
        .cloned()
        .map(SinkSpec::File)
        .into_iter()
        .collect()
}

fn static_keys(id: &Identity) -> StaticKeys {
    StaticKeys {
        private: id.x25519_private(),
        public: id.public().x25519(),
    }
}

fn psk(p: &Option<PresharedKey>) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(p.as_ref().map(|k| *k.as_bytes()).unwrap_or([0; 32]))
}

/// A full-entropy seed for a core (H1): 32 bytes from the OS.
fn seed() -> Seed {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    Seed::from_bytes(bytes)
}

/// Runs the laptop side in the foreground.
pub async fn run_laptop(cfg: LaptopConfig, events: Vec<SinkSpec>) -> anyhow::Result<()> {
    let identity = Identity::read(&cfg.identity)?;
    let gateway_key = PublicKey::from(cfg.gateway.public_key);
    let mut inner_routes: Vec<IpNet> = cfg.tunnel.addresses.iter().map(|a| a.trunc()).collect();
    inner_routes.extend(cfg.gateway.routes.iter().copied());
    let tun = Tun::create(
        &cfg.tunnel.name,
        cfg.tunnel.mtu,
        &cfg.tunnel.addresses,
        &cfg.gateway.routes,
    )?;
    let mut sockets =
        Sockets::bind(None, Some(cfg.gateway.endpoint)).context("failed to open the UDP socket")?;
    let watch = UplinkWatch::open(
        cfg.gateway.endpoint.ip(),
        tun.index,
        cfg.policy.bearers.clone(),
    )
    .context("failed to watch the network interfaces over netlink")?;
    let obs = Observability::start(
        crate::control::NodeRole::Laptop,
        &identity,
        (&cfg.policy, cfg.policy_path.clone()),
        (cfg.events.as_ref(), events),
        (cfg.control_socket.as_deref(), &tun.name),
        Vec::new(),
        (cfg.audit.as_deref(), Vec::new()),
    )?;
    drop_privileges(&cfg.user, cfg.policy_path.as_deref())?;
    tracing::info!(
        public_key = %identity.public(),
        gateway = %gateway_key,
        tun = %tun.name,
        "laptop starting"
    );
    let core_cfg = ClientConfig {
        keys: static_keys(&identity),
        gateway_public: gateway_key.x25519(),
        psk: psk(&cfg.gateway.preshared_key),
        endpoint: cfg.gateway.endpoint,
        routes: inner_routes,
        proto: proto_config(&cfg.policy),
        audit: cfg.audit.is_some(),
    };
    let mut core = Client::new(core_cfg, seed(), driver::now(), driver::wall_now());
    let log = |e: &Event| crate::events::log_event(e, &|_| "gateway".to_owned());
    obs.run(&mut core, &tun, &mut sockets, Some(watch), log)
        .await?;
    log_drops(core.drop_counts());
    tracing::info!(tun = %tun.name, "laptop stopped");
    Ok(())
}

/// Runs the gateway in the foreground.
pub async fn run_gateway(cfg: GatewayConfig, events: Vec<SinkSpec>) -> anyhow::Result<()> {
    let identity = Identity::read(&cfg.identity)?;
    let (peers, routes, names) = peer_specs(&cfg);
    let tun = Tun::create(
        &cfg.tunnel.name,
        cfg.tunnel.mtu,
        &cfg.tunnel.addresses,
        &routes,
    )?;
    let mut sockets = Sockets::bind(Some(cfg.listen), None).with_context(|| {
        format!(
            "failed to listen on {} (is another gateway running? change `listen`)",
            cfg.listen
        )
    })?;
    let obs = Observability::start(
        crate::control::NodeRole::Gateway,
        &identity,
        (&cfg.policy, cfg.policy_path.clone()),
        (cfg.events.as_ref(), events),
        (cfg.control_socket.as_deref(), &tun.name),
        names.clone(),
        (
            cfg.audit.as_deref(),
            cfg.peers.iter().map(|p| p.public_key.to_bytes()).collect(),
        ),
    )?;
    drop_privileges(&cfg.user, cfg.policy_path.as_deref())?;
    tracing::info!(public_key = %identity.public(), listen = %cfg.listen, peers = names.len(), tun = %tun.name, "gateway starting");
    let core_cfg = gateway::GatewayConfig {
        keys: static_keys(&identity),
        peers,
        proto: proto_config(&cfg.policy),
    };
    let mut core = Gateway::new(core_cfg, seed(), driver::now());
    let log =
        |e: &Event| crate::events::log_event(e, &|i| names.get(i).cloned().unwrap_or_default());
    obs.run(&mut core, &tun, &mut sockets, None, log).await?;
    log_drops(core.drop_counts());
    tracing::info!(tun = %tun.name, "gateway stopped");
    Ok(())
}

/// The core's view of the configured peers, the routes to their inner addresses, and the names
/// `status` and the logs show for them (the public key where a peer has no name).
fn peer_specs(cfg: &GatewayConfig) -> (Vec<PeerSpec>, Vec<IpNet>, Vec<String>) {
    let peers = cfg
        .peers
        .iter()
        .map(|p| PeerSpec {
            public: PublicKey::from(p.public_key).x25519(),
            psk: psk(&p.preshared_key),
            allowed_ips: p.allowed_ips.clone(),
        })
        .collect();
    let routes = cfg.peers.iter().flat_map(|p| p.allowed_ips.iter().copied());
    let names = cfg
        .peers
        .iter()
        .map(|p| {
            p.name
                .clone()
                .unwrap_or_else(|| PublicKey::from(p.public_key).to_base64())
        })
        .collect();
    (peers, routes.collect(), names)
}

fn log_drops(d: &crate::proto::DropCounters) {
    let summary: Vec<String> = d.nonzero().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::info!(total = d.total(), "dropped packets: {}", summary.join(" "));
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C will stop this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
