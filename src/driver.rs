//! The event loop: the only place that reads the clock and owns file descriptors. One loop per
//! node drains the core's outputs, then waits on TUN reads, UDP reads (one socket per uplink on
//! the laptop), bearer changes, the next deadline and shutdown. Reads are drained in bursts
//! before the loop waits again; the hot path reuses two buffers and allocates nothing per
//! packet. A send error is fed back to the core: a dead uplink is data for the path logic.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::net::UdpSocket;
use tokio::sync::mpsc;

use crate::control::{ControlRequest, NodeRole, SessionStatus, StatusReport};

use crate::proto::client::Client;
use crate::proto::gateway::Gateway;
use crate::proto::path::Uplink;
use crate::proto::{
    Event, OwnedTransmit, Received, SessionId, Timestamp, Transmit, UplinkId, TUN_HEADROOM,
    TUN_TAILROOM,
};
use crate::sys::pktinfo;
use crate::sys::tun::Tun;
use crate::sys::uplinks::{bind_to_device, UplinkWatch};

/// How many packets one readiness wake-up may drain from a source before the loop looks at
/// the others again.
const BURST: usize = 64;
/// Largest datagram or inner packet handled.
const MAX_PACKET: usize = 65_535;

/// The calls the driver makes on a core (laptop or gateway).
pub trait Core {
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit>;
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received;
    fn handle_timeout(&mut self, now: Instant);
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant);
    fn handle_send_error(&mut self, via: UplinkId, now: Instant);
    fn shutdown(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<OwnedTransmit>;
    fn poll_event(&mut self) -> Option<Event>;
    fn poll_timeout(&self) -> Option<Instant>;
    /// Drop counters, for `jvpn status`.
    fn drop_counts(&self) -> &crate::proto::DropCounters;
    /// Sessions, for `jvpn status`.
    fn status(&self, _now: Instant) -> Vec<SessionStatus> {
        Vec::new()
    }
    /// `jvpn terminate`.
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String>;
    /// The session's current state_version (for events that do not carry one).
    fn state_version(&self, session_id: SessionId) -> Option<u64>;
    /// A reloaded policy.
    fn set_proto(&mut self, proto: crate::proto::ProtoConfig, now: Instant);
    /// Next piece of audit work (E5): a re-anchor to sign, or a laptop's record to witness.
    fn poll_audit(&mut self) -> Option<AuditItem>;
    /// A record this node signed, to send to the gateway (laptop).
    fn send_audit_record(&mut self, _session_id: SessionId, _bytes: Vec<u8>, _now: Instant) {}
    /// A socket to open or close (laptop, moving target).
    fn poll_socket_change(&mut self) -> Option<crate::proto::SocketChange> {
        None
    }
    /// The core's own audit counters, for `jvpn status`.
    fn audit_counters(&self) -> Vec<(&'static str, u64)>;
}

/// Audit work a core hands to the node.
pub enum AuditItem {
    Draft(crate::proto::audit::RebindDraft),
    Received(crate::proto::audit::ReceivedRecord),
}

/// The control socket's side of the loop: requests to answer, and what `jvpn status` says
/// about the node itself.
pub struct Control {
    pub requests: mpsc::Receiver<ControlRequest>,
    pub info: NodeInfo,
    /// Re-reads the policy on SIGHUP; an error keeps the running policy (P3).
    pub reload: Option<Reload>,
    /// The audit trail's writer thread, when the config names an `audit` file.
    pub audit: Option<crate::audit::log::AuditWorker>,
}

/// Loads the policy again (SIGHUP).
pub type Reload = Box<dyn FnMut() -> Result<crate::policy::Policy, String>>;

/// What `jvpn status` says about the node itself.
pub struct NodeInfo {
    pub role: NodeRole,
    pub node_id: String,
    pub policy_version: String,
    pub tunnel: String,
    pub started: Instant,
    /// Peer names by configuration index (the gateway's `[[peer]]` names or keys).
    pub peers: Vec<String>,
}

fn answer_control<C: Core>(
    core: &mut C,
    req: ControlRequest,
    info: &NodeInfo,
    audit: Option<&crate::audit::log::AuditWorker>,
) {
    let now = Instant::now();
    match req {
        ControlRequest::Status { reply } => {
            let uptime = now.saturating_duration_since(info.started).as_millis() as u64;
            let mut r = StatusReport::new(
                info.role,
                info.node_id.clone(),
                info.policy_version.clone(),
                uptime,
            );
            r.tunnel = Some(info.tunnel.clone());
            r.drops = core
                .drop_counts()
                .nonzero()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            r.sessions = core.status(now);
            r.audit = audit.map(|a| {
                let load =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                let mut m: BTreeMap<String, u64> = [
                    ("appended", load(&a.stats.appended)),
                    ("failed", load(&a.stats.failed)),
                    ("rejected", load(&a.stats.rejected)),
                ]
                .into_iter()
                .chain(core.audit_counters())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                if info.role == NodeRole::Laptop {
                    m.remove("rejected");
                }
                m
            });
            for st in &mut r.sessions {
                let name = st
                    .peer
                    .as_deref()
                    .and_then(|p| p.parse::<usize>().ok())
                    .and_then(|i| info.peers.get(i));
                if let Some(name) = name {
                    st.peer = Some(name.clone());
                }
            }
            let _ = reply.send(r);
        }
        ControlRequest::Terminate { session_id, reply } => {
            let answer = match parse_session_id(&session_id) {
                Some(id) => core.terminate(id, now),
                None => Err(format!("{session_id:?} is not a SessionID (32 hex digits)")),
            };
            let _ = reply.send(answer);
        }
    }
}

/// SIGHUP: load the policy again; a valid one applies from now on, an invalid one is refused
/// with a warning naming the file, key and value, and the running policy stays (P3).
fn reload<C: Core>(core: &mut C, load: Option<&mut Reload>) {
    let Some(load) = load else {
        tracing::warn!("SIGHUP: this node has no policy to reload");
        return;
    };
    match load() {
        Ok(policy) => {
            core.set_proto(crate::node::proto_config(&policy), Instant::now());
            tracing::info!(policy_version = %policy.version, "policy reloaded");
        }
        Err(e) => tracing::warn!("policy reload refused, keeping the running policy: {e}"),
    }
}

fn parse_session_id(s: &str) -> Option<SessionId> {
    let s = s.trim();
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId(id))
}

fn session_status(s: &crate::proto::session::Session, now: Instant) -> SessionStatus {
    let stats = &s.stats;
    let mut st = SessionStatus::new(s.id().to_hex());
    st.tx_packets = Some(stats.tx_packets);
    st.tx_bytes = Some(stats.tx_bytes);
    st.rx_packets = Some(stats.rx_packets);
    st.rx_bytes = Some(stats.rx_bytes);
    st.replays = Some(stats.replays);
    st.auth_failures = Some(stats.auth_failures);
    st.key_epoch = Some(u64::from(s.epoch()));
    st.key_age_ms = Some(now.saturating_duration_since(s.key_installed()).as_millis() as u64);
    st.last_authenticated_ms = Some(now.saturating_duration_since(s.last_recv).as_millis() as u64);
    st.age_ms = Some(now.saturating_duration_since(s.created).as_millis() as u64);
    st
}

impl Core for Client {
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        Client::handle_tun_packet(self, buf, len, now)
    }
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        Client::handle_datagram(self, via, local, remote, buf, len, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Client::handle_timeout(self, now)
    }
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant) {
        Client::handle_uplinks(self, snapshot, now)
    }
    fn handle_send_error(&mut self, via: UplinkId, now: Instant) {
        Client::handle_send_error(self, via, now)
    }
    fn shutdown(&mut self, now: Instant) {
        Client::shutdown(self, now)
    }
    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        Client::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Client::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Client::poll_timeout(self).map(|(t, _)| t)
    }
    fn drop_counts(&self) -> &crate::proto::DropCounters {
        Client::drops(self)
    }
    fn status(&self, now: Instant) -> Vec<SessionStatus> {
        let Some(s) = self.session() else {
            return Vec::new();
        };
        let mut st = session_status(s, now);
        st.peer = Some("gateway".into());
        if let Some((state, version)) = self.state() {
            st.state = Some(state.name().into());
            st.state_version = Some(version);
        }
        let active = self.paths().active();
        st.bearer = self
            .paths()
            .uplinks()
            .find(|u| u.id == active)
            .map(|u| u.name.clone());
        st.bearer_class = self.paths().class_of(active).map(|c| c.as_str().into());
        vec![st]
    }
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        match self.session() {
            Some(s) if s.id() == session_id => {
                Client::terminate(self, crate::proto::state::Reason::OperatorTerminated, now);
                Ok(format!(
                    "session {} terminated (operator_terminated); a new session follows",
                    session_id.to_hex()
                ))
            }
            _ => Err(format!("no session {} on this laptop", session_id.to_hex())),
        }
    }
    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        match (self.session(), self.state()) {
            (Some(s), Some((_, v))) if s.id() == session_id => Some(v),
            _ => None,
        }
    }
    fn set_proto(&mut self, proto: crate::proto::ProtoConfig, now: Instant) {
        Client::set_proto(self, proto, now)
    }
    fn poll_audit(&mut self) -> Option<AuditItem> {
        Client::poll_audit(self).map(AuditItem::Draft)
    }
    fn send_audit_record(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant) {
        Client::send_audit_record(self, session_id, bytes, now)
    }
    fn poll_socket_change(&mut self) -> Option<crate::proto::SocketChange> {
        Client::poll_socket_change(self)
    }
    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        let c = Client::audit_counters(self);
        vec![
            ("acknowledged", c.acknowledged),
            ("undelivered", c.undelivered),
            ("draft_overflow", c.draft_overflow),
        ]
    }
}

impl Core for Gateway {
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        Gateway::handle_tun_packet(self, buf, len, now)
    }
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        Gateway::handle_datagram(self, via, local, remote, buf, len, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Gateway::handle_timeout(self, now)
    }
    fn handle_uplinks(&mut self, _snapshot: Vec<Uplink>, _now: Instant) {}
    fn handle_send_error(&mut self, _via: UplinkId, _now: Instant) {}
    fn shutdown(&mut self, now: Instant) {
        Gateway::shutdown(self, now)
    }
    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        Gateway::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Gateway::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Gateway::poll_timeout(self).map(|(t, _)| t)
    }
    fn drop_counts(&self) -> &crate::proto::DropCounters {
        Gateway::drops(self)
    }
    fn status(&self, now: Instant) -> Vec<SessionStatus> {
        self.sessions(now)
            .into_iter()
            .map(|v| {
                let mut st = SessionStatus::new(v.session_id.to_hex());
                st.peer = Some(v.peer.to_string());
                st.state = Some(v.state.name().into());
                st.state_version = Some(v.state_version);
                st.remote = Some(v.endpoint.to_string());
                st.tx_packets = Some(v.stats.tx_packets);
                st.tx_bytes = Some(v.stats.tx_bytes);
                st.rx_packets = Some(v.stats.rx_packets);
                st.rx_bytes = Some(v.stats.rx_bytes);
                st.replays = Some(v.stats.replays);
                st.auth_failures = Some(v.stats.auth_failures);
                st.key_epoch = Some(u64::from(v.key_epoch));
                st.key_age_ms = Some(v.key_age.as_millis() as u64);
                st.age_ms = Some(v.age.as_millis() as u64);
                st.last_authenticated_ms = Some(v.since_last_recv.as_millis() as u64);
                st
            })
            .collect()
    }
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        if Gateway::terminate(self, session_id, now) {
            Ok(format!(
                "session {} terminated (operator_terminated)",
                session_id.to_hex()
            ))
        } else {
            Err(format!(
                "no session {} on this gateway",
                session_id.to_hex()
            ))
        }
    }
    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        Gateway::state_version(self, session_id)
    }
    fn set_proto(&mut self, proto: crate::proto::ProtoConfig, _now: Instant) {
        Gateway::set_proto(self, proto)
    }
    fn poll_audit(&mut self) -> Option<AuditItem> {
        Gateway::poll_audit(self).map(AuditItem::Received)
    }
    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        vec![("received_overflow", self.audit_overflow)]
    }
}

/// The current wall-clock time as the core's timestamp.
pub fn wall_now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: d.as_secs(),
        nanos: d.subsec_nanos(),
    }
}

/// The node's UDP sockets (non-blocking): an unbound default one, plus one per uplink bound to
/// its device.
pub struct Sockets {
    default: UdpSocket,
    /// The default socket is bound to a wildcard address: read destinations, answer from them.
    pktinfo: bool,
    uplinks: BTreeMap<UplinkId, UdpSocket>,
    /// Local addresses of the sockets opened so far (kept after a socket closes: audit detail).
    locals: BTreeMap<UplinkId, SocketAddr>,
    /// Interface names of the uplinks (by interface id), to open more sockets on them.
    names: BTreeMap<UplinkId, String>,
    gateway: Option<SocketAddr>,
}

impl Sockets {
    /// Binds the default socket: `listen` on the gateway, an ephemeral port in the endpoint's
    /// family on the laptop (`gateway` = the endpoint, enabling per-uplink sockets).
    pub fn bind(listen: Option<SocketAddr>, gateway: Option<SocketAddr>) -> io::Result<Self> {
        let addr = match (listen, gateway) {
            (Some(l), _) => l,
            (None, Some(SocketAddr::V6(_))) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
        };
        let default = UdpSocket::bind(addr)?;
        default.set_nonblocking(true)?;
        crate::sys::tune_socket(&default);
        let pktinfo = listen.is_some_and(|l| l.ip().is_unspecified())
            && match pktinfo::enable(default.as_raw_fd(), addr.is_ipv6()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read datagram destinations; a multi-homed gateway may answer from the wrong address (set `listen` to one address)");
                    false
                }
            };
        Ok(Self {
            default,
            pktinfo,
            uplinks: BTreeMap::new(),
            locals: BTreeMap::new(),
            names: BTreeMap::new(),
            gateway,
        })
    }

    /// Opens a socket for each new uplink and closes every socket of vanished ones.
    pub fn set_uplinks(&mut self, uplinks: &[Uplink]) {
        if self.gateway.is_none() {
            return;
        }
        self.uplinks
            .retain(|id, _| uplinks.iter().any(|u| u.id == id.interface()));
        self.names = uplinks.iter().map(|u| (u.id, u.name.clone())).collect();
        for u in uplinks {
            // An uplink keeps whichever generation of its socket the core moved it to.
            if !self.uplinks.keys().any(|id| id.interface() == u.id) {
                self.open(u.id);
            }
        }
    }

    /// Opens socket `id` (a generation of an uplink's socket: a new source port).
    fn open(&mut self, id: UplinkId) {
        let (Some(gateway), Some(name)) = (self.gateway, self.names.get(&id.interface())) else {
            return;
        };
        match bind_to_device(name, gateway) {
            Ok(s) => {
                if let Ok(a) = s.local_addr() {
                    if self.locals.len() > 64 {
                        self.locals.clear();
                    }
                    tracing::debug!(uplink = %name, generation = id.generation(), local = %a, "socket opened");
                    self.locals.insert(id, a);
                }
                self.uplinks.insert(id, s);
            }
            Err(e) => {
                tracing::warn!(uplink = %name, error = %e, "cannot open a socket on this uplink; it will not be used")
            }
        }
    }

    /// Applies a socket change the core asked for.
    pub fn change(&mut self, c: crate::proto::SocketChange) {
        match c {
            crate::proto::SocketChange::Open(id) if !self.uplinks.contains_key(&id) => {
                self.open(id)
            }
            crate::proto::SocketChange::Open(_) => {}
            crate::proto::SocketChange::Close(id) => {
                self.uplinks.remove(&id);
            }
        }
    }

    /// The local address of the socket `via` (or had), for audit detail.
    pub fn local_addr(&self, via: UplinkId) -> String {
        match self.locals.get(&via) {
            Some(a) => a.to_string(),
            None if via == UplinkId::DEFAULT => self
                .default
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    fn get(&self, via: UplinkId) -> &UdpSocket {
        self.uplinks.get(&via).unwrap_or(&self.default)
    }

    /// Every socket with the uplink it serves (the default one first).
    fn all(&self) -> impl Iterator<Item = (UplinkId, &UdpSocket)> {
        std::iter::once((UplinkId::DEFAULT, &self.default))
            .chain(self.uplinks.iter().map(|(id, s)| (*id, s)))
    }

    /// Receives without waiting (WouldBlock when nothing is queued).
    fn try_recv(
        &self,
        via: UplinkId,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let sock = self.get(via);
        if via == UplinkId::DEFAULT && self.pktinfo {
            pktinfo::recv(sock.as_raw_fd(), buf)
        } else {
            sock.recv_from(buf).map(|(n, from)| (n, from, None))
        }
    }

    /// Sends; waits for writability only when the socket buffer is full.
    fn send(
        &self,
        via: UplinkId,
        src_ip: Option<IpAddr>,
        buf: &[u8],
        dst: SocketAddr,
    ) -> io::Result<usize> {
        if via.generation() != 0 && !self.uplinks.contains_key(&via) {
            // A moving-target socket that could not be opened (or is closed): never let its
            // packets leave by another route. The core sees a send error; the move fails.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket of this move is not open",
            ));
        }
        let sock = self.get(via);
        let fd = sock.as_raw_fd();
        let sticky = via == UplinkId::DEFAULT && self.pktinfo && src_ip.is_some();
        loop {
            let r = if sticky {
                match pktinfo::send(fd, buf, dst, src_ip) {
                    // The address we were reached at is gone: let the route choose.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => sock.send_to(buf, dst),
                    other => other,
                }
            } else {
                sock.send_to(buf, dst)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(fd, libc::POLLOUT)?,
                other => return other,
            }
        }
    }
}

/// Blocks until `fd` reports `events` (a full socket buffer or TUN queue).
fn wait_for(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, -1) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// An eventfd the control plane writes to so that the packet loop's `poll` returns.
struct Doorbell(OwnedFd);

impl Doorbell {
    fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd creation; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an eventfd we own.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// What the control plane (on the runtime's worker thread) hands to the packet loop.
enum Command {
    Shutdown,
    Uplinks(io::Result<Vec<Uplink>>),
    Control(ControlRequest),
    Reload,
    /// A record the audit thread signed, to send to the gateway.
    Signed(SessionId, Vec<u8>),
}

/// The control plane: waits for signals, bearer changes and control requests on the async
/// runtime and hands each to the packet loop.
async fn control_plane(
    commands: std::sync::mpsc::Sender<Command>,
    doorbell: Arc<Doorbell>,
    mut uplinks: Option<UplinkWatch>,
    mut requests: Option<mpsc::Receiver<ControlRequest>>,
    mut signed: Option<mpsc::UnboundedReceiver<(SessionId, Vec<u8>)>>,
    mut hangup: tokio::signal::unix::Signal,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let uplink_change = async {
            match uplinks.as_mut() {
                Some(w) => w.next_change().await,
                None => std::future::pending().await,
            }
        };
        let control_request = async {
            match requests.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let signed_record = async {
            match signed.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let command = tokio::select! {
            biased;
            _ = &mut shutdown => Command::Shutdown,
            snap = uplink_change => Command::Uplinks(snap),
            req = control_request => match req {
                Some(req) => Command::Control(req),
                None => {
                    requests = None;
                    continue;
                }
            },
            _ = hangup.recv() => Command::Reload,
            rec = signed_record => match rec {
                Some((session_id, bytes)) => Command::Signed(session_id, bytes),
                None => {
                    signed = None;
                    continue;
                }
            },
        };
        let last = matches!(command, Command::Shutdown);
        if commands.send(command).is_err() {
            return;
        }
        doorbell.ring();
        if last {
            return;
        }
    }
}

/// Runs a node until `shutdown` completes, then tells the peer(s) and returns.
///
/// The packet loop runs on the calling thread and blocks in `poll(2)` on the TUN device, the UDP
/// sockets and a doorbell, with the core's next deadline as the timeout; the control plane runs
/// as a task on the runtime's worker thread and rings the doorbell. A packet therefore wakes
/// this thread straight into a read, with no async reactor, scheduler or timer wheel between
/// the wake-up and the packet: on a busy or virtualized host that path is what a ping's
/// round-trip time is made of. Must be called from within a multi-threaded runtime.
pub fn run<C: Core>(
    core: &mut C,
    tun: &Tun,
    sockets: &mut Sockets,
    mut uplinks: Option<UplinkWatch>,
    mut on_event: impl FnMut(&Event, Option<u64>),
    control: Option<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut tun_buf = vec![0u8; TUN_HEADROOM + MAX_PACKET + TUN_TAILROOM];
    let mut udp_buf = vec![0u8; MAX_PACKET];
    let mut send_errors = SendErrors::default();
    if let Some(w) = uplinks.as_mut() {
        match w.snapshot() {
            Ok(snap) => {
                sockets.set_uplinks(&snap);
                core.handle_uplinks(snap, Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the uplinks; using the routing table")
            }
        }
    }
    let (info, mut reload_hook, requests, mut audit) = match control {
        Some(Control {
            requests,
            info,
            reload,
            audit,
        }) => (Some(info), reload, Some(requests), audit),
        None => (None, None, None, None),
    };
    // Signed records come back from the audit thread through the control plane (which rings
    // the doorbell); jobs go to it straight from this loop.
    let signed = audit.as_mut().map(|a| {
        let (_, dead) = mpsc::unbounded_channel();
        std::mem::replace(&mut a.signed, dead)
    });
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let doorbell = Arc::new(Doorbell::new()?);
    let (tx, commands) = std::sync::mpsc::channel();
    let plane = tokio::spawn(control_plane(
        tx,
        doorbell.clone(),
        uplinks,
        requests,
        signed,
        hangup,
        shutdown,
    ));
    let tun_fd = tun.device.as_raw_fd();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut ids: Vec<UplinkId> = Vec::new();
    let pollfd = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let result = loop {
        flush(core, sockets, &mut send_errors, &mut on_event);
        match audit.as_ref() {
            Some(a) => submit_audit(core, sockets, a),
            // No audit file here: a laptop's records are acknowledged and not kept.
            None => while core.poll_audit().is_some() {},
        }
        let timeout = match core.poll_timeout() {
            // Rounded up: never wake before the deadline.
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
            None => -1,
        };
        fds.clear();
        ids.clear();
        fds.push(pollfd(doorbell.0.as_raw_fd()));
        fds.push(pollfd(tun_fd));
        for (id, s) in sockets.all() {
            ids.push(id);
            fds.push(pollfd(s.as_raw_fd()));
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Err(e);
        }
        if fds[1].revents != 0 {
            if let Err(e) = drain_tun(core, tun, &mut tun_buf, sockets, &mut send_errors) {
                break Err(e);
            }
        }
        let failed = ids
            .iter()
            .enumerate()
            .filter(|(k, _)| fds[k + 2].revents != 0)
            .find_map(|(_, via)| drain_udp(core, *via, &mut udp_buf, sockets, tun).err());
        if let Some(e) = failed {
            break Err(e);
        }
        if fds[0].revents != 0 {
            doorbell.clear();
            // Commands after the packets: a new uplink set changes the sockets polled above.
            let mut stop = None;
            while let Ok(command) = commands.try_recv() {
                match command {
                    Command::Shutdown => {
                        core.shutdown(Instant::now());
                        flush(core, sockets, &mut send_errors, &mut on_event);
                        stop = Some(Ok(()));
                        break;
                    }
                    Command::Uplinks(Ok(snap)) => {
                        sockets.set_uplinks(&snap);
                        core.handle_uplinks(snap, Instant::now());
                    }
                    Command::Uplinks(Err(e)) => {
                        stop = Some(Err(e));
                        break;
                    }
                    Command::Control(req) => {
                        if let Some(info) = info.as_ref() {
                            answer_control(core, req, info, audit.as_ref());
                        }
                    }
                    Command::Reload => reload(core, reload_hook.as_mut()),
                    Command::Signed(session_id, bytes) => {
                        core.send_audit_record(session_id, bytes, Instant::now())
                    }
                }
            }
            if let Some(r) = stop {
                break r;
            }
        }
        if core.poll_timeout().is_some_and(|d| d <= Instant::now()) {
            core.handle_timeout(Instant::now());
        }
    };
    plane.abort();
    result
}

/// Hands the core's audit work to the writer thread (never waits).
fn submit_audit<C: Core>(core: &mut C, sockets: &Sockets, audit: &crate::audit::log::AuditWorker) {
    use crate::audit::log::Job;
    while let Some(item) = core.poll_audit() {
        audit.submit(match item {
            AuditItem::Draft(draft) => {
                let locals = [
                    sockets.local_addr(draft.old.via),
                    sockets.local_addr(draft.new.via),
                ];
                Job::Rebind { draft, locals }
            }
            AuditItem::Received(record) => Job::Witness {
                record,
                at_ms: wall_ms(),
            },
        });
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    let t = wall_now();
    t.secs * 1000 + u64::from(t.nanos / 1_000_000)
}

/// Reads up to a burst of packets from the TUN device.
fn drain_tun<C: Core>(
    core: &mut C,
    tun: &Tun,
    buf: &mut [u8],
    sockets: &Sockets,
    errors: &mut SendErrors,
) -> io::Result<()> {
    for _ in 0..=BURST {
        match tun
            .device
            .recv(&mut buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET])
        {
            Ok(n) => on_tun_packet(core, buf, n, sockets, errors),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to a burst of datagrams from one socket.
fn drain_udp<C: Core>(
    core: &mut C,
    via: UplinkId,
    buf: &mut [u8],
    sockets: &Sockets,
    tun: &Tun,
) -> io::Result<()> {
    for _ in 0..=BURST {
        match sockets.try_recv(via, buf) {
            Ok((n, from, local)) => on_datagram(core, buf, n, via, local, from, tun)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive error");
                break;
            }
        }
    }
    Ok(())
}

fn on_tun_packet<C: Core>(
    core: &mut C,
    buf: &mut [u8],
    n: usize,
    sockets: &Sockets,
    errors: &mut SendErrors,
) {
    if let Some(t) = core.handle_tun_packet(buf, n, Instant::now()) {
        if let Err(e) = sockets.send(t.via, t.src_ip, &buf[..t.len], t.dst) {
            errors.record(t.via, t.dst, &e);
            core.handle_send_error(t.via, Instant::now());
        }
    }
}

fn on_datagram<C: Core>(
    core: &mut C,
    buf: &mut [u8],
    n: usize,
    via: UplinkId,
    local: Option<IpAddr>,
    from: SocketAddr,
    tun: &Tun,
) -> io::Result<()> {
    if let Received::Tun(range) = core.handle_datagram(via, local, from, buf, n, Instant::now()) {
        let pkt = &buf[range];
        loop {
            match tun.device.send(pkt) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for(tun.device.as_raw_fd(), libc::POLLOUT)?
                }
                Err(e) => {
                    tracing::debug!(error = %e, "tun write error");
                    break;
                }
                Ok(_) => break,
            }
        }
    }
    Ok(())
}

fn flush<C: Core>(
    core: &mut C,
    sockets: &mut Sockets,
    errors: &mut SendErrors,
    on_event: &mut impl FnMut(&Event, Option<u64>),
) {
    loop {
        while let Some(c) = core.poll_socket_change() {
            sockets.change(c);
        }
        while let Some(t) = core.poll_transmit() {
            if let Err(e) = sockets.send(t.via, t.src_ip, &t.payload, t.dst) {
                errors.record(t.via, t.dst, &e);
                core.handle_send_error(t.via, Instant::now());
            }
        }
        let mut any = false;
        while let Some(e) = core.poll_event() {
            let version = e.session().and_then(|id| core.state_version(id));
            on_event(&e, version);
            any = true;
        }
        if !any {
            return;
        }
    }
}

/// Send errors are reported once per kind until a send succeeds, so an unreachable gateway
/// yields one clear line instead of a flood.
#[derive(Default)]
struct SendErrors {
    last: Option<(UplinkId, io::ErrorKind)>,
}

impl SendErrors {
    fn record(&mut self, via: UplinkId, dst: SocketAddr, e: &io::Error) {
        let key = (via, e.kind());
        if self.last == Some(key) {
            tracing::debug!(%dst, error = %e, "send failed");
            return;
        }
        self.last = Some(key);
        let hint = match e.raw_os_error() {
            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => {
                " (no route to it: check this machine's network connection and routes)"
            }
            Some(libc::EPERM) | Some(libc::EACCES) => " (a firewall rule rejects it)",
            _ => "",
        };
        tracing::warn!("cannot send to {dst}: {e}{hint}; will keep retrying");
    }
}
