//! The local control socket: `jvpn status`, `jvpn events --follow`, `jvpn terminate`.
//! See `docs/EVENTS.md` for the protocol.
//!
//! - [`path`]: where a node's socket lives (`/run/jvpn/<netns-id>-<tunnel>.sock` unless the
//!   config sets `control_socket`) and how a CLI command finds it.
//! - [`ControlServer`]: the node's side. `bind` is synchronous; `serve` is a task for the
//!   node's tokio runtime that forwards `status` and `terminate` to the driver as
//!   [`ControlRequest`]s and streams events from an [`EventHub`](crate::events::EventHub).
//! - [`status`]: the status report, assembled from the core's answers (`proto::node::Core`).
//! - [`ControlClient`]: a blocking client; [`cli`] has the three commands and their clap
//!   arguments.
//!
//! The socket is mode 0600 (root only, since the node runs as root): the status it serves may
//! name interfaces and addresses, which events never do.

pub mod cli;
mod client;
pub mod path;
mod protocol;
mod server;
pub mod status;

pub use client::{ControlClient, RESPONSE_TIMEOUT};
pub use path::{default_socket_path, find_socket_in, netns_id, socket_path_for, RUN_DIR};
pub use protocol::{
    error_line, ok_line, parse_session_id, NodeRole, Request, SessionStatus, StatusReport, Wakeup,
    MAX_REQUEST_BYTES,
};
pub use server::{ControlRequest, ControlServer, IDLE_TIMEOUT, MAX_CONNECTIONS, REPLY_TIMEOUT};
pub use status::NodeInfo;
