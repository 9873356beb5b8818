//! The CLI's side of the control socket: blocking, no async runtime needed.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::protocol::{Request, StatusReport};

/// How long the client waits for a response (the server gives the node 5 s + 5 s).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to a node's control socket.
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    /// Connects; errors say what a missing, stale or root-only socket means.
    pub fn connect(path: &Path) -> anyhow::Result<ControlClient> {
        let shown = path.display();
        let stream = UnixStream::connect(path).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    "no such socket: is jvpn running (with this config or tunnel name)?"
                }
                Some(libc::ECONNREFUSED) => {
                    "nothing answers: the jvpn that created it is gone (a stale socket)"
                }
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "permission denied: the control socket is root-only (mode 0600); run as root"
                }
                _ => "",
            };
            let hint = if hint.is_empty() {
                e.to_string()
            } else {
                format!("{hint} ({e})")
            };
            anyhow::anyhow!("cannot connect to the control socket {shown}: {hint}")
        })?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(ControlClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request and returns its `{"ok":true,...}` response; `{"ok":false}` becomes an
    /// error with the server's message.
    pub fn request(&mut self, req: &Request) -> anyhow::Result<Value> {
        self.send_line(&req.to_line())?;
        let v = self.read_response()?;
        if v.get("ok") == Some(&Value::Bool(true)) {
            Ok(v)
        } else {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the node refused the request without saying why");
            bail!("{msg}")
        }
    }

    /// Sends raw bytes (tests of bad input).
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }

    /// Reads one response line as JSON, whatever its `ok`.
    pub fn read_response(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => bail!(
                "the node closed the control connection ({})",
                self.path.display()
            ),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                bail!(
                    "no answer from {} within {} s",
                    self.path.display(),
                    RESPONSE_TIMEOUT.as_secs()
                )
            }
            Err(e) => return Err(e).context(format!("cannot read from {}", self.path.display())),
        }
        serde_json::from_str(&line)
            .with_context(|| format!("the node sent a malformed response: {}", line.trim_end()))
    }

    /// `status`.
    pub fn status(&mut self) -> anyhow::Result<StatusReport> {
        let mut v = self.request(&Request::Status)?;
        let report = v
            .get_mut("status")
            .map(Value::take)
            .context("the node's status response has no \"status\"")?;
        serde_json::from_value(report).context("the node sent a status this jvpn cannot read")
    }

    /// `terminate`: the node's message on success.
    pub fn terminate(&mut self, session_id: &str) -> anyhow::Result<String> {
        let v = self.request(&Request::Terminate {
            session_id: session_id.to_string(),
        })?;
        Ok(v.get("message")
            .and_then(Value::as_str)
            .unwrap_or("terminated")
            .to_string())
    }

    /// `events`: calls `on_line` with every event line (including its `\n`) until the node
    /// closes the connection (`Ok`) or `on_line` fails (its error is returned).
    pub fn follow(mut self, mut on_line: impl FnMut(&str) -> io::Result<()>) -> anyhow::Result<()> {
        self.request(&Request::Events)?;
        self.reader.get_ref().set_read_timeout(None)?;
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => on_line(&line)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(e).context(format!("cannot read from {}", self.path.display()))
                }
            }
        }
    }
}
