//! Command-line interface: argument parsing (clap derive) and dispatch. Thin by design.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::identity::Identity;
use crate::policy::{self, GatewayConfig, LaptopConfig};

/// jvpn: a VPN session that survives bearer changes.
#[derive(Debug, Parser)]
#[command(name = "jvpn", version, about)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a new identity file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the identity; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of an identity file.
    Pubkey {
        #[arg(long)]
        key: PathBuf,
    },
    /// Validate a laptop config, gateway config or policy file and print its normalized form.
    Check { file: PathBuf },
    /// Run the gateway in the foreground.
    Gateway {
        #[arg(long)]
        config: PathBuf,
        /// Write events as JSON lines to PATH, or to stdout with `-` (repeatable; replaces the
        /// config's `events`).
        #[arg(long, value_name = "PATH|-")]
        events: Vec<crate::events::SinkSpec>,
    },
    /// Bring the laptop's tunnel up and run it in the foreground.
    Up {
        #[arg(long)]
        config: PathBuf,
        /// Write events as JSON lines to PATH, or to stdout with `-` (repeatable; replaces the
        /// config's `events`).
        #[arg(long, value_name = "PATH|-")]
        events: Vec<crate::events::SinkSpec>,
    },
    /// Media probe: send or receive a call-like packet stream and measure loss, silences,
    /// jitter and voice quality (run it through the tunnel while switching bearers).
    Probe {
        #[command(subcommand)]
        cmd: crate::probe::ProbeCommand,
    },
    /// Show the running node's sessions, states, bearers and counters.
    Status(crate::control::cli::StatusArgs),
    /// Follow the running node's events as JSON lines (--follow).
    Events(crate::control::cli::EventsArgs),
    /// Terminate a session (reason operator_terminated).
    Terminate(crate::control::cli::TerminateArgs),
    /// Work with audit files (signed transport.rebind records).
    Audit {
        #[command(subcommand)]
        cmd: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every signature and link of an audit file; print a summary, or name the first bad
    /// record and exit non-zero.
    Verify {
        file: PathBuf,
        /// The chain's expected signer (base64 public key, as `jvpn pubkey` prints it): the
        /// laptop's key for a laptop's file, the gateway's for a gateway's. Without it the first
        /// record's signer is taken as the chain's.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Keygen { out } => {
                let id = Identity::generate();
                id.write_new(&out)?;
                println!("{}", id.public());
                Ok(())
            }
            Command::Pubkey { key } => {
                println!("{}", Identity::read(&key)?.public());
                Ok(())
            }
            Command::Check { file } => {
                print!("{}", policy::check_file(&file)?);
                Ok(())
            }
            Command::Gateway { config, events } => {
                let cfg = GatewayConfig::from_file(&config)?;
                restrict_process()?;
                runtime()?.block_on(crate::node::run_gateway(cfg, events))
            }
            Command::Up { config, events } => {
                let cfg = LaptopConfig::from_file(&config)?;
                restrict_process()?;
                runtime()?.block_on(crate::node::run_laptop(cfg, events))
            }
            Command::Probe { cmd } => crate::probe::run(cmd),
            Command::Status(args) => crate::control::cli::status(args),
            Command::Events(args) => crate::control::cli::events(args),
            Command::Terminate(args) => crate::control::cli::terminate(args),
            Command::Audit {
                cmd: AuditCommand::Verify { file, key },
            } => audit_verify(&file, key.as_deref()),
        }
    }
}

fn audit_verify(file: &std::path::Path, key: Option<&str>) -> anyhow::Result<()> {
    let expected = key
        .map(crate::identity::PublicKey::from_base64)
        .transpose()
        .context("--key")?
        .map(|k| k.0.to_bytes());
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read audit file {}", file.display()))?;
    match crate::audit::verify_chain(&text, expected.as_ref()) {
        Ok(summary) => {
            println!("{}: {summary}", file.display());
            Ok(())
        }
        Err(e) => anyhow::bail!("{}: {e}", file.display()),
    }
}

/// Before a node starts any thread: what no thread needs goes now, so every thread inherits
/// its absence (the rest goes once setup is done, see `sys::privileges`).
fn restrict_process() -> anyhow::Result<()> {
    crate::sys::privileges::restrict_process()
        .context("failed to restrict the process's privileges")
}

/// The node's runtime: one worker thread runs the control plane (control socket, bearer
/// watching, signals) while the thread that calls `block_on` runs the packet loop, which blocks
/// in `poll(2)` on its own file descriptors (see `driver::run`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}
