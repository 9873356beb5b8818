//! `jvpn status`, `jvpn events --follow`, `jvpn terminate`: argument structs and the commands.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::client::ControlClient;
use super::path::{find_socket_in, socket_path_for, RUN_DIR};
use super::protocol::{parse_session_id, SessionStatus, StatusReport};
use crate::policy::{self, NodeConfig};

/// Which node to talk to. With neither option: the one jvpn running in this network namespace
/// with a default socket (in /run/jvpn).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SocketArgs {
    /// The node's control socket.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// The node's config file: its control_socket, else the default socket of its tunnel.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SocketArgs {
    /// The socket these options select.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.socket {
            return Ok(p.clone());
        }
        if let Some(file) = &self.config {
            let cfg = policy::load_config(file)?;
            let (configured, tunnel) = match &cfg {
                NodeConfig::Laptop(c) => (c.control_socket.as_deref(), c.tunnel.name.as_str()),
                NodeConfig::Gateway(c) => (c.control_socket.as_deref(), c.tunnel.name.as_str()),
            };
            return socket_path_for(configured, tunnel).with_context(|| {
                format!("cannot work out the control socket of {}", file.display())
            });
        }
        find_socket_in(Path::new(RUN_DIR))
    }

    fn connect(&self) -> anyhow::Result<ControlClient> {
        ControlClient::connect(&self.resolve()?)
    }
}

/// `jvpn status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Print the status as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `jvpn events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Print live events as JSON lines until interrupted (required: past events are in the
    /// node's events file).
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `jvpn terminate`.
#[derive(Debug, Clone, clap::Args)]
pub struct TerminateArgs {
    /// The SessionID (32 hex digits, as `jvpn status` shows it).
    pub session_id: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Prints the node's status: a table, or JSON with `--json`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let report = args.socket.connect()?.status()?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&report)?)
    } else {
        render_status(&report)
    };
    print_or_quiet_on_broken_pipe(&text)
}

/// Prints live events as JSON lines until the node stops or the reader goes away.
pub fn events(args: EventsArgs) -> anyhow::Result<()> {
    if !args.follow {
        anyhow::bail!(
            "jvpn events only follows live events: use `jvpn events --follow`; past events are \
             in the file named by events = \"PATH\" in the node's config (or its --events)"
        );
    }
    let client = args.socket.connect()?;
    let stdout = io::stdout();
    let r = client.follow(|line| {
        let mut out = stdout.lock();
        out.write_all(line.as_bytes())?;
        out.flush()
    });
    match r {
        Ok(()) => {
            eprintln!("the node closed the control socket (it stopped)");
            Ok(())
        }
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Asks the node to terminate a session (`operator_terminated`); prints its answer.
pub fn terminate(args: TerminateArgs) -> anyhow::Result<()> {
    let id = parse_session_id(&args.session_id).map_err(anyhow::Error::msg)?;
    let message = args.socket.connect()?.terminate(&id)?;
    print_or_quiet_on_broken_pipe(&format!("{message}\n"))
}

fn print_or_quiet_on_broken_pipe(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The human form of a status report: a few header lines, then one row per session.
pub fn render_status(r: &StatusReport) -> String {
    let mut out = render_header(r);
    out.push('\n');
    if r.sessions.is_empty() {
        out.push_str("no sessions\n");
        return out;
    }
    let header = [
        "SESSION",
        "PEER",
        "STATE",
        "VER",
        "BEARER",
        "REMOTE",
        "TX",
        "RX",
        "REPLAYS",
        "AUTH-FAIL",
        "EPOCH",
        "KEY-AGE",
        "LAST-AUTH",
        "AGE",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    rows.extend(r.sessions.iter().map(session_row));
    out.push_str(&table(&rows));
    out
}

/// The node's lines: who it is, its policy, drops, events, audit and the next wake-up.
fn render_header(r: &StatusReport) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    kv("node:", format!("{} {}", r.role.name(), r.node_id));
    kv("policy:", r.policy_version.clone());
    if let Some(t) = &r.tunnel {
        kv("tunnel:", t.clone());
    }
    kv("uptime:", duration(r.uptime_ms));
    let drops = nonzero(&r.drops);
    kv(
        "drops:",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        },
    );
    let lost = nonzero(&r.event_sinks_dropped);
    kv(
        "events:",
        match (r.events_dropped, lost.is_empty()) {
            (None, _) => "-".to_string(),
            (Some(n), true) => format!("{n} dropped"),
            (Some(n), false) => format!("{n} dropped ({})", lost.join(", ")),
        },
    );
    if let Some(a) = &r.audit {
        let counters: Vec<String> = a.iter().map(|(k, n)| format!("{k} {n}")).collect();
        kv("audit:", counters.join(", "));
    }
    if let Some(w) = &r.next_wakeup {
        kv("wake-up:", format!("{} in {}", w.timer, duration(w.in_ms)));
    }
    out
}

/// `name count` for each counter above zero.
fn nonzero<'a>(counters: impl IntoIterator<Item = (&'a String, &'a u64)>) -> Vec<String> {
    counters
        .into_iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect()
}

fn session_row(s: &SessionStatus) -> Vec<String> {
    let dash = || "-".to_string();
    let num = |v: Option<u64>| v.map_or_else(dash, |n| n.to_string());
    let ago = |v: Option<u64>| v.map_or_else(dash, duration);
    let bearer = match (&s.bearer, &s.bearer_class) {
        (Some(b), Some(c)) => format!("{b} ({c})"),
        (Some(b), None) => b.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => dash(),
    };
    let traffic = |pkts: Option<u64>, bytes: Option<u64>| match (pkts, bytes) {
        (None, None) => dash(),
        (p, b) => format!("{} ({})", num(p), b.map_or_else(dash, size)),
    };
    vec![
        s.session_id.clone(),
        s.peer.clone().unwrap_or_else(dash),
        s.state.clone().unwrap_or_else(dash),
        num(s.state_version),
        bearer,
        s.remote.clone().unwrap_or_else(dash),
        traffic(s.tx_packets, s.tx_bytes),
        traffic(s.rx_packets, s.rx_bytes),
        num(s.replays),
        num(s.auth_failures),
        num(s.key_epoch),
        ago(s.key_age_ms),
        ago(s.last_authenticated_ms),
        ago(s.age_ms),
    ]
}

/// Left-aligned columns separated by two spaces; no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `850ms`, `12.3s`, `5m 03s`, `2h 05m`, `3d 04h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{}h {:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d {:02}h", s / 86_400, (s / 3600) % 24),
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::NodeRole;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(303_000), "5m 03s");
        assert_eq!(duration(7_500_000), "2h 05m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d 04h");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }

    #[test]
    fn the_table_has_one_aligned_row_per_session() {
        let mut r = StatusReport::new(NodeRole::Laptop, "PUBKEY", "default-1", 65_000);
        r.tunnel = Some("jvpn0".into());
        r.drops.insert("bad_mac".into(), 3);
        r.drops.insert("unknown_tag".into(), 0);
        r.events_dropped = Some(2);
        r.event_sinks_dropped.insert("stdout".into(), 2);
        r.next_wakeup = Some(crate::control::Wakeup {
            in_ms: 850,
            timer: "keepalive".into(),
        });
        let mut s = SessionStatus::new("00112233445566778899aabbccddeeff");
        s.peer = Some("gateway".into());
        s.state = Some("ATTACHED".into());
        s.state_version = Some(12);
        s.bearer = Some("wlan0".into());
        s.bearer_class = Some("wifi".into());
        s.tx_packets = Some(1200);
        s.tx_bytes = Some(1_200_000);
        s.age_ms = Some(61_000);
        r.sessions.push(s);
        r.sessions
            .push(SessionStatus::new("ffeeddccbbaa99887766554433221100"));
        let text = render_status(&r);
        assert!(text.contains("node:     laptop PUBKEY\n"), "{text}");
        assert!(text.contains("drops:    bad_mac 3\n"), "{text}");
        assert!(text.contains("events:   2 dropped (stdout 2)\n"), "{text}");
        assert!(text.contains("wake-up:  keepalive in 850ms\n"), "{text}");
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("SESSION"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let col = |l: &str, name: &str| l.find(name).unwrap();
        let state_at = col(lines[0], "STATE");
        assert_eq!(col(lines[1], "ATTACHED"), state_at);
        assert_eq!(col(lines[0], "BEARER"), col(lines[1], "wlan0 (wifi)"));
        assert!(lines[1].contains("1200 (1.1 MiB)"), "{}", lines[1]);
        assert!(lines[2].starts_with("ffeeddccbbaa99887766554433221100  -"));
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn no_sessions_says_so() {
        let r = StatusReport::new(NodeRole::Gateway, "K", "p", 10);
        assert!(render_status(&r).ends_with("\nno sessions\n"));
    }
}
