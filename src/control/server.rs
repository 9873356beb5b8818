//! The node's side of the control socket.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::path::{probe, Probe};
use super::protocol::{error_line, ok_line, Request, StatusReport, MAX_REQUEST_BYTES};
use crate::events::{EventHub, WarnLimiter, WARN_INTERVAL};

/// How long the server waits for the driver to take and answer a request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that sends no request for this long is closed (not while following events).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// A response that cannot be written within this time closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest path a Unix socket can be bound to (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What the control server asks the driver. The driver answers from its loop; dropping the
/// reply sender answers with an error.
#[derive(Debug)]
pub enum ControlRequest {
    /// `jvpn status`: the driver fills a report (the server adds the event counters).
    Status {
        /// Where the report goes.
        reply: oneshot::Sender<StatusReport>,
    },
    /// `jvpn terminate SESSION_ID`: terminate the session with reason `operator_terminated`.
    /// `Ok(message)` on success (e.g. "session ... terminated"), `Err(message)` otherwise
    /// (e.g. "no session ...").
    Terminate {
        /// 32 lowercase hex digits (already checked).
        session_id: String,
        /// The outcome, in words for the operator.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// A bound control socket, ready to [`serve`](ControlServer::serve). The socket file is
/// removed when the server (or its `serve` future) is dropped, if it is still ours.
#[derive(Debug)]
pub struct ControlServer {
    listener: StdUnixListener,
    file: SocketFile,
}

impl ControlServer {
    /// Binds the control socket at `path`: creates its directory (mode 0755) if missing,
    /// replaces a stale socket nobody answers on, refuses if another instance answers or the
    /// path is not a socket, and makes the socket mode 0600 *before* it appears at `path`
    /// (it is bound under a temporary name, chmodded, then hard-linked into place, which also
    /// fails if another instance got there first). Synchronous; call it before dropping
    /// privileges if the directory needs them.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<ControlServer> {
        let path = path.as_ref();
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the control socket path {} is too long: a Unix socket path has at most \
                     {MAX_SOCKET_PATH} bytes",
                    path.display()
                ),
            ));
        }
        let dir = socket_dir(path)?;
        clear_the_way(path)?;

        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".j{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let listener = if tmp.as_os_str().len() <= MAX_SOCKET_PATH {
            let _ = fs::remove_file(&tmp);
            let bound = bind_private(&tmp, path);
            let _ = fs::remove_file(&tmp);
            bound?
        } else {
            // No room for the temporary name: bind in place and chmod at once. The directory
            // is 0755, so others could at worst connect in that instant if the umask is 0.
            let l = StdUnixListener::bind(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create the control socket {}: {e}", path.display()),
                )
            })?;
            fs::set_permissions(path, Permissions::from_mode(0o600))?;
            l
        };
        let ino = fs::symlink_metadata(path)?.ino();
        Ok(ControlServer {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                ino,
            },
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Serves connections until dropped (spawn it: `tokio::spawn(server.serve(tx, hub))`).
    /// Needs a tokio runtime (current-thread is fine); nothing here blocks the thread. Each
    /// connection runs in its own task; `status` and `terminate` go to the driver through
    /// `requests`; `events` subscribes to `hub`. When the future is dropped, every connection
    /// is closed and the socket file removed.
    pub async fn serve(self, requests: mpsc::Sender<ControlRequest>, hub: EventHub) {
        let ControlServer { listener, file } = self;
        let _file = file;
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "control socket: cannot serve");
                return;
            }
        };
        let mut conns = JoinSet::new();
        let accept_errors = WarnLimiter::new(WARN_INTERVAL);
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        if conns.len() >= MAX_CONNECTIONS {
                            let _ = stream.try_write(
                                error_line("too many control connections; try again").as_bytes(),
                            );
                            continue;
                        }
                        conns.spawn(connection(stream, requests.clone(), hub.clone()));
                    }
                    Err(e) => {
                        // EMFILE and the like: wait a little instead of spinning.
                        if accept_errors.check(0).is_some() {
                            tracing::warn!(error = %e, "control socket: accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }
}

/// The socket file we created; removed on drop if it is still ours (same inode).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The socket's directory, created (mode 0755) if missing.
fn socket_dir(path: &Path) -> io::Result<&Path> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        // 0755 whatever the umask: clients (root) must be able to reach the socket.
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .and_then(|()| fs::set_permissions(dir, Permissions::from_mode(0o755)))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
    }
    Ok(dir)
}

/// Removes a stale socket at `path`; refuses a live one or a non-socket.
fn clear_the_way(path: &Path) -> io::Result<()> {
    let shown = path.display();
    match probe(path) {
        Probe::Missing => Ok(()),
        Probe::NotASocket => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{shown} exists and is not a socket; remove it or set control_socket to another path"
            ),
        )),
        Probe::Live => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another jvpn answers on the control socket {shown}; stop it first, or give this \
                 instance another tunnel name or control_socket"
            ),
        )),
        Probe::Stale => {
            tracing::info!(path = %shown, "removing a stale control socket (nothing answers on it)");
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale control socket {shown}: {e}"),
                )),
                _ => Ok(()),
            }
        }
        Probe::Unknown(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot check the control socket {shown}: {e}"),
        )),
    }
}

/// Binds at `tmp`, makes it 0600, and links it to `path` (failing if `path` exists).
fn bind_private(tmp: &Path, path: &Path) -> io::Result<StdUnixListener> {
    let listener = StdUnixListener::bind(tmp).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create a control socket in {}: {e}", tmp.display()),
        )
    })?;
    fs::set_permissions(tmp, Permissions::from_mode(0o600))?;
    fs::hard_link(tmp, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another jvpn created the control socket {} at the same time",
                    path.display()
                ),
            )
        } else {
            io::Error::new(
                e.kind(),
                format!("cannot create the control socket {}: {e}", path.display()),
            )
        }
    })?;
    Ok(listener)
}

/// How a request line read ended.
enum Line {
    /// A line (possibly the last one, without its `\n`).
    Some,
    /// End of stream.
    Eof,
    /// Longer than `MAX_REQUEST_BYTES`.
    TooLong,
}

async fn read_request<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> io::Result<Line> {
    line.clear();
    let limit = (MAX_REQUEST_BYTES + 1) as u64;
    let n = (&mut *rd).take(limit).read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Line::Some)
    } else if line.len() > MAX_REQUEST_BYTES {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Some)
    }
}

async fn send(wr: &mut OwnedWriteHalf, text: &str) -> io::Result<()> {
    match timeout(WRITE_TIMEOUT, wr.write_all(text.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// One client connection: requests in order until EOF, an error, or `events`.
async fn connection(stream: UnixStream, requests: mpsc::Sender<ControlRequest>, hub: EventHub) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::with_capacity(256);
    loop {
        let read = match timeout(IDLE_TIMEOUT, read_request(&mut rd, &mut line)).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = send(&mut wr, &error_line("idle for too long; closing")).await;
                return;
            }
        };
        match read {
            Line::Eof => return,
            Line::TooLong => {
                let msg = format!("request longer than {MAX_REQUEST_BYTES} bytes; closing");
                if send(&mut wr, &error_line(&msg)).await.is_ok() {
                    let _ = wr.shutdown().await;
                    // Closing with unread input would reset the connection before the client
                    // reads the error; read a bounded amount of the rest first.
                    let mut rest = (&mut rd).take(1 << 20);
                    let mut sink = tokio::io::sink();
                    let drain = tokio::io::copy(&mut rest, &mut sink);
                    let _ = timeout(Duration::from_secs(1), drain).await;
                }
                return;
            }
            Line::Some => {}
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match Request::parse(&line) {
            Err(msg) => error_line(&msg),
            Ok(Request::Status) => status(&requests, &hub).await,
            Ok(Request::Terminate { session_id }) => terminate(&requests, session_id).await,
            Ok(Request::Events) => {
                follow(rd, wr, &hub).await;
                return;
            }
        };
        if send(&mut wr, &response).await.is_err() {
            return;
        }
    }
}

/// Hands a request to the driver and waits for its answer, both within `REPLY_TIMEOUT`.
async fn ask<T>(
    requests: &mpsc::Sender<ControlRequest>,
    make: impl FnOnce(oneshot::Sender<T>) -> ControlRequest,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    match timeout(REPLY_TIMEOUT, requests.send(make(tx))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err("the node is shutting down".to_string()),
        Err(_) => return Err("the node is busy; try again".to_string()),
    }
    match timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err("the node dropped the request".to_string()),
        Err(_) => Err(format!(
            "the node did not answer within {} s",
            REPLY_TIMEOUT.as_secs()
        )),
    }
}

async fn status(requests: &mpsc::Sender<ControlRequest>, hub: &EventHub) -> String {
    match ask(requests, |reply| ControlRequest::Status { reply }).await {
        Ok(mut report) => {
            report.events_dropped = Some(hub.dropped());
            report.event_sinks_dropped = hub.dropped_by_sink();
            match serde_json::to_value(&report) {
                Ok(v) => ok_line("status", v),
                Err(e) => error_line(&format!("cannot encode the status: {e}")),
            }
        }
        Err(msg) => error_line(&msg),
    }
}

async fn terminate(requests: &mpsc::Sender<ControlRequest>, session_id: String) -> String {
    let answer = ask(requests, |reply| ControlRequest::Terminate {
        session_id,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(message)) => ok_line("message", message.into()),
        Ok(Err(msg)) | Err(msg) => error_line(&msg),
    }
}

/// `events`: acknowledge, then copy the follower's lines until the client goes away. The
/// subscription exists before the acknowledgement is sent, so every event emitted after the
/// client reads it is delivered (unless this follower falls more than `FOLLOWER_QUEUE` behind).
async fn follow(mut rd: BufReader<OwnedReadHalf>, mut wr: OwnedWriteHalf, hub: &EventHub) {
    let mut follower = hub.subscribe();
    if send(&mut wr, &ok_line("following", true.into()))
        .await
        .is_err()
    {
        return;
    }
    let mut scratch = [0u8; 512];
    loop {
        tokio::select! {
            line = follower.recv() => match line {
                // No write timeout here: a client that stops reading only fills its own
                // follower queue, and its lines are dropped and counted.
                Some(line) => {
                    if wr.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            // Anything the client sends is ignored; EOF or an error ends the stream.
            r = rd.read(&mut scratch) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}
