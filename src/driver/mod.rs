//! The packet loop: the only place that reads the clock and owns file descriptors. One loop per
//! node drains the core's outputs in the order of its contract (`proto::node`), then waits on
//! TUN reads, UDP reads (the default socket, plus the ones the core asked for: one per uplink on
//! the laptop), the control plane's doorbell and the next deadline. Reads are drained in bursts
//! before the loop waits again; the hot path reuses two buffers and allocates nothing per
//! packet. A send error is fed back to the core: a dead uplink is data for the path logic.
//!
//! - [`run`]: the loop.
//! - `control_plane`: signals, bearer changes, control requests, reload, the doorbell.
// The driver is where the clock is read (clippy.toml forbids it everywhere else).
#![allow(clippy::disallowed_methods)]

mod control_plane;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use control_plane::{Applied, Control, Reload};
use control_plane::{ControlPlane, Stop};

use crate::proto::Core;
use crate::proto::{Event, Received, Timestamp, UplinkId, TUN_HEADROOM, TUN_TAILROOM};
use crate::sys::tun::Tun;
use crate::sys::udp::Sockets;
use crate::sys::uplinks::UplinkWatch;
use crate::sys::wait_for;

/// How many packets one readiness wake-up may drain from a source before the loop looks at
/// the others again.
const BURST: usize = 64;
/// Largest datagram or inner packet handled.
const MAX_PACKET: usize = 65_535;

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
    if let Some(w) = uplinks.as_mut() {
        match w.snapshot() {
            // The core answers with the sockets to open; the loop's first flush opens them.
            Ok(snap) => core.handle_uplinks(snap, Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the uplinks; using the routing table")
            }
        }
    }
    let mut plane = ControlPlane::start(uplinks, control, shutdown)?;
    let mut io = Io::new(tun, sockets);
    let result = packet_loop(core, &mut io, &mut plane, &mut on_event);
    plane.stop();
    result
}

fn packet_loop<C: Core>(
    core: &mut C,
    io: &mut Io,
    plane: &mut ControlPlane,
    on_event: &mut impl FnMut(&Event, Option<u64>),
) -> io::Result<()> {
    loop {
        io.flush(core, on_event);
        plane.submit_audit(core, io.sockets);
        match io.wait(plane.doorbell_fd(), core.poll_timeout().map(|d| d.0)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        io.drain_ready(core)?;
        // Commands after the packets: a new uplink set changes the sockets polled above (the
        // core's socket changes are applied at the next flush).
        if io.doorbell_rang() {
            match plane.answer(core) {
                Some(Stop::Shutdown) => {
                    core.shutdown(Instant::now());
                    io.flush(core, on_event);
                    return Ok(());
                }
                Some(Stop::Failed(e)) => return Err(e),
                None => {}
            }
        }
        let now = Instant::now();
        if let Some((at, timer)) = core.poll_timeout().filter(|d| d.0 <= now) {
            let late = now.saturating_duration_since(at);
            tracing::debug!(
                timer = timer.name(),
                late_us = late.as_micros() as u64,
                "deadline due"
            );
            core.handle_timeout(now);
        }
    }
}

/// The loop's file descriptors and buffers.
struct Io<'a> {
    tun: &'a Tun,
    sockets: &'a mut Sockets,
    tun_buf: Vec<u8>,
    udp_buf: Vec<u8>,
    errors: SendErrors,
    /// The doorbell, the TUN device, then one entry per socket (in `ids` order).
    fds: Vec<libc::pollfd>,
    ids: Vec<UplinkId>,
}

impl<'a> Io<'a> {
    fn new(tun: &'a Tun, sockets: &'a mut Sockets) -> Self {
        Self {
            tun,
            sockets,
            tun_buf: vec![0u8; TUN_HEADROOM + MAX_PACKET + TUN_TAILROOM],
            udp_buf: vec![0u8; MAX_PACKET],
            errors: SendErrors::default(),
            fds: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// Blocks until a source is readable or `deadline` passes (rounded up: never before it).
    fn wait(&mut self, doorbell: libc::c_int, deadline: Option<Instant>) -> io::Result<()> {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
            None => -1,
        };
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        self.fds.clear();
        self.ids.clear();
        self.fds.push(pollfd(doorbell));
        self.fds.push(pollfd(self.tun.device.as_raw_fd()));
        for (id, s) in self.sockets.all() {
            self.ids.push(id);
            self.fds.push(pollfd(s.as_raw_fd()));
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn doorbell_rang(&self) -> bool {
        self.fds[0].revents != 0
    }

    /// Reads what `wait` found readable: the TUN device, then each socket.
    fn drain_ready<C: Core>(&mut self, core: &mut C) -> io::Result<()> {
        if self.fds[1].revents != 0 {
            self.drain_tun(core)?;
        }
        for k in 0..self.ids.len() {
            if self.fds[k + 2].revents != 0 {
                self.drain_udp(core, self.ids[k])?;
            }
        }
        Ok(())
    }

    /// Reads up to a burst of packets from the TUN device, each sent as the core seals it.
    fn drain_tun<C: Core>(&mut self, core: &mut C) -> io::Result<()> {
        for _ in 0..=BURST {
            let room = &mut self.tun_buf[TUN_HEADROOM..TUN_HEADROOM + MAX_PACKET];
            let n = match self.tun.device.recv(room) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(t) = core.handle_tun_packet(&mut self.tun_buf, n, Instant::now()) {
                let sent = self
                    .sockets
                    .send(t.via, t.src_ip, &self.tun_buf[..t.len], t.dst);
                if let Err(e) = sent {
                    self.errors.record(t.via, t.dst, &e);
                    core.handle_send_error(t.via, Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Reads up to a burst of datagrams from one socket, writing inner packets to the TUN.
    fn drain_udp<C: Core>(&mut self, core: &mut C, via: UplinkId) -> io::Result<()> {
        for _ in 0..=BURST {
            let (n, from, local) = match self.sockets.try_recv(via, &mut self.udp_buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive error");
                    break;
                }
            };
            let now = Instant::now();
            if let Received::Tun(range) =
                core.handle_datagram(via, local, from, &mut self.udp_buf, n, now)
            {
                write_tun(self.tun, &self.udp_buf[range])?;
            }
        }
        Ok(())
    }

    /// Drains the core's outputs in the contract's order until no event is left.
    fn flush<C: Core>(&mut self, core: &mut C, on_event: &mut impl FnMut(&Event, Option<u64>)) {
        loop {
            while let Some(c) = core.poll_socket_change() {
                self.sockets.change(c);
            }
            while let Some(t) = core.poll_transmit() {
                if let Err(e) = self.sockets.send(t.via, t.src_ip, &t.payload, t.dst) {
                    self.errors.record(t.via, t.dst, &e);
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
}

/// Writes an inner packet to the TUN device, waiting only when its queue is full.
fn write_tun(tun: &Tun, pkt: &[u8]) -> io::Result<()> {
    loop {
        match tun.device.send(pkt) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(tun.device.as_raw_fd(), libc::POLLOUT)?
            }
            Err(e) => {
                tracing::debug!(error = %e, "tun write error");
                return Ok(());
            }
            Ok(_) => return Ok(()),
        }
    }
}

/// The current wall-clock time as the core's timestamp.
/// The monotonic clock every `now` the core is given comes from.
pub fn now() -> Instant {
    Instant::now()
}

pub fn wall_now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: d.as_secs(),
        nanos: d.subsec_nanos(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    let t = wall_now();
    t.secs * 1000 + u64::from(t.nanos / 1_000_000)
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
