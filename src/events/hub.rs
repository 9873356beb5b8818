//! Fan-out of event lines to sinks and live followers, without ever blocking the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::EventRecord;

/// Lines a sink's queue holds before new events are dropped for that sink.
pub const SINK_QUEUE: usize = 1024;
/// Lines a follower's queue holds before new events are dropped for that follower.
pub const FOLLOWER_QUEUE: usize = 1024;
/// At most one WARN per sink (and one for all followers) per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// A writer thread writes at most this many bytes of queued lines in one `write`.
const BATCH_BYTES: usize = 64 * 1024;

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// Append to a file (created with mode 0600 if new; an existing file keeps its mode).
    File(PathBuf),
    /// Standard output.
    Stdout,
}

impl SinkSpec {
    /// The sink's name in counters and warnings: `stdout` or `file:PATH`.
    pub fn name(&self) -> String {
        match self {
            SinkSpec::File(p) => format!("file:{}", p.display()),
            SinkSpec::Stdout => "stdout".to_string(),
        }
    }
}

/// `-` is stdout, anything else a file path (the form of `--events`).
impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<SinkSpec, String> {
        match s {
            "" => Err("expected a file path, or - for standard output".to_string()),
            "-" => Ok(SinkSpec::Stdout),
            path => Ok(SinkSpec::File(PathBuf::from(path))),
        }
    }
}

/// Counters of one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// `stdout` or `file:PATH`.
    pub name: String,
    /// Lines written.
    pub written: u64,
    /// Lines lost: the queue was full, or the write failed.
    pub dropped: u64,
}

/// Counters of a hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubStats {
    /// Events handed to `emit`.
    pub emitted: u64,
    /// One entry per sink, in the order they were given.
    pub sinks: Vec<SinkStats>,
    /// Followers subscribed now.
    pub followers: usize,
    /// Lines lost by followers (all of them, including those gone since).
    pub followers_dropped: u64,
}

/// Fans events out to sinks and followers (REQUIREMENTS E4). Cheap to clone (one `Arc`).
///
/// `emit` serializes the record once and offers the line to every sink's bounded queue and
/// every follower's bounded queue with a non-blocking `try_send`; each sink has its own writer
/// thread that drains its queue. A full queue or a failed write loses the line *for that sink
/// only*, counts it, and logs a WARN at most once per [`WARN_INTERVAL`] per sink. Nothing a
/// sink or follower does can block or slow `emit`, so it is safe to call from the driver's
/// current-thread tokio loop.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    sinks: Vec<SinkHandle>,
    followers: Mutex<Vec<FollowerSlot>>,
    followers_counters: Arc<Counters>,
    emitted: AtomicU64,
}

struct SinkHandle {
    tx: SyncSender<Arc<str>>,
    counters: Arc<Counters>,
}

struct FollowerSlot {
    tx: mpsc::Sender<Arc<str>>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("stats", &self.stats())
            .finish()
    }
}

impl EventHub {
    /// Opens every sink and starts one writer thread per sink. Errors name the sink (a file that
    /// cannot be opened, a FIFO without a reader, a closed stdout).
    pub fn new(sinks: Vec<SinkSpec>) -> io::Result<EventHub> {
        let mut handles = Vec::with_capacity(sinks.len());
        for spec in sinks {
            let name = spec.name();
            let out = open_sink(&spec)
                .map_err(|e| io::Error::new(e.kind(), format!("event sink {name}: {e}")))?;
            let counters = Arc::new(Counters::new(name));
            let (tx, rx) = sync_channel(SINK_QUEUE);
            let thread_counters = counters.clone();
            std::thread::Builder::new()
                .name("jvpn-events".to_string())
                .spawn(move || write_loop(rx, out, &thread_counters))?;
            handles.push(SinkHandle { tx, counters });
        }
        Ok(EventHub {
            inner: Arc::new(Inner {
                sinks: handles,
                followers: Mutex::new(Vec::new()),
                followers_counters: Arc::new(Counters::new("followers".to_string())),
                emitted: AtomicU64::new(0),
            }),
        })
    }

    /// A hub with no sinks (events still reach followers).
    pub fn without_sinks() -> EventHub {
        EventHub::new(Vec::new()).expect("a hub without sinks opens nothing")
    }

    /// Hands one event to every sink and follower; never blocks, never fails.
    pub fn emit(&self, rec: &EventRecord) {
        self.inner.emitted.fetch_add(1, Relaxed);
        let mut followers = self.lock_followers();
        if self.inner.sinks.is_empty() && followers.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(rec.to_json_line());
        for sink in &self.inner.sinks {
            match sink.tx.try_send(line.clone()) {
                Ok(()) => {
                    sink.counters.accepted.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Full(_)) => sink.counters.lost(1, &"its queue is full"),
                Err(TrySendError::Disconnected(_)) => {
                    sink.counters.lost(1, &"its writer thread has stopped")
                }
            }
        }
        let counters = &self.inner.followers_counters;
        followers.retain(|f| match f.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                f.dropped.fetch_add(1, Relaxed);
                counters.lost(1, &"a follower is not keeping up");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// A live follower: receives every line emitted from now on, as long as it keeps up. Its
    /// queue holds [`FOLLOWER_QUEUE`] lines; when it is full, new lines are dropped for this
    /// follower (counted in [`EventFollower::dropped`] and in the hub's `followers_dropped`).
    /// Dropping the follower unsubscribes it.
    pub fn subscribe(&self) -> EventFollower {
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        self.lock_followers().push(FollowerSlot {
            tx,
            dropped: dropped.clone(),
        });
        EventFollower { rx, dropped }
    }

    /// Lines lost in total: by every sink and every follower.
    pub fn dropped(&self) -> u64 {
        let sinks: u64 = self.inner.sinks.iter().map(|s| s.counters.dropped()).sum();
        sinks + self.inner.followers_counters.dropped()
    }

    /// Lines lost, by sink name, plus `followers` for all followers together.
    pub fn dropped_by_sink(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = BTreeMap::new();
        for s in &self.inner.sinks {
            *map.entry(s.counters.name.clone()).or_default() += s.counters.dropped();
        }
        map.insert(
            "followers".to_string(),
            self.inner.followers_counters.dropped(),
        );
        map
    }

    /// All counters.
    pub fn stats(&self) -> HubStats {
        let mut followers = self.lock_followers();
        followers.retain(|f| !f.tx.is_closed());
        HubStats {
            emitted: self.inner.emitted.load(Relaxed),
            sinks: self
                .inner
                .sinks
                .iter()
                .map(|s| SinkStats {
                    name: s.counters.name.clone(),
                    written: s.counters.written.load(Relaxed),
                    dropped: s.counters.dropped(),
                })
                .collect(),
            followers: followers.len(),
            followers_dropped: self.inner.followers_counters.dropped(),
        }
    }

    /// **Blocks** until every line queued so far has been written (or has failed), or until
    /// `timeout`; returns whether everything was done. For shutdown, after the driver's loop
    /// has ended (so that the last events, such as `SessionTerminated`, reach the file), and
    /// for tests. Never call it from the loop itself.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self.inner.sinks.iter().any(|s| {
                let c = &s.counters;
                c.written.load(Relaxed) + c.failed.load(Relaxed) < c.accepted.load(Relaxed)
            });
            if !pending {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn lock_followers(&self) -> std::sync::MutexGuard<'_, Vec<FollowerSlot>> {
        // Held only for a few non-blocking try_sends; a panic while holding it leaves a
        // consistent Vec, so a poisoned lock is still usable.
        self.inner
            .followers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A live subscription to a hub's events (see [`EventHub::subscribe`]).
#[derive(Debug)]
pub struct EventFollower {
    rx: mpsc::Receiver<Arc<str>>,
    dropped: Arc<AtomicU64>,
}

impl EventFollower {
    /// The next line (a JSON object and its trailing `\n`); `None` once every handle to the hub
    /// is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Arc<str>> {
        self.rx.recv().await
    }

    /// The next line if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<str>> {
        self.rx.try_recv().ok()
    }

    /// Lines this follower lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Counters of one sink (or of all followers) and its warning limiter.
struct Counters {
    name: String,
    /// Lines taken into the queue.
    accepted: AtomicU64,
    /// Lines written.
    written: AtomicU64,
    /// Accepted lines whose write failed.
    failed: AtomicU64,
    /// Lines refused because the queue was full or the writer was gone.
    rejected: AtomicU64,
    limiter: WarnLimiter,
}

impl Counters {
    fn new(name: String) -> Counters {
        Counters {
            name,
            accepted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            limiter: WarnLimiter::new(WARN_INTERVAL),
        }
    }

    fn dropped(&self) -> u64 {
        self.failed.load(Relaxed) + self.rejected.load(Relaxed)
    }

    /// Counts `n` lost lines that never made it into the queue (or for followers).
    fn lost(&self, n: u64, why: &dyn fmt::Display) {
        self.rejected.fetch_add(n, Relaxed);
        self.warn(why);
    }

    /// Counts `n` accepted lines whose write failed.
    fn failed(&self, n: u64, why: &dyn fmt::Display) {
        self.failed.fetch_add(n, Relaxed);
        self.warn(why);
    }

    fn warn(&self, why: &dyn fmt::Display) {
        let total = self.dropped();
        if let Some(since_last) = self.limiter.check(total) {
            tracing::warn!(
                sink = %self.name,
                dropped = since_last,
                dropped_total = total,
                "event sink is losing events ({why}); the data path is not affected"
            );
        }
    }
}

/// Allows one warning per interval; lock-free so that `emit` never waits on it.
pub(crate) struct WarnLimiter {
    epoch: Instant,
    interval_ms: u64,
    /// Milliseconds since `epoch` before which no warning is due (0: none given yet).
    next_ms: AtomicU64,
    /// The total at the last warning.
    reported: AtomicU64,
}

impl WarnLimiter {
    pub(crate) fn new(interval: Duration) -> WarnLimiter {
        WarnLimiter {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// With the running total, returns how many were lost since the last warning if a warning
    /// is due now.
    pub(crate) fn check(&self, total: u64) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(now, total)
    }

    fn check_at(&self, now_ms: u64, total: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms < next {
            return None;
        }
        let new_next = now_ms.saturating_add(self.interval_ms).max(1);
        self.next_ms
            .compare_exchange(next, new_next, Relaxed, Relaxed)
            .ok()?;
        let before = self.reported.swap(total, Relaxed);
        Some(total.saturating_sub(before))
    }
}

fn open_sink(spec: &SinkSpec) -> io::Result<File> {
    match spec {
        SinkSpec::Stdout => Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
        SinkSpec::File(path) => {
            // O_NONBLOCK only for the open itself: a FIFO without a reader fails with ENXIO
            // instead of hanging the node's start. The writer thread then writes blocking.
            let file = crate::sys::open_append_nofollow(path, false, libc::O_NONBLOCK)?;
            let fd = file.as_raw_fd();
            // SAFETY: fcntl on a file descriptor we own; no memory is passed.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0
                // SAFETY: as above.
                || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(file)
        }
    }
}

/// One sink's writer thread: drains its queue in batches until the hub is gone.
fn write_loop(rx: Receiver<Arc<str>>, mut out: File, counters: &Counters) {
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        batch.clear();
        batch.extend_from_slice(first.as_bytes());
        let mut n: u64 = 1;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    n += 1;
                }
                Err(_) => break,
            }
        }
        // A failed batch counts all its lines as lost, even if part of it reached the sink.
        match out.write_all(&batch) {
            Ok(()) => {
                counters.written.fetch_add(n, Relaxed);
            }
            Err(e) => counters.failed(n, &format_args!("write failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_one_warning_per_interval_and_reports_the_count_since_the_last() {
        let l = WarnLimiter::new(Duration::from_secs(10));
        assert_eq!(l.check_at(0, 1), Some(1));
        assert_eq!(l.check_at(5, 2), None);
        assert_eq!(l.check_at(9_999, 50), None);
        assert_eq!(l.check_at(10_000, 51), Some(50));
        assert_eq!(l.check_at(10_001, 52), None);
        assert_eq!(l.check_at(30_000, 60), Some(9));
    }

    #[test]
    fn sink_specs_parse_like_the_events_flag() {
        assert_eq!("-".parse::<SinkSpec>(), Ok(SinkSpec::Stdout));
        assert_eq!(
            "/var/log/jvpn.jsonl".parse::<SinkSpec>(),
            Ok(SinkSpec::File("/var/log/jvpn.jsonl".into()))
        );
        assert!("".parse::<SinkSpec>().is_err());
        assert_eq!(SinkSpec::Stdout.name(), "stdout");
        assert_eq!(SinkSpec::File("/x".into()).name(), "file:/x");
    }
}
