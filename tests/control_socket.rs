//! The control socket: a real server on a temporary path, a fake driver answering its
//! requests, and the blocking client the CLI uses; and the status report assembled from real
//! cores driven in the simulation.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use jvpn::control::path::default_socket_path_in;
use jvpn::control::{
    find_socket_in, netns_id, ControlClient, ControlRequest, ControlServer, NodeRole,
    SessionStatus, StatusReport,
};
use jvpn::events::{EventHub, EventRecord};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

const SID: &str = "00112233445566778899aabbccddeeff";

fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "jvpn-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the fake driver reports: one session, `SID`, until it is terminated.
fn fake_report(node_id: &str, alive: bool) -> StatusReport {
    let mut r = StatusReport::new(NodeRole::Gateway, node_id, "default-1", 42);
    r.drops.insert("unknown_tag".into(), 7);
    if alive {
        let mut s = SessionStatus::new(SID);
        s.state = Some("ATTACHED".into());
        s.state_version = Some(3);
        r.sessions.push(s);
    }
    r
}

/// Answers like a driver would (the real status assembly is tested against simulated cores
/// in `status_assembly` below): one session, `SID`, which it can terminate once.
async fn fake_driver(mut rx: mpsc::Receiver<ControlRequest>, node_id: String) {
    let mut alive = true;
    while let Some(req) = rx.recv().await {
        match req {
            ControlRequest::Status { reply } => {
                let _ = reply.send(fake_report(&node_id, alive));
            }
            ControlRequest::Terminate { session_id, reply } => {
                let answer = if alive && session_id == SID {
                    alive = false;
                    Ok(format!("session {session_id} terminated"))
                } else {
                    Err(format!("no session {session_id}"))
                };
                let _ = reply.send(answer);
            }
        }
    }
}

/// A control server and fake driver on their own thread and current-thread runtime.
struct Node {
    path: PathBuf,
    hub: EventHub,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(path: &Path, node_id: &str) -> Node {
        Node::start_with(ControlServer::bind(path).unwrap(), node_id, true)
    }

    fn start_with(server: ControlServer, node_id: &str, with_driver: bool) -> Node {
        let path = server.path().to_path_buf();
        let hub = EventHub::without_sinks();
        let (stop, stopped) = oneshot::channel::<()>();
        let node_id = node_id.to_string();
        let server_hub = hub.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, rx) = mpsc::channel(16);
                if with_driver {
                    tokio::spawn(fake_driver(rx, node_id));
                } else {
                    drop(rx);
                }
                tokio::select! {
                    _ = server.serve(tx, server_hub) => {}
                    _ = stopped => {}
                }
            });
        });
        Node {
            path,
            hub,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn client(&self) -> ControlClient {
        ControlClient::connect(&self.path).unwrap()
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A raw line-oriented connection, for what the typed client does not send.
struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next line as JSON, or None at EOF.
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).unwrap())
    }

    fn ask(&mut self, bytes: &[u8]) -> Value {
        self.send(bytes);
        self.recv().expect("a response")
    }
}

#[test]
fn status_reaches_the_client_intact_with_the_event_counters_the_server_adds() {
    let dir = scratch_dir("ctl-status");
    let node = Node::start(&dir.join("n.sock"), "node-A");
    let report = node.client().status().unwrap();
    let mut want = fake_report("node-A", true);
    want.events_dropped = Some(0);
    want.event_sinks_dropped = node.hub.dropped_by_sink();
    assert!(want.event_sinks_dropped.contains_key("followers"));
    assert_eq!(report, want);

    // The raw response is {"ok":true,"status":{...}}, and one connection serves many requests.
    let mut raw = Raw::connect(&node.path);
    for _ in 0..3 {
        let v = raw.ask(b"{\"cmd\":\"status\"}\n");
        assert_eq!(v["ok"], true);
        assert_eq!(v["status"]["sessions"][0]["state_version"], 3);
        assert_eq!(v["status"]["role"], "gateway");
        assert_eq!(v["status"]["events_dropped"], 0);
    }
}

#[test]
fn terminate_round_trips_and_a_refusal_is_an_error() {
    let dir = scratch_dir("ctl-term");
    let node = Node::start(&dir.join("n.sock"), "node-A");
    let mut c = node.client();
    let upper = SID.to_ascii_uppercase();
    assert_eq!(
        c.terminate(&upper).unwrap(),
        format!("session {SID} terminated"),
        "the id is normalized to lowercase"
    );
    let err = c.terminate(SID).unwrap_err();
    assert_eq!(err.to_string(), format!("no session {SID}"));
    assert!(node.client().status().unwrap().sessions.is_empty());

    let mut raw = Raw::connect(&node.path);
    let v = raw.ask(b"{\"cmd\":\"terminate\",\"session_id\":\"nope\"}\n");
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("not a SessionID"));
    let v = raw.ask(b"{\"cmd\":\"terminate\"}\n");
    assert_eq!(v["ok"], false);
}

#[test]
fn events_follow_gets_every_line_emitted_after_subscribing() {
    let dir = scratch_dir("ctl-events");
    let node = Node::start(&dir.join("n.sock"), "node-A");
    node.hub
        .emit(&EventRecord::new("Before", "node-A", "default-1"));
    let mut raw = Raw::connect(&node.path);
    let ack = raw.ask(b"{\"cmd\":\"events\"}\n");
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["following"], true);
    for i in 0..50u64 {
        node.hub.emit(
            &EventRecord::new("SessionStateChange", "node-A", "default-1")
                .session(SID)
                .state_version(i)
                .reason("attached_to_transport"),
        );
    }
    for i in 0..50u64 {
        let v = raw.recv().unwrap();
        assert_eq!(v["event_type"], "SessionStateChange");
        assert_eq!(v["state_version"], i);
        assert_eq!(v["node_id"], "node-A");
    }
    // Another client is served meanwhile.
    assert_eq!(node.client().status().unwrap().node_id, "node-A");
    assert_eq!(node.hub.stats().followers, 1);

    // The typed client's follow ends cleanly when the node stops.
    let client = node.client();
    let hub = node.hub.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        client.follow(|line| {
            let _ = tx.send(line.to_string());
            Ok(())
        })
    });
    // Emit until the new follower has seen one line (it subscribes asynchronously).
    let mut got = None;
    for _ in 0..500 {
        hub.emit(&EventRecord::new("Ping", "node-A", "default-1"));
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(10)) {
            got = Some(l);
            break;
        }
    }
    assert!(got.unwrap().contains("\"event_type\":\"Ping\""));
    drop(node);
    follower.join().unwrap().unwrap();
    // The raw follower got the pings too, then sees EOF.
    while let Some(v) = raw.recv() {
        assert_eq!(v["event_type"], "Ping");
    }
}

#[test]
fn disconnecting_followers_are_unsubscribed() {
    let dir = scratch_dir("ctl-unsub");
    let node = Node::start(&dir.join("n.sock"), "node-A");
    let mut raw = Raw::connect(&node.path);
    assert_eq!(raw.ask(b"{\"cmd\":\"events\"}\n")["ok"], true);
    assert_eq!(node.hub.stats().followers, 1);
    drop(raw);
    for _ in 0..500 {
        if node.hub.stats().followers == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the follower of a closed connection was not removed");
}

#[test]
fn two_nodes_on_two_paths_do_not_collide() {
    let dir = scratch_dir("ctl-two");
    let a_path = default_socket_path_in(&dir, "jvpn0").unwrap();
    let b_path = default_socket_path_in(&dir, "jvpn1").unwrap();
    assert_ne!(a_path, b_path);
    let a = Node::start(&a_path, "node-A");
    let b = Node::start(&b_path, "node-B");
    assert_eq!(a.client().status().unwrap().node_id, "node-A");
    assert_eq!(b.client().status().unwrap().node_id, "node-B");
    assert_eq!(a.client().status().unwrap().node_id, "node-A");

    // Discovery sees two live sockets of this namespace and asks to choose.
    let err = find_socket_in(&dir).unwrap_err().to_string();
    assert!(err.contains("several jvpn instances"), "{err}");
    assert!(err.contains(&a_path.display().to_string()), "{err}");
    assert!(err.contains(&b_path.display().to_string()), "{err}");
    drop(b);
    assert_eq!(find_socket_in(&dir).unwrap(), a_path);
}

#[test]
fn discovery_ignores_other_namespaces_and_says_when_nothing_runs() {
    let dir = scratch_dir("ctl-find");
    let err = find_socket_in(&dir.join("absent")).unwrap_err().to_string();
    assert!(
        err.starts_with("no running jvpn in this network namespace (looked in "),
        "{err}"
    );
    // A socket of another namespace (another inode prefix) and a stray file are not candidates.
    let other = dir.join(format!("{}-jvpn0.sock", netns_id().unwrap() + 1));
    let _other = UnixListener::bind(&other).unwrap();
    fs::write(dir.join(format!("{}-x.sock", netns_id().unwrap())), b"").unwrap();
    let err = find_socket_in(&dir).unwrap_err().to_string();
    assert!(err.contains("no running jvpn"), "{err}");
    // One stale and one live socket: the live one is chosen.
    let stale = default_socket_path_in(&dir, "old0").unwrap();
    drop(UnixListener::bind(&stale).unwrap());
    let live = default_socket_path_in(&dir, "new0").unwrap();
    let _node = Node::start(&live, "node-N");
    assert_eq!(find_socket_in(&dir).unwrap(), live);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refuses_the_second_instance() {
    let dir = scratch_dir("ctl-stale");
    let path = dir.join("n.sock");
    // A socket file whose process is gone: nothing listens on it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let node = Node::start(&path, "node-A");
    assert_eq!(node.client().status().unwrap().node_id, "node-A");

    let err = ControlServer::bind(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another jvpn answers"), "{err}");
    // The refused attempt left the running node alone.
    assert_eq!(node.client().status().unwrap().node_id, "node-A");
    let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(leftovers.len(), 1, "no temporary socket left behind");
}

#[test]
fn long_socket_paths_work_up_to_the_limit_and_fail_clearly_beyond_it() {
    let dir = scratch_dir("ctl-long");
    let base = dir.display().to_string().len() + 1;
    if base > 90 {
        eprintln!("skipped: the temporary directory's path is too long");
        return;
    }
    // The longest name that fits: no room left for the temporary name beside it.
    let name = "n".repeat(107 - base);
    let node = Node::start(&dir.join(&name), "node-L");
    assert_eq!(node.client().status().unwrap().node_id, "node-L");
    let mode = fs::metadata(dir.join(&name)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = ControlServer::bind(dir.join(format!("{name}x"))).unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = scratch_dir("ctl-file");
    let path = dir.join("n.sock");
    fs::write(&path, b"precious").unwrap();
    let err = ControlServer::bind(&path).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn the_socket_is_private_in_a_created_directory_and_removed_when_the_node_stops() {
    let dir = scratch_dir("ctl-mode");
    let sub = dir.join("run/jvpn");
    let path = sub.join("n.sock");
    let mut node = Node::start(&path, "node-A");
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(fs::metadata(&path).unwrap().file_type().is_socket());
    assert_eq!(
        fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
        0o755
    );
    node.stop();
    assert!(!path.exists(), "the socket file is removed on shutdown");
    // A server bound but never served removes its file when dropped, too.
    let server = ControlServer::bind(&path).unwrap();
    assert!(path.exists());
    drop(server);
    assert!(!path.exists());
}

#[test]
fn bad_requests_get_an_error_and_the_server_keeps_serving() {
    let dir = scratch_dir("ctl-bad");
    let node = Node::start(&dir.join("n.sock"), "node-A");
    let mut raw = Raw::connect(&node.path);
    let v = raw.ask(b"{\"cmd\":\"reboot\"}\n");
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("unknown command"),
        "{v}"
    );
    let v = raw.ask(b"this is not json\n");
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("malformed request"),
        "{v}"
    );
    let v = raw.ask(b"[\"status\"]\n");
    assert_eq!(v["ok"], false);
    // Blank lines are ignored; the same connection still works.
    let v = raw.ask(b"\n\r\n{\"cmd\":\"status\"}\r\n");
    assert_eq!(v["ok"], true);
    // Non-UTF-8 garbage is an error, not a crash.
    let v = raw.ask(b"\xff\xfe\x00\n");
    assert_eq!(v["ok"], false);

    // An oversized request is answered and the connection closed; others are still served.
    let mut big = Raw::connect(&node.path);
    let mut huge = vec![b'x'; 10_000];
    huge.push(b'\n');
    let v = big.ask(&huge);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("longer than"), "{v}");
    assert!(big.recv().is_none());
    assert_eq!(raw.ask(b"{\"cmd\":\"status\"}\n")["ok"], true);
    assert_eq!(node.client().status().unwrap().node_id, "node-A");

    // A client that connects and leaves at once (as a liveness probe does) changes nothing.
    drop(UnixStream::connect(&node.path).unwrap());
    assert_eq!(node.client().status().unwrap().node_id, "node-A");
}

#[test]
fn a_node_whose_driver_is_gone_answers_with_an_error() {
    let dir = scratch_dir("ctl-nodriver");
    let server = ControlServer::bind(dir.join("n.sock")).unwrap();
    let node = Node::start_with(server, "node-A", false);
    let err = node.client().status().unwrap_err().to_string();
    assert!(err.contains("shutting down"), "{err}");
}

#[test]
fn connecting_to_nothing_says_what_it_means() {
    let dir = scratch_dir("ctl-nothing");
    let err = ControlClient::connect(&dir.join("absent.sock"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is jvpn running"), "{err}");
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let err = ControlClient::connect(&stale).unwrap_err().to_string();
    assert!(err.contains("stale socket"), "{err}");
}

/// `jvpn status` as the node assembles it (`control::status::report`) from a laptop and a
/// gateway driven in the simulation, checked against what the simulation did.
mod status_assembly {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::common::{gateway_inner, ipv4, laptop_inner, World};
    use jvpn::control::status::{report, NodeInfo};
    use jvpn::control::{NodeRole, StatusReport};
    use jvpn::policy::BearerClass;
    use jvpn::proto::{Event, SessionId};

    const WIFI: u32 = 2;
    const CELL: u32 = 3;
    const CELL_ADDR: &str = "203.0.113.50:61000";

    fn info(role: NodeRole, w: &World, peers: &[&str]) -> NodeInfo {
        NodeInfo {
            role,
            node_id: format!("{role:?}"),
            policy_version: "default-1".into(),
            tunnel: "jvpn0".into(),
            started: w.start,
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The session the events established, and its latest state and state_version.
    fn what_happened(events: &[Event]) -> (SessionId, &'static str, u64) {
        let id = events
            .iter()
            .find_map(|e| match e {
                Event::SessionEstablished { session_id, .. } => Some(*session_id),
                _ => None,
            })
            .expect("a session was established");
        let (state, version) = events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::SessionStateChange {
                    session_id,
                    new_state,
                    state_version,
                    ..
                } if *session_id == id => Some((new_state.name(), *state_version)),
                _ => None,
            })
            .expect("the session changed state");
        (id, state, version)
    }

    /// When the laptop next puts a datagram on the wire, as an offset from `w.now`.
    fn next_laptop_send(w: &mut World) -> Duration {
        let from_laptop = |w: &World| {
            w.capture
                .iter()
                .filter(|d| d.from != w.gateway_addr)
                .count()
        };
        let (start, sent) = (w.now, from_laptop(w));
        while from_laptop(w) == sent {
            assert!(
                w.now - start < Duration::from_secs(60),
                "the laptop went quiet"
            );
            w.run_for(Duration::from_millis(1));
        }
        w.now - start
    }

    /// A laptop on Wi-Fi that sent `packets` into the tunnel, then lost Wi-Fi and jumped to
    /// cellular.
    fn jumped(packets: usize) -> World {
        let mut w = World::new(1, 11);
        w.give_links(
            0,
            &[
                (WIFI, BearerClass::Wifi, "wlan0", "192.0.2.10:40000"),
                (CELL, BearerClass::Cellular, "wwan0", CELL_ADDR),
            ],
        );
        w.establish();
        for i in 0..packets {
            let p = ipv4(laptop_inner(0), gateway_inner(), &[i as u8; 100]);
            w.laptop_sends(0, &p);
            w.run_for(Duration::from_millis(20));
        }
        w.link_down(0, WIFI);
        w.run_for(Duration::from_secs(2));
        w
    }

    fn report_at(w: &World, role: NodeRole, peers: &[&str]) -> StatusReport {
        let i = info(role, w, peers);
        match role {
            NodeRole::Laptop => report(&w.laptops[0].core, &i, None, w.now),
            NodeRole::Gateway => report(&w.gateway, &i, None, w.now),
        }
    }

    #[test]
    fn the_laptop_reports_its_session_its_bearer_after_a_jump_and_its_next_wake_up() {
        let mut w = jumped(5);
        let r = report_at(&w, NodeRole::Laptop, &[]);
        let (id, state, version) = what_happened(&w.laptops[0].events);
        assert_eq!(r.role, NodeRole::Laptop);
        assert_eq!(r.uptime_ms, w.elapsed().as_millis() as u64);
        assert_eq!(r.sessions.len(), 1, "{r:?}");
        let s = &r.sessions[0];
        assert_eq!(s.session_id, id.to_hex());
        assert_eq!(s.peer.as_deref(), Some("gateway"));
        assert_eq!(s.state.as_deref(), Some(state));
        assert_eq!(s.state_version, Some(version));
        let switched_to = w.laptops[0].events.iter().rev().find_map(|e| match e {
            Event::TransportSwitch { to, .. } => Some(*to),
            _ => None,
        });
        assert_eq!(switched_to, Some(BearerClass::Cellular));
        assert_eq!(
            s.bearer.as_deref(),
            Some("wwan0"),
            "the uplink it jumped to"
        );
        assert_eq!(s.bearer_class.as_deref(), Some("cellular"));
        let sent: usize = w.gateway_tun_out.iter().map(Vec::len).sum();
        assert_eq!(
            s.tx_bytes,
            Some(sent as u64),
            "what reached the gateway's TUN"
        );

        // The wake-up the report names is when the laptop next acts on the wire.
        let wake = r
            .next_wakeup
            .clone()
            .expect("a laptop always has a deadline");
        assert_eq!(wake.timer, "probe", "{wake:?}");
        assert_eq!(next_laptop_send(&mut w), Duration::from_millis(wake.in_ms));
    }

    #[test]
    fn the_gateway_reports_the_session_where_the_laptop_jumped_to() {
        let w = jumped(5);
        let r = report_at(&w, NodeRole::Gateway, &["alice-laptop"]);
        let (id, state, version) = what_happened(&w.gateway_events);
        assert_eq!(r.sessions.len(), 1, "{r:?}");
        let s = &r.sessions[0];
        assert_eq!(s.session_id, id.to_hex());
        assert_eq!(
            Some(s.session_id.clone()),
            w.laptops[0].core.session().map(|s| s.id().to_hex()),
            "one session, seen from both ends"
        );
        assert_eq!(
            s.peer.as_deref(),
            Some("alice-laptop"),
            "named by the config"
        );
        assert_eq!(s.state.as_deref(), Some(state));
        assert_eq!(s.state_version, Some(version));
        let cell: SocketAddr = CELL_ADDR.parse().unwrap();
        assert_eq!(
            s.remote,
            Some(cell.to_string()),
            "bound where the laptop jumped to"
        );
        assert_eq!(s.bearer, None, "a gateway has no bearers");
        let received: usize = w.gateway_tun_out.iter().map(Vec::len).sum();
        assert_eq!(s.rx_bytes, Some(received as u64));
        let wake = r.next_wakeup.expect("the gateway sweeps its sessions");
        assert_eq!(wake.timer, "housekeeping");
        assert!(wake.in_ms <= 1000, "{wake:?}");
    }
}
