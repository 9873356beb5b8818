//! jvpn: a userspace "jumping" VPN. A Noise session, identified by a SessionID, is the anchor;
//! the transport underneath is only an attachment.
//!
//! Map of the crate, bottom up (each module imports only those above it in this list):
//! - [`proto`]: the sans-IO core. No sockets, no clock, no OS randomness; imports nothing else
//!   of the crate. [`proto::node`] is its written contract with the driver (the `Core` trait);
//!   [`proto::client`] is the laptop, [`proto::gateway`] the gateway around its session table;
//!   [`proto::path`] decides jumps, [`proto::binding`] where a gateway session is bound,
//!   [`proto::path_tags`] the per-path routing tags of both ends; [`proto::wire`],
//!   [`proto::handshake`], [`proto::keys`], [`proto::session`], [`proto::replay`],
//!   [`proto::control`], [`proto::rekey`], [`proto::state`], [`proto::lifecycle`],
//!   [`proto::status_frame`], [`proto::audit`], [`proto::event`], [`proto::bearer`],
//!   [`proto::seed`] and [`proto::iptable`] are the parts they share.
//! - [`identity`]: Ed25519 node identities, key files, and the derived Noise static keys.
//! - [`policy`]: policy files and node configuration, parsed into validated types, and their
//!   conversion into the core's configuration.
//! - [`audit`]: the audit trail's records (canonical bytes, signatures, JSON lines), the file
//!   and its writer thread, and `jvpn audit verify`.
//! - [`events`]: the core's events as JSON lines and log lines, and the lines' non-blocking
//!   sinks (file, stdout, followers).
//! - [`sys`]: everything that makes Linux syscalls: TUN, UDP sockets ([`sys::udp`]), netlink,
//!   bearer watching, privileges.
//! - [`probe`]: `jvpn probe`, a media probe (send/receive an RTP-like stream, measure loss,
//!   silences, jitter and voice quality); independent of the VPN.
//! - [`control`]: the local control socket (`jvpn status`, `events --follow`, `terminate`) and
//!   the status report assembled from the core's answers ([`control::status`]).
//! - [`driver`]: the packet loop that connects the core to the system (the only place that
//!   reads the clock and owns file descriptors) and its control plane (signals, netlink,
//!   control requests, reload).
//! - [`node`]: a validated config turned into a core, a TUN device and sockets, handed to the
//!   driver until a signal.
//! - [`cli`]: the command line (clap derive) and its dispatch; `main.rs` only calls it.

pub mod audit;
pub mod cli;
pub mod control;
pub mod driver;
pub mod events;
pub mod identity;
pub mod node;
pub mod policy;
pub mod probe;
pub mod proto;
pub mod sys;
