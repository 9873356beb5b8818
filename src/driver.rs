//! The event loop: the only place that reads the clock and owns file descriptors. One loop per
//! node drains the core's outputs, then waits on TUN reads, UDP reads (one socket per uplink on
//! the laptop), bearer changes, the next deadline and shutdown. Reads are drained in bursts
//! before the loop waits again; the hot path reuses two buffers and allocates nothing per
//! packet. A send error is fed back to the core: a dead uplink is data for the path logic.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;
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

fn answer_control<C: Core>(core: &mut C, req: ControlRequest, info: &NodeInfo) {
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
fn reload<C: Core>(core: &mut C, control: Option<&mut Control>) {
    let Some(load) = control.and_then(|c| c.reload.as_mut()) else {
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

/// A received datagram: the uplink it came by, its length, source, and the local address it
/// was sent to (when the socket reports it).
type Recv = (UplinkId, io::Result<(usize, SocketAddr, Option<IpAddr>)>);

/// The node's UDP sockets: an unbound default one, plus one per uplink bound to its device.
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
    next_poll: usize,
}

impl Sockets {
    /// Binds the default socket: `listen` on the gateway, an ephemeral port in the endpoint's
    /// family on the laptop (`gateway` = the endpoint, enabling per-uplink sockets).
    pub async fn bind(listen: Option<SocketAddr>, gateway: Option<SocketAddr>) -> io::Result<Self> {
        let addr = match (listen, gateway) {
            (Some(l), _) => l,
            (None, Some(SocketAddr::V6(_))) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
        };
        let default = UdpSocket::bind(addr).await?;
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
            next_poll: 0,
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

    /// Receives without waiting (WouldBlock when nothing is queued).
    fn try_recv(
        &self,
        via: UplinkId,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        let sock = self.get(via);
        if via == UplinkId::DEFAULT && self.pktinfo {
            let fd = sock.as_raw_fd();
            sock.try_io(Interest::READABLE, || pktinfo::recv(fd, buf))
        } else {
            sock.try_recv_from(buf).map(|(n, from)| (n, from, None))
        }
    }

    /// Sends without waiting; waits for writability only when the socket buffer is full.
    async fn send(
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
        if !(via == UplinkId::DEFAULT && self.pktinfo && src_ip.is_some()) {
            return match sock.try_send_to(buf, dst) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send_to(buf, dst).await,
                other => other,
            };
        }
        let fd = sock.as_raw_fd();
        loop {
            match sock.try_io(Interest::WRITABLE, || pktinfo::send(fd, buf, dst, src_ip)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
                // The address we were reached at is gone: let the route choose.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return sock.send_to(buf, dst).await
                }
                other => return other,
            }
        }
    }

    /// Polls every socket for a datagram, starting from a rotating index for fairness.
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Recv> {
        let n = self.uplinks.len() + 1;
        for k in 0..n {
            let i = (self.next_poll + k) % n;
            let via = if i == 0 {
                UplinkId::DEFAULT
            } else {
                *self.uplinks.keys().nth(i - 1).expect("index within len")
            };
            loop {
                match self.get(via).poll_recv_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready((via, Err(e))),
                    Poll::Ready(Ok(())) => {}
                }
                match self.try_recv(via, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => {
                        self.next_poll = i + 1;
                        return Poll::Ready((via, r));
                    }
                }
            }
        }
        Poll::Pending
    }
}

/// Runs a node until `shutdown` completes, then tells the peer(s) and returns.
pub async fn run<C: Core>(
    core: &mut C,
    tun: &Tun,
    sockets: &mut Sockets,
    mut uplinks: Option<UplinkWatch>,
    mut on_event: impl FnMut(&Event, Option<u64>),
    mut control: Option<Control>,
    shutdown: impl Future<Output = ()>,
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
    tokio::pin!(shutdown);
    // One timer for the whole run, moved only when the core's deadline changes: creating a
    // timer per loop turn would cost a timer-wheel insertion per packet.
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    // `far` also re-arms after a wake with no deadline left.
    let mut armed: Option<Instant> = None;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut audit = control.as_mut().and_then(|c| c.audit.take());
    loop {
        flush(core, sockets, &mut send_errors, &mut on_event).await;
        match audit.as_ref() {
            Some(a) => submit_audit(core, sockets, a),
            // No audit file here: a laptop's records are acknowledged and not kept.
            None => while core.poll_audit().is_some() {},
        }
        // Deadlines mostly move later (every packet pushes keepalives and probes back): an
        // armed timer that is earlier than needed just wakes once for nothing, which is far
        // cheaper than re-arming on every packet. Re-arm only for an earlier deadline.
        if let Some(d) = core.poll_timeout() {
            if armed.is_none_or(|a| d < a) {
                armed = Some(d);
                sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            }
        }
        let uplink_change = async {
            match uplinks.as_mut() {
                Some(w) => w.next_change().await,
                None => std::future::pending().await,
            }
        };
        let signed_record = async {
            match audit.as_mut() {
                Some(a) => a.signed.recv().await,
                None => std::future::pending().await,
            }
        };
        let control_request = async {
            match control.as_mut() {
                Some(c) => c.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                core.shutdown(Instant::now());
                flush(core, sockets, &mut send_errors, &mut on_event).await;
                return Ok(());
            }
            snap = uplink_change => {
                let snap = snap?;
                sockets.set_uplinks(&snap);
                core.handle_uplinks(snap, Instant::now());
            }
            r = tun.device.recv(&mut tun_buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET]) => {
                let n = r?;
                on_tun_packet(core, &mut tun_buf, n, sockets, &mut send_errors).await;
                for _ in 0..BURST {
                    match tun.device.try_recv(&mut tun_buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET]) {
                        Ok(n) => on_tun_packet(core, &mut tun_buf, n, sockets, &mut send_errors).await,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            (via, r) = std::future::poll_fn(|cx| sockets.poll_recv(cx, &mut udp_buf)) => {
                match r {
                    Ok((n, from, local)) => on_datagram(core, &mut udp_buf, n, via, local, from, tun).await?,
                    Err(e) => tracing::debug!(error = %e, "udp receive error"),
                }
                for _ in 0..BURST {
                    match sockets.try_recv(via, &mut udp_buf) {
                        Ok((n, from, local)) => on_datagram(core, &mut udp_buf, n, via, local, from, tun).await?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "udp receive error");
                            break;
                        }
                    }
                }
            }
            _ = &mut sleep => {
                // Re-armed on the next turn from the core's next deadline.
                armed = None;
                sleep.as_mut().reset(far());
                core.handle_timeout(Instant::now());
            }
            signed = signed_record => match signed {
                Some((session_id, bytes)) => core.send_audit_record(session_id, bytes, Instant::now()),
                None => audit = None,
            },
            req = control_request => match (req, control.as_ref()) {
                (Some(req), Some(c)) => answer_control(core, req, &c.info),
                _ => control = None,
            },
            _ = hangup.recv() => reload(core, control.as_mut()),
        }
    }
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

async fn on_tun_packet<C: Core>(
    core: &mut C,
    buf: &mut [u8],
    n: usize,
    sockets: &Sockets,
    errors: &mut SendErrors,
) {
    if let Some(t) = core.handle_tun_packet(buf, n, Instant::now()) {
        if let Err(e) = sockets.send(t.via, t.src_ip, &buf[..t.len], t.dst).await {
            errors.record(t.via, t.dst, &e);
            core.handle_send_error(t.via, Instant::now());
        }
    }
}

async fn on_datagram<C: Core>(
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
        match tun.device.try_send(pkt) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tun.device.send(pkt).await?;
            }
            Err(e) => tracing::debug!(error = %e, "tun write error"),
            Ok(_) => {}
        }
    }
    Ok(())
}

async fn flush<C: Core>(
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
            if let Err(e) = sockets.send(t.via, t.src_ip, &t.payload, t.dst).await {
                errors.record(t.via, t.dst, &e);
                core.handle_send_error(t.via, Instant::now());
            }
        }
        let mut any = false;
        while let Some(e) = core.poll_event() {
            let version = crate::event_map::session_of(&e).and_then(|id| core.state_version(id));
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
