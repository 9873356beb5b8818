//! `jvpn probe` through the real binary on 127.0.0.1: a sender and a receiver at 50 packets/s,
//! argument errors, a bind failure, and SIGTERM. The measurements themselves are unit-tested
//! in `src/probe/stats_tests.rs`.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

fn jvpn() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jvpn"));
    c.env_remove("RUST_LOG");
    c
}

/// A receiver started with `--listen 127.0.0.1:0`, its port read from its first stderr line;
/// its later stderr lines are passed on as they come (see [`Recv::wait_for_line`]).
struct Recv {
    child: Child,
    port: u16,
    stderr: JoinHandle<String>,
    lines: mpsc::Receiver<String>,
}

fn spawn_recv(extra: &[&str]) -> Recv {
    let mut child = jvpn()
        .args(["probe", "recv", "--listen", "127.0.0.1:0", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jvpn");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let port = first
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    let (tx, lines) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut all = first;
        for line in err.lines() {
            let line = line.unwrap();
            all += &line;
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    Recv {
        child,
        port,
        stderr,
        lines,
    }
}

impl Recv {
    /// Waits (up to 10 s) for a stderr line containing `needle`.
    fn wait_for_line(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?}: {e}"),
            }
        }
    }

    fn wait(self) -> (Output, String) {
        let out = self.child.wait_with_output().unwrap();
        (out, self.stderr.join().unwrap())
    }
}

/// Reads the given keys of a JSON object with python3 (which also checks the syntax); falls
/// back to a plain text scan when python3 is missing.
fn json_fields(json: &str, keys: &[&str]) -> Vec<String> {
    let script = format!(
        "import json,sys; o=json.load(sys.stdin); print(' '.join(json.dumps(o[k]) for k in {keys:?}))"
    );
    let python = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    if let Ok(mut child) = python {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python3 rejected the JSON: {json}");
        let text = String::from_utf8(out.stdout).unwrap();
        return text.split_whitespace().map(str::to_owned).collect();
    }
    eprintln!("python3 not found; reading the JSON without checking its syntax");
    keys.iter()
        .map(|k| {
            let at = json.find(&format!("\"{k}\":")).expect(k) + k.len() + 3;
            json[at..].split([',', '}']).next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn loopback_send_and_receive_50_pps_for_one_second() {
    let recv = spawn_recv(&["--seconds", "10"]);
    let to = format!("127.0.0.1:{}", recv.port);
    let send = jvpn()
        .args([
            "probe",
            "send",
            "--to",
            &to,
            "--pps",
            "50",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let send_err = String::from_utf8_lossy(&send.stderr);
    assert!(send.status.success(), "sender failed: {send_err}");
    assert!(
        send_err.contains("sent 50 of 50 packets and 3 end markers"),
        "{send_err}"
    );
    let (out, err) = recv.wait();
    assert!(out.status.success(), "receiver failed: {err}");
    let json = String::from_utf8(out.stdout).unwrap();
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    let f = json_fields(&json, &["received", "lost", "sent", "duplicates", "mos"]);
    let received: u64 = f[0].parse().unwrap();
    assert!(received >= 45, "received {received}\n{err}");
    assert_eq!(
        (f[1].as_str(), f[2].as_str(), f[3].as_str()),
        ("0", "50", "0"),
        "{json}"
    );
    assert!(f[4].parse::<f64>().unwrap() > 4.3, "{json}");
    assert!(err.contains("probe recv: summary of stream"), "{err}");
    eprintln!("{send_err}{err}{json}");
}

/// Forwards datagrams from a sender to `to`, dropping datagrams 20..35 (a 300 ms outage at
/// 50 packets/s), doubling datagram 40 and injecting one non-probe datagram; returns its port.
fn spawn_lossy_relay(to: u16) -> (u16, JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let relay = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let dst = ("127.0.0.1", to);
        for n in 0..53 {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                return;
            };
            let copies = match n {
                20..35 => 0,
                40 => 2,
                _ => 1,
            };
            for _ in 0..copies {
                sock.send_to(&buf[..len], dst).unwrap();
            }
            if n == 10 {
                sock.send_to(b"GET / HTTP/1.0", dst).unwrap();
            }
        }
    });
    (port, relay)
}

#[test]
fn an_outage_a_duplicate_and_garbage_on_the_path_are_measured() {
    let recv = spawn_recv(&["--seconds", "10"]);
    let (relay_port, relay) = spawn_lossy_relay(recv.port);
    let to = format!("127.0.0.1:{relay_port}");
    let send = jvpn()
        .args(["probe", "send", "--to", &to, "--seconds", "1"])
        .output()
        .unwrap();
    assert!(send.status.success());
    relay.join().unwrap();
    let (out, err) = recv.wait();
    assert!(out.status.success(), "{err}");
    let json = String::from_utf8(out.stdout).unwrap();
    let keys = ["received", "lost", "duplicates", "non_probe_datagrams"];
    let f = json_fields(&json, &keys);
    assert_eq!(f, ["35", "15", "1", "1"], "{json}");
    let silence = json_fields(&json, &["longest_silence_ms"])[0].parse::<f64>();
    let silence = silence.unwrap();
    // 16 packet intervals from the last packet before the outage to the first after it.
    assert!((310.0..400.0).contains(&silence), "{silence} ms\n{err}");
    let mos: f64 = json_fields(&json, &["mos"])[0].parse().unwrap();
    assert!(mos < 3.6, "30 % loss: MOS {mos}");
}

#[test]
fn bad_arguments_are_clap_errors() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["send", "--to", "nowhere", "--seconds", "1"],
            "--to <ADDR:PORT>",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--seconds",
                "1",
                "--pps",
                "0",
            ],
            "--pps",
        ),
        (
            &["send", "--to", "127.0.0.1:9", "--seconds", "0"],
            "seconds must be > 0",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--seconds",
                "1",
                "--size",
                "20",
            ],
            "--size",
        ),
        (&["recv"], "--listen <ADDR:PORT>"),
    ];
    for (args, needle) in cases {
        let out = jvpn().arg("probe").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_bind_failure_is_one_line_naming_the_address() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["recv", "--listen", &addr],
        vec!["send", "--to", "127.0.0.1:9", "--bind", &addr],
    ] {
        let out = jvpn()
            .arg("probe")
            .args(args)
            .args(["--seconds", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: cannot bind UDP socket to {addr}: ")),
            "{err}"
        );
    }
}

#[test]
fn sigterm_ends_the_receiver_with_a_report() {
    let recv = spawn_recv(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"not a probe packet", ("127.0.0.1", recv.port))
        .unwrap();
    // The receiver's live line (once a second) says it counted the datagram; it is printed
    // from the loop that also listens for SIGTERM, so the handler is in place by then.
    recv.wait_for_line("waiting for probe packets (non-probe datagrams 1)");
    // SAFETY: kill(2) on the pid of a child we spawned and have not waited for.
    let rc = unsafe { libc::kill(recv.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let (out, err) = recv.wait();
    assert!(out.status.success(), "{err}");
    let json = String::from_utf8(out.stdout).unwrap();
    let f = json_fields(&json, &["received", "non_probe_datagrams", "mos", "sent"]);
    assert_eq!(f, ["0", "1", "null", "null"], "{json}");
    assert!(err.contains("no probe packets received"), "{err}");
}
