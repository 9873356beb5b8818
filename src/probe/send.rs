//! `jvpn probe send`: a steady stream of RTP-sized probe packets.
//!
//! The rule this module enforces: packet n is due at start + n/pps, an absolute deadline, so
//! the rate never drifts however long a send takes (never sleep-after-send). A send that fails
//! is counted and the schedule goes on, because a bearer change can make sends fail for a
//! moment; only a run where every send failed is an error. The stream ends with
//! [`END_MARKERS`] end markers saying how many media packets were sent, also on Ctrl-C/SIGTERM.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;

use super::packet::{self, ProbePacket, DEFAULT_SIZE, FILLER};

/// How many end markers close a stream.
pub const END_MARKERS: u64 = 3;
/// End markers follow each other at the packet interval, but at most this far apart.
pub const END_MARKER_SPACING_MAX: Duration = Duration::from_millis(100);

/// Arguments of `jvpn probe send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// The receiver's address (where `jvpn probe recv --listen` runs).
    #[arg(long, value_name = "ADDR:PORT")]
    pub to: SocketAddr,
    /// Packets per second (50 is one G.711 call with 20 ms packets).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pps: u32,
    /// How long to send, in seconds (fractions allowed).
    #[arg(long, value_parser = super::parse_seconds)]
    pub seconds: f64,
    /// UDP payload size in bytes, 60..=65507 (default: RTP header + 20 ms of G.711).
    #[arg(long, default_value_t = DEFAULT_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(packet::HEADER_LEN as i64..=packet::MAX_SIZE as i64))]
    pub size: u32,
    /// Local address to send from (default: any address of --to's family, a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
}

/// What a sender did.
#[derive(Clone, Debug, PartialEq)]
pub struct SendSummary {
    pub stream_id: u64,
    /// Media packets handed to the socket successfully.
    pub sent: u64,
    /// Media packets that were due (sent or failed).
    pub attempted: u64,
    pub end_markers: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// The furthest a send fell behind its deadline.
    pub max_behind: Duration,
    pub elapsed: Duration,
    /// Stopped by a signal before the planned end.
    pub interrupted: bool,
}

/// A bound sender, ready to run.
pub struct Sender {
    socket: UdpSocket,
    to: SocketAddr,
    pps: u32,
    count: u64,
    buf: Vec<u8>,
    stream_id: u64,
}

impl Sender {
    /// Binds the socket; the error names the address.
    pub async fn bind(args: &SendArgs) -> anyhow::Result<Self> {
        let local = args.bind.unwrap_or(match args.to {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        });
        if local.is_ipv4() != args.to.is_ipv4() {
            bail!(
                "--bind {local} and --to {} are of different address families",
                args.to
            );
        }
        let socket = UdpSocket::bind(local)
            .await
            .with_context(|| format!("cannot bind UDP socket to {local}"))?;
        let count = (args.seconds * f64::from(args.pps)).round().max(1.0) as u64;
        Ok(Sender {
            socket,
            to: args.to,
            pps: args.pps,
            count,
            buf: vec![FILLER; args.size as usize],
            stream_id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends the stream, then the end markers; `stop` ends it early (end markers still go).
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<SendSummary> {
        eprintln!(
            "probe send: stream {:016x}, {} packets of {} bytes at {} packets/s to {} from {}",
            self.stream_id,
            self.count,
            self.buf.len(),
            self.pps,
            self.to,
            self.local_addr()?
        );
        let start = Instant::now();
        let mut out = SendSummary {
            stream_id: self.stream_id,
            sent: 0,
            attempted: 0,
            end_markers: 0,
            errors: 0,
            last_error: None,
            max_behind: Duration::ZERO,
            elapsed: Duration::ZERO,
            interrupted: false,
        };
        tokio::pin!(stop);
        for seq in 0..self.count {
            let due = start + due_offset(seq, self.pps);
            tokio::select! {
                biased;
                () = &mut stop => {
                    out.interrupted = true;
                    break;
                }
                () = tokio::time::sleep_until(due.into()) => {}
            }
            out.max_behind = out
                .max_behind
                .max(Instant::now().saturating_duration_since(due));
            let pkt = ProbePacket::media(self.stream_id, seq, 0, 0);
            out.attempted += 1;
            if self.send(pkt, start, &mut out).await {
                out.sent += 1;
            }
        }
        self.send_end_markers(start, &mut out).await;
        out.elapsed = start.elapsed();
        finish(out, self.to)
    }

    /// Sends [`END_MARKERS`] end markers, the first when the next media packet would have been
    /// due (or at once after a stop), then at the packet interval, at most 100 ms apart.
    async fn send_end_markers(&mut self, start: Instant, out: &mut SendSummary) {
        let spacing = due_offset(1, self.pps).min(END_MARKER_SPACING_MAX);
        let first = (start + due_offset(out.attempted, self.pps)).max(Instant::now());
        for k in 0..END_MARKERS {
            let due = first + spacing * k as u32;
            tokio::time::sleep_until(due.into()).await;
            let pkt = ProbePacket::end_marker(self.stream_id, out.attempted, 0, 0);
            if self.send(pkt, start, out).await {
                out.end_markers += 1;
            }
        }
    }

    /// Stamps `pkt` with both clocks, encodes and sends it; a failure is counted, not returned.
    async fn send(&mut self, mut pkt: ProbePacket, start: Instant, out: &mut SendSummary) -> bool {
        pkt.realtime_ns = realtime_ns();
        pkt.mono_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if packet::encode(&pkt, &mut self.buf).is_err() {
            // Unreachable: --size is at least HEADER_LEN. Counted rather than panicking.
            out.errors += 1;
            return false;
        }
        match self.socket.send_to(&self.buf, self.to).await {
            Ok(_) => true,
            Err(e) => {
                if out.errors == 0 {
                    eprintln!(
                        "probe send: sending to {} failed: {e} (continuing)",
                        self.to
                    );
                }
                out.errors += 1;
                out.last_error = Some(e.to_string());
                false
            }
        }
    }
}

/// When packet `n` is due, relative to the start: n/pps seconds, exact in nanoseconds.
pub fn due_offset(n: u64, pps: u32) -> Duration {
    let ns = u128::from(n) * 1_000_000_000 / u128::from(pps.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// The sender's CLOCK_REALTIME in ns since the Unix epoch; 0 if the clock is before it.
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0))
}

/// Prints the sender's summary; an error only when nothing could be sent at all.
fn finish(out: SendSummary, to: SocketAddr) -> anyhow::Result<SendSummary> {
    eprintln!(
        "probe send: sent {} of {} packets and {} end markers in {:.3} s{}; send errors {}; \
         at most {:.3} ms behind schedule",
        out.sent,
        out.attempted,
        out.end_markers,
        out.elapsed.as_secs_f64(),
        if out.interrupted {
            " (interrupted)"
        } else {
            ""
        },
        out.errors,
        out.max_behind.as_secs_f64() * 1e3
    );
    if out.sent == 0 && out.end_markers == 0 && out.errors > 0 {
        bail!(
            "every send to {to} failed: {}",
            out.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute_and_exact() {
        assert_eq!(due_offset(0, 50), Duration::ZERO);
        assert_eq!(due_offset(1, 50), Duration::from_millis(20));
        assert_eq!(due_offset(50 * 3600, 50), Duration::from_secs(3600));
        // 3 packets/s: no accumulated rounding after a day.
        assert_eq!(due_offset(3 * 86_400, 3), Duration::from_secs(86_400));
        assert_eq!(due_offset(1, 3), Duration::from_nanos(333_333_333));
    }
}
