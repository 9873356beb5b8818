//! The control plane: everything slow or rare (signals, bearer changes from netlink, control
//! socket requests, signed audit records coming back, policy reload). It waits as one task on
//! the async runtime and hands each happening to the packet loop as a [`Command`] over a
//! channel, ringing a [`Doorbell`] the loop polls; the loop answers between packets. The rule:
//! nothing here touches the core except through the loop's thread, and nothing slow (such as
//! reading the policy file on SIGHUP) happens on that thread: the loop gets the parsed policy.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::audit::log::{AuditWorker, Job};
use crate::control::{ControlRequest, NodeInfo};
use crate::proto::path::Uplink;
use crate::proto::SessionId;
use crate::proto::{AuditItem, Core};
use crate::sys::udp::Sockets;
use crate::sys::uplinks::UplinkWatch;

/// The control socket's side of the loop: requests to answer, and what `jvpn status` says
/// about the node itself.
pub struct Control {
    pub requests: mpsc::Receiver<ControlRequest>,
    pub info: NodeInfo,
    /// Re-reads the policy on SIGHUP, on the control plane's task; an error keeps the running
    /// policy (P3).
    pub reload: Option<Reload>,
    /// Told of each reloaded policy once it applies (on the packet loop's thread).
    pub applied: Option<Applied>,
    /// The audit trail's writer thread, when the config names an `audit` file.
    pub audit: Option<AuditWorker>,
}

/// Loads the policy again (SIGHUP). Runs on the control plane's task, never the packet loop's.
pub type Reload = Box<dyn FnMut() -> Result<crate::policy::Policy, String> + Send>;

/// Learns that a reloaded policy now applies.
pub type Applied = Box<dyn FnMut(&crate::policy::Policy)>;

/// Why the packet loop must stop.
pub(super) enum Stop {
    /// SIGINT/SIGTERM or the caller's shutdown future: tell the peer(s), then return.
    Shutdown,
    /// The bearer watcher failed.
    Failed(io::Error),
}

/// The loop's end of the control plane.
pub(super) struct ControlPlane {
    doorbell: Arc<Doorbell>,
    commands: std::sync::mpsc::Receiver<Command>,
    info: Option<NodeInfo>,
    applied: Option<Applied>,
    audit: Option<AuditWorker>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    /// Spawns the control plane's task on the current runtime.
    pub(super) fn start(
        uplinks: Option<UplinkWatch>,
        control: Option<Control>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<Self> {
        let (info, (reload, applied), requests, mut audit) = match control {
            Some(c) => (
                Some(c.info),
                (c.reload, c.applied),
                Some(c.requests),
                c.audit,
            ),
            None => (None, (None, None), None, None),
        };
        // Signed records come back from the audit thread through the control plane (which
        // rings the doorbell); jobs go to it straight from the loop.
        let signed = audit.as_mut().map(|a| {
            let (_, dead) = mpsc::unbounded_channel();
            std::mem::replace(&mut a.signed, dead)
        });
        let sources = Sources {
            uplinks,
            requests,
            signed,
            reload,
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        };
        let doorbell = Arc::new(Doorbell::new()?);
        let (tx, commands) = std::sync::mpsc::channel();
        let task = tokio::spawn(watch(tx, doorbell.clone(), sources, shutdown));
        Ok(Self {
            doorbell,
            commands,
            info,
            applied,
            audit,
            task,
        })
    }

    /// The doorbell's fd, for the loop's `poll`.
    pub(super) fn doorbell_fd(&self) -> RawFd {
        self.doorbell.0.as_raw_fd()
    }

    /// The doorbell rang: carries out every command queued, in order, until one says stop.
    pub(super) fn answer<C: Core>(&mut self, core: &mut C) -> Option<Stop> {
        self.doorbell.clear();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Shutdown => return Some(Stop::Shutdown),
                Command::Uplinks(Ok(snap)) => core.handle_uplinks(snap, Instant::now()),
                Command::Uplinks(Err(e)) => return Some(Stop::Failed(e)),
                Command::Control(req) => {
                    if let Some(info) = self.info.as_ref() {
                        answer_control(core, req, info, self.audit.as_ref());
                    }
                }
                Command::Reload(loaded) => apply(core, *loaded, self.applied.as_mut()),
                Command::Signed(session_id, bytes) => {
                    core.send_audit_record(session_id, bytes, Instant::now())
                }
            }
        }
        None
    }

    /// Hands the core's audit work to the writer thread (never waits). Without an audit
    /// file, a laptop's records are acknowledged and not kept.
    pub(super) fn submit_audit<C: Core>(&self, core: &mut C, sockets: &Sockets) {
        let Some(audit) = self.audit.as_ref() else {
            while core.poll_audit().is_some() {}
            return;
        };
        while let Some(item) = core.poll_audit() {
            audit.submit(match item {
                AuditItem::Draft(draft) => {
                    let locals = [
                        sockets.local_addr(draft.old.via),
                        sockets.local_addr(draft.new.via),
                    ];
                    Job::Rebind { draft, locals }
                }
                AuditItem::Received(record) => Job::Witness {
                    record,
                    at_ms: super::wall_ms(),
                },
            });
        }
    }

    /// Ends the control plane's task.
    pub(super) fn stop(self) {
        self.task.abort();
    }
}

fn answer_control<C: Core>(
    core: &mut C,
    req: ControlRequest,
    info: &NodeInfo,
    audit: Option<&AuditWorker>,
) {
    let now = Instant::now();
    match req {
        ControlRequest::Status { reply } => {
            let stats = audit.map(|a| &*a.stats);
            let _ = reply.send(crate::control::status::report(core, info, stats, now));
        }
        ControlRequest::Terminate { session_id, reply } => {
            let answer = match parse_session_id(&session_id) {
                Some(id) => core.terminate(id, now),
                None => Err(format!("{session_id:?} is not a SessionID (32 hex digits)")),
            };
            let _ = reply.send(answer);
        }
    }
}

/// SIGHUP, on the loop's side: a valid policy applies from now on; an invalid one is refused
/// with a warning naming the file, key and value, and the running policy stays (P3).
fn apply<C: Core>(
    core: &mut C,
    loaded: Result<crate::policy::Policy, String>,
    applied: Option<&mut Applied>,
) {
    match loaded {
        Ok(policy) => {
            core.set_proto(crate::policy::proto_config(&policy), Instant::now());
            if let Some(applied) = applied {
                applied(&policy);
            }
            tracing::info!(policy_version = %policy.version, "policy reloaded");
        }
        Err(e) => tracing::warn!("policy reload refused, keeping the running policy: {e}"),
    }
}

fn parse_session_id(s: &str) -> Option<SessionId> {
    let s = s.trim();
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId(id))
}

/// An eventfd the control plane writes to so that the packet loop's `poll` returns.
struct Doorbell(OwnedFd);

impl Doorbell {
    fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd creation; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from an eventfd we own.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// What the control plane (on the runtime's worker thread) hands to the packet loop.
enum Command {
    Shutdown,
    Uplinks(io::Result<Vec<Uplink>>),
    Control(ControlRequest),
    /// SIGHUP: the policy file read and parsed again (or why not).
    Reload(Box<Result<crate::policy::Policy, String>>),
    /// A record the audit thread signed, to send to the gateway.
    Signed(SessionId, Vec<u8>),
}

/// What the control plane waits on (an absent source never fires).
struct Sources {
    uplinks: Option<UplinkWatch>,
    requests: Option<mpsc::Receiver<ControlRequest>>,
    signed: Option<mpsc::UnboundedReceiver<(SessionId, Vec<u8>)>>,
    reload: Option<Reload>,
    hangup: tokio::signal::unix::Signal,
}

impl Sources {
    /// The next command; `None` when a channel closed (it is then no longer waited on).
    async fn next(&mut self) -> Option<Command> {
        let uplink_change = async {
            match self.uplinks.as_mut() {
                Some(w) => w.next_change().await,
                None => std::future::pending().await,
            }
        };
        let control_request = async {
            match self.requests.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let signed_record = async {
            match self.signed.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            snap = uplink_change => Some(Command::Uplinks(snap)),
            req = control_request => match req {
                Some(req) => Some(Command::Control(req)),
                None => {
                    self.requests = None;
                    None
                }
            },
            _ = self.hangup.recv() => Some(Command::Reload(Box::new(self.load_policy()))),
            rec = signed_record => match rec {
                Some((session_id, bytes)) => Some(Command::Signed(session_id, bytes)),
                None => {
                    self.signed = None;
                    None
                }
            },
        }
    }
}

impl Sources {
    /// SIGHUP: reads the policy here, off the packet loop (the read is small: policy files are
    /// at most 1 MiB).
    fn load_policy(&mut self) -> Result<crate::policy::Policy, String> {
        match self.reload.as_mut() {
            Some(load) => load(),
            None => Err("this node has no policy to reload".to_owned()),
        }
    }
}

/// The control plane's task: hands each command to the loop and rings the doorbell, until
/// `shutdown` completes (which it hands over last).
async fn watch(
    commands: std::sync::mpsc::Sender<Command>,
    doorbell: Arc<Doorbell>,
    mut sources: Sources,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let command = tokio::select! {
            biased;
            _ = &mut shutdown => Command::Shutdown,
            next = sources.next() => match next {
                Some(command) => command,
                None => continue,
            },
        };
        let last = matches!(command, Command::Shutdown);
        if commands.send(command).is_err() {
            return;
        }
        doorbell.ring();
        if last {
            return;
        }
    }
}
