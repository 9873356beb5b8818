//! `jvpn probe recv`: receive a probe stream and measure it.
//!
//! The rule this module enforces: this is the only probe code that reads the clock for
//! arrivals. Each datagram is stamped (monotonic and realtime) right after it is received and
//! handed to [`ProbeStats`]; every number is computed there, none here. The run ends after
//! `--seconds`, [`DRAIN`] after the first end marker (late packets still count), or when `stop`
//! resolves (Ctrl-C/SIGTERM in the CLI).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

use super::packet;
use super::report;
use super::send::realtime_ns;
use super::stats::{Arrival, ProbeStats, Report};

/// How long the receiver keeps listening after the first end marker.
pub const DRAIN: Duration = Duration::from_millis(500);
/// Receive errors in a row that end the run (a single one is only reported).
const MAX_ERRORS_IN_A_ROW: u32 = 100;
/// Large enough for any UDP datagram, so oversized non-probe datagrams are counted whole.
const BUF_LEN: usize = 65_536;

/// Arguments of `jvpn probe recv`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecvArgs {
    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Stop after this many seconds (fractions allowed); default: at the end of the stream.
    #[arg(long, value_parser = super::parse_seconds)]
    pub seconds: Option<f64>,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// The sender's packet rate; the live line flags silences longer than 3 packet intervals.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub expect_pps: u32,
}

/// A bound receiver, ready to run.
pub struct Receiver {
    socket: UdpSocket,
    args: RecvArgs,
    start: Instant,
}

impl Receiver {
    /// Binds the socket; the error names the address. The receiver's timeline starts here.
    pub async fn bind(args: RecvArgs) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(args.listen)
            .await
            .with_context(|| format!("cannot bind UDP socket to {}", args.listen))?;
        Ok(Receiver {
            socket,
            args,
            start: Instant::now(),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives until the run ends (see the module docs), printing a live line every second
    /// on stderr, and returns the final report.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<Report> {
        let local = self.local_addr()?;
        eprintln!(
            "probe recv: listening on {local}, expecting {} packets/s{}",
            self.args.expect_pps,
            self.args
                .seconds
                .map_or(String::new(), |s| format!(", for at most {s} s"))
        );
        let end_by = (self.args.seconds).map(|s| self.start + Duration::from_secs_f64(s));
        let mut drain_until = None;
        let mut stats = ProbeStats::new();
        let mut buf = vec![0u8; BUF_LEN];
        let mut errors_in_a_row = 0;
        let second = Duration::from_secs(1);
        let mut tick = tokio::time::interval_at((self.start + second).into(), second);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = sleep_until_earliest(end_by, drain_until) => break,
                r = self.socket.recv_from(&mut buf) => {
                    let now = Instant::now();
                    match r {
                        Ok((len, _from)) => {
                            errors_in_a_row = 0;
                            self.handle(&mut stats, &buf[..len], now);
                        }
                        Err(e) => self.recv_error(e, &mut errors_in_a_row)?,
                    }
                    if stats.end_seen() && drain_until.is_none() {
                        drain_until = Some(now + DRAIN);
                    }
                }
                _ = tick.tick() => self.print_live(&stats),
            }
        }
        Ok(stats.report(self.start.elapsed()))
    }

    /// Stamps and feeds one datagram.
    fn handle(&self, stats: &mut ProbeStats, datagram: &[u8], now: Instant) {
        let arrival = Arrival {
            at: now.saturating_duration_since(self.start),
            realtime_ns: realtime_ns(),
        };
        match packet::decode(datagram) {
            Ok(pkt) => {
                stats.observe(&pkt, arrival);
            }
            Err(_) => stats.note_non_probe(),
        }
    }

    fn recv_error(&self, e: std::io::Error, in_a_row: &mut u32) -> anyhow::Result<()> {
        *in_a_row += 1;
        if *in_a_row == 1 {
            eprintln!("probe recv: receive error: {e} (continuing)");
        }
        if *in_a_row >= MAX_ERRORS_IN_A_ROW {
            bail!(
                "receiving on {} failed {in_a_row} times in a row: {e}",
                self.args.listen
            );
        }
        Ok(())
    }

    fn print_live(&self, stats: &ProbeStats) {
        let elapsed = self.start.elapsed();
        let interval_ms = 1e3 / f64::from(self.args.expect_pps.max(1));
        let line = report::live_line(&stats.report(elapsed), elapsed.as_secs_f64(), interval_ms);
        eprintln!("{line}");
    }
}

/// Resolves at the earlier of two optional deadlines; never if both are `None`.
async fn sleep_until_earliest(a: Option<Instant>, b: Option<Instant>) {
    let at = match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
