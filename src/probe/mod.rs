//! `jvpn probe`: a media probe that shows whether a call would survive a bearer change.
//!
//! `jvpn probe send` sends RTP-sized UDP packets (sequence numbers, send times) at a steady
//! rate; `jvpn probe recv` measures loss, duplicates, reordering, the longest silence, jitter,
//! one-way delay and an E-model voice-quality estimate, live on stderr and as JSON at the end.
//!
//! The rule this module enforces: measurement is separate from I/O. [`packet`] is the wire
//! format, [`stats`] computes every number from (packet, arrival time) without a clock,
//! [`quality`] is the E-model, [`report`] renders; only [`send`] and [`recv`] touch sockets and
//! clocks. It is independent of the VPN: it runs through the tunnel like any application.
//!
//! - [`ProbeCommand`]: the clap subcommands; [`run`] runs one on its own current-thread runtime.
// The probe is a measuring tool outside the VPN: it reads the clock for every packet it sends and receives.
#![allow(clippy::disallowed_methods)]

pub mod packet;
pub mod quality;
pub mod recv;
pub mod report;
pub mod send;
pub mod stats;

#[cfg(test)]
mod stats_tests;

use anyhow::Context;

pub use recv::{Receiver, RecvArgs};
pub use send::{SendArgs, SendSummary, Sender};
pub use stats::{ProbeStats, Report};

/// `jvpn probe send|recv`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProbeCommand {
    /// Send a probe stream (default: 50 packets/s of 172 bytes, like a G.711 call).
    Send(SendArgs),
    /// Receive a probe stream and report loss, silences, jitter, delay and voice quality.
    Recv(RecvArgs),
}

/// Runs a probe command in the foreground on a current-thread runtime.
pub fn run(cmd: ProbeCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        match cmd {
            ProbeCommand::Send(args) => {
                let sender = Sender::bind(&args).await?;
                sender.run(shutdown_signal()).await.map(drop)
            }
            ProbeCommand::Recv(args) => {
                let json = args.json;
                let expect_pps = args.expect_pps;
                let receiver = Receiver::bind(args).await?;
                let report = receiver.run(shutdown_signal()).await?;
                eprintln!("{}", report::summary(&report, expect_pps));
                if json {
                    println!("{}", report::json(&report));
                }
                Ok(())
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Parses a positive, finite number of seconds (at most a year).
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 365.0 * 86_400.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}` is out of range: seconds must be > 0 and at most a year"
        ))
    }
}

#[cfg(test)]
mod tests_support {
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Whether python3's `json.load` accepts `text`; `None` if python3 cannot be run.
    pub fn python_json_ok(text: &str) -> Option<bool> {
        let mut child = Command::new("python3")
            .args(["-c", "import json,sys; json.load(sys.stdin)"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(text.as_bytes()).ok()?;
        Some(child.wait().ok()?.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        for bad in ["0", "-1", "nan", "inf", "x", "1e12"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    /// Sender and receiver on 127.0.0.1 in one runtime: 50 packets/s for 1 s.
    #[test]
    fn loopback_50_pps_for_one_second() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (report, sent) = rt.block_on(async {
            let receiver = Receiver::bind(RecvArgs {
                listen: "127.0.0.1:0".parse().unwrap(),
                seconds: Some(10.0),
                json: true,
                expect_pps: 50,
            })
            .await
            .unwrap();
            let to: SocketAddr = receiver.local_addr().unwrap();
            let sender = Sender::bind(&SendArgs {
                to,
                pps: 50,
                seconds: 1.0,
                size: 172,
                bind: None,
            })
            .await
            .unwrap();
            let recv = receiver.run(std::future::pending());
            let send = sender.run(std::future::pending());
            let (report, sent) = tokio::join!(recv, send);
            (report.unwrap(), sent.unwrap())
        });
        assert_eq!((sent.sent, sent.end_markers, sent.errors), (50, 3, 0));
        assert!(report.received >= 45, "{report:?}");
        assert_eq!(report.lost, 0, "{report:?}");
        assert_eq!(report.sent, Some(50));
        assert!(
            report.duration_ms < 2_000.0,
            "ended by the end marker + drain"
        );
        let json = report::json(&report);
        if let Some(ok) = tests_support::python_json_ok(&json) {
            assert!(ok, "python3 rejected {json}");
        }
        eprintln!("{}\n{json}", report::summary(&report, 50));
    }
}
