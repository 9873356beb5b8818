//! The event hub: JSON lines in files, and sinks or followers that are slow or broken never
//! block `emit` (REQUIREMENTS E1, E4).
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jvpn::events::{is_reason_code, EventHub, EventRecord, SinkSpec, FOLLOWER_QUEUE, SINK_QUEUE};
use serde_json::Value;

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

fn record(i: u64) -> EventRecord {
    EventRecord::new("SessionStateChange", "node-public-key", "default-1")
        .session("00112233445566778899aabbccddeeff")
        .state_version(i)
        .reason("reattach_success")
        .field("previous_state", "RECOVERING")
        .field("new_state", "ATTACHED")
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_file_sink_gets_one_parseable_object_per_line_with_the_common_keys() {
    let dir = scratch_dir("events-file");
    let path = dir.join("events.jsonl");
    let hub = EventHub::new(vec![SinkSpec::File(path.clone())]).unwrap();
    for i in 0..100 {
        hub.emit(&record(i));
    }
    hub.emit(
        &EventRecord::new("HandshakeInitiated", "node-public-key", "default-1").field("attempt", 1),
    );
    assert!(hub.flush(Duration::from_secs(10)));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new event file is private");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 101);
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "ts_ms",
            "event_type",
            "session_id",
            "node_id",
            "policy_version",
            "state_version",
        ] {
            assert!(obj.contains_key(key), "line {i} lacks {key}: {line}");
        }
        assert!(obj["ts_ms"].is_u64());
        if i < 100 {
            assert_eq!(obj["state_version"], i as u64, "lines stay in order");
            let code = obj["reason_code"].as_str().unwrap();
            assert!(is_reason_code(code), "{code}");
        } else {
            assert_eq!(obj["session_id"], Value::Null);
            assert!(!obj.contains_key("reason_code"));
        }
    }
    let stats = hub.stats();
    assert_eq!(stats.emitted, 101);
    assert_eq!(stats.sinks[0].written, 101);
    assert_eq!(hub.dropped(), 0);

    // A second hub appends to the same file and leaves its mode alone.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let hub2 = EventHub::new(vec![SinkSpec::File(path.clone())]).unwrap();
    hub2.emit(&record(7));
    assert!(hub2.flush(Duration::from_secs(10)));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 102);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_sink_nobody_drains_never_blocks_emit_and_its_losses_are_counted() {
    let dir = scratch_dir("events-stuck");
    let fifo = dir.join("stuck.fifo");
    mkfifo(&fifo);
    // A reader that never reads: the pipe fills (64 KiB), the writer thread blocks in write,
    // the queue fills, and from then on every event is dropped for this sink.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let good = dir.join("good.jsonl");
    let hub = EventHub::new(vec![
        SinkSpec::File(fifo.clone()),
        SinkSpec::File(good.clone()),
    ])
    .unwrap();
    let mut follower = hub.subscribe();
    let rec = record(1);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..100_000 {
        let t = Instant::now();
        hub.emit(&rec);
        slowest = slowest.max(t.elapsed());
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "100,000 emits took {took:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "one emit took {slowest:?}"
    );

    let stats = hub.stats();
    let stuck = &stats.sinks[0];
    // At most the queue plus what fit into the pipe got through; the rest was counted.
    assert!(
        stuck.dropped >= 100_000 - SINK_QUEUE as u64 - 2_000,
        "dropped only {}",
        stuck.dropped
    );
    assert!(stuck.written + stuck.dropped <= 100_000);
    assert_eq!(follower.dropped(), 100_000 - FOLLOWER_QUEUE as u64);
    let mut got = 0;
    while follower.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(got, FOLLOWER_QUEUE);
    assert_eq!(
        hub.dropped(),
        stuck.dropped + stats.sinks[1].dropped + follower.dropped()
    );
    assert_eq!(hub.dropped_by_sink()["followers"], follower.dropped());

    // Closing the reader makes the stuck writer fail (EPIPE): counted, no panic.
    drop(reader);
    assert!(hub.flush(Duration::from_secs(10)));
    let stats = hub.stats();
    assert_eq!(stats.sinks[0].written + stats.sinks[0].dropped, 100_000);
    // The healthy file sink only loses what its own queue could not absorb.
    let good_lines = fs::read_to_string(&good).unwrap().lines().count() as u64;
    assert_eq!(good_lines, stats.sinks[1].written);
    assert_eq!(stats.sinks[1].written + stats.sinks[1].dropped, 100_000);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_sink_whose_writes_fail_counts_every_lost_event() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let hub = EventHub::new(vec![SinkSpec::File("/dev/full".into())]).unwrap();
    for i in 0..500 {
        hub.emit(&record(i));
    }
    assert!(hub.flush(Duration::from_secs(10)));
    let stats = hub.stats();
    assert_eq!(stats.sinks[0].written, 0);
    assert_eq!(stats.sinks[0].dropped, 500);
    assert_eq!(hub.dropped(), 500);
    assert_eq!(hub.dropped_by_sink()["file:/dev/full"], 500);
}

#[test]
fn a_follower_that_never_reads_loses_events_without_slowing_anyone() {
    let dir = scratch_dir("events-followers");
    let path = dir.join("events.jsonl");
    let hub = EventHub::new(vec![SinkSpec::File(path.clone())]).unwrap();
    let sleepy = hub.subscribe();
    let mut keen = hub.subscribe();
    let n = 5 * FOLLOWER_QUEUE as u64;
    let mut keen_got = Vec::new();
    for i in 0..n {
        hub.emit(&record(i));
        while let Some(line) = keen.try_recv() {
            keen_got.push(line);
        }
        if i % 256 == 0 {
            // Let the file's writer keep up, so this test is only about followers.
            assert!(hub.flush(Duration::from_secs(10)));
        }
    }
    assert_eq!(keen_got.len() as u64, n, "the keen follower got everything");
    assert_eq!(keen.dropped(), 0);
    for (i, line) in keen_got.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["state_version"], i as u64);
    }
    assert_eq!(sleepy.dropped(), n - FOLLOWER_QUEUE as u64);
    assert!(hub.flush(Duration::from_secs(10)));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count() as u64, n);
    assert_eq!(hub.stats().followers, 2);
    drop(sleepy);
    hub.emit(&record(0));
    assert_eq!(
        hub.stats().followers,
        1,
        "a dropped follower is unsubscribed"
    );
    assert_eq!(hub.stats().followers_dropped, n - FOLLOWER_QUEUE as u64);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn emit_works_from_a_current_thread_runtime_and_followers_can_await() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hub = EventHub::without_sinks();
    let mut follower = hub.subscribe();
    let emitter = hub.clone();
    let got = rt.block_on(async move {
        let task = tokio::spawn(async move {
            let mut lines = Vec::new();
            while lines.len() < 3 {
                lines.push(follower.recv().await.unwrap());
            }
            lines
        });
        for i in 0..3 {
            emitter.emit(&record(i));
            tokio::task::yield_now().await;
        }
        task.await.unwrap()
    });
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|l| l.ends_with('\n')));
}

#[test]
fn a_sink_that_cannot_be_opened_is_an_error_naming_it() {
    let dir = scratch_dir("events-open");
    let err =
        EventHub::new(vec![SinkSpec::File(dir.join("missing-dir/events.jsonl"))]).unwrap_err();
    assert!(
        err.to_string().contains("missing-dir/events.jsonl"),
        "{err}"
    );
    // A FIFO nobody reads is refused at once instead of hanging the node's start.
    let fifo = dir.join("noreader.fifo");
    mkfifo(&fifo);
    let t = Instant::now();
    let err = EventHub::new(vec![SinkSpec::File(fifo)]).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        None,
        "wrapped with the sink's name: {err}"
    );
    assert!(err.to_string().contains("noreader.fifo"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_symlinked_events_path_is_refused_by_name_and_its_target_untouched() {
    let dir = scratch_dir("events-symlink");
    let target = dir.join("elsewhere");
    fs::write(&target, "precious\n").unwrap();
    let link = dir.join("events.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = EventHub::new(vec![SinkSpec::File(link.clone())])
        .expect_err("a symlinked events path must be refused");
    let shown = format!("{} is a symbolic link", link.display());
    assert!(err.to_string().contains(&shown), "{err}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    let _ = fs::remove_dir_all(&dir);
}
