//! The event loop: the only place that reads the clock and owns file descriptors. One loop per
//! node drains the core's outputs, then waits on TUN reads, UDP reads, the next deadline and
//! shutdown. Reads are drained in bursts before the loop waits again; the hot path reuses two
//! buffers and allocates nothing per packet.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use crate::proto::client::Client;
use crate::proto::gateway::Gateway;
use crate::proto::{
    Event, OwnedTransmit, Received, Timestamp, Transmit, TUN_HEADROOM, TUN_TAILROOM,
};
use crate::sys::tun::Tun;

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
        local: Option<SocketAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received;
    fn handle_timeout(&mut self, now: Instant);
    fn shutdown(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<OwnedTransmit>;
    fn poll_event(&mut self) -> Option<Event>;
    fn poll_timeout(&self) -> Option<Instant>;
}

macro_rules! impl_core {
    ($t:ty) => {
        impl Core for $t {
            fn handle_tun_packet(
                &mut self,
                buf: &mut [u8],
                len: usize,
                now: Instant,
            ) -> Option<Transmit> {
                <$t>::handle_tun_packet(self, buf, len, now)
            }
            fn handle_datagram(
                &mut self,
                local: Option<SocketAddr>,
                remote: SocketAddr,
                buf: &mut [u8],
                len: usize,
                now: Instant,
            ) -> Received {
                <$t>::handle_datagram(self, local, remote, buf, len, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn shutdown(&mut self, now: Instant) {
                <$t>::shutdown(self, now)
            }
            fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<Event> {
                <$t>::poll_event(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self).map(|(t, _)| t)
            }
        }
    };
}
impl_core!(Client);
impl_core!(Gateway);

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

/// Binds the laptop's UDP socket in the endpoint's address family.
pub async fn bind_for(endpoint: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match endpoint {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).await?;
    tune_socket(&s);
    Ok(s)
}

/// Binds the gateway's listening socket.
pub async fn bind_listen(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr).await?;
    tune_socket(&s);
    Ok(s)
}

/// Larger socket buffers absorb bursts from TCP inside the tunnel.
fn tune_socket(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: plain setsockopt on an fd we own with a correctly sized int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not enlarge socket buffer");
        }
    }
}

/// Runs a node until `shutdown` completes, then tells the peer(s) and returns.
pub async fn run<C: Core>(
    core: &mut C,
    tun: &Tun,
    udp: &UdpSocket,
    mut on_event: impl FnMut(&Event),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut tun_buf = vec![0u8; TUN_HEADROOM + MAX_PACKET + TUN_TAILROOM];
    let mut udp_buf = vec![0u8; MAX_PACKET];
    let mut send_errors = SendErrors::default();
    let local = udp.local_addr().ok().filter(|a| !a.ip().is_unspecified());
    tokio::pin!(shutdown);
    loop {
        flush(core, udp, &mut send_errors, &mut on_event).await;
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                core.shutdown(Instant::now());
                flush(core, udp, &mut send_errors, &mut on_event).await;
                return Ok(());
            }
            r = tun.device.recv(&mut tun_buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET]) => {
                let n = r?;
                on_tun_packet(core, &mut tun_buf, n, udp, &mut send_errors).await;
                for _ in 0..BURST {
                    match tun.device.try_recv(&mut tun_buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET]) {
                        Ok(n) => on_tun_packet(core, &mut tun_buf, n, udp, &mut send_errors).await,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            r = udp.recv_from(&mut udp_buf) => {
                match r {
                    Ok((n, from)) => on_datagram(core, &mut udp_buf, n, local, from, tun).await?,
                    Err(e) => tracing::debug!(error = %e, "udp receive error"),
                }
                for _ in 0..BURST {
                    match udp.try_recv_from(&mut udp_buf) {
                        Ok((n, from)) => on_datagram(core, &mut udp_buf, n, local, from, tun).await?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "udp receive error");
                            break;
                        }
                    }
                }
            }
            _ = sleep => core.handle_timeout(Instant::now()),
        }
    }
}

async fn on_tun_packet<C: Core>(
    core: &mut C,
    buf: &mut [u8],
    n: usize,
    udp: &UdpSocket,
    errors: &mut SendErrors,
) {
    if let Some(t) = core.handle_tun_packet(buf, n, Instant::now()) {
        let r = match udp.try_send_to(&buf[..t.len], t.dst) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                udp.send_to(&buf[..t.len], t.dst).await
            }
            other => other,
        };
        if let Err(e) = r {
            errors.record(t.dst, &e);
        }
    }
}

async fn on_datagram<C: Core>(
    core: &mut C,
    buf: &mut [u8],
    n: usize,
    local: Option<SocketAddr>,
    from: SocketAddr,
    tun: &Tun,
) -> io::Result<()> {
    if let Received::Tun(range) = core.handle_datagram(local, from, buf, n, Instant::now()) {
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
    udp: &UdpSocket,
    errors: &mut SendErrors,
    on_event: &mut impl FnMut(&Event),
) {
    while let Some(t) = core.poll_transmit() {
        if let Err(e) = udp.send_to(&t.payload, t.dst).await {
            errors.record(t.dst, &e);
        }
    }
    while let Some(e) = core.poll_event() {
        on_event(&e);
    }
}

/// Send errors are reported once per kind until a send succeeds, so an unreachable gateway
/// yields one clear line instead of a flood.
#[derive(Default)]
struct SendErrors {
    last: Option<(SocketAddr, io::ErrorKind)>,
}

impl SendErrors {
    fn record(&mut self, dst: SocketAddr, e: &io::Error) {
        let key = (dst, e.kind());
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
