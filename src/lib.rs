//! jvpn: a userspace "jumping" VPN. A Noise session, identified by a SessionID, is the anchor;
//! the transport underneath is only an attachment.
//!
//! Map of the crate:
//! - [`identity`]: Ed25519 node identities, key files, and the derived Noise static keys.
//! - [`proto`]: the sans-IO core (wire format, handshake, keys, replay window, laptop and
//!   gateway state machines). No sockets, no clock, no OS randomness. [`proto::node`] is the
//!   core's contract with the driver.
//! - [`policy`]: policy files and node configuration, parsed into validated types, and their
//!   conversion into the core's configuration.
//! - [`probe`]: `jvpn probe`, a media probe (send/receive an RTP-like stream, measure loss,
//!   silences, jitter and voice quality); independent of the VPN.
//! - [`sys`]: everything that makes Linux syscalls: TUN, UDP sockets ([`sys::udp`]), netlink.
//! - [`events`]: the core's events as JSON lines and log lines, and the lines' non-blocking
//!   sinks (file, stdout, followers).
//! - [`control`]: the local control socket (`jvpn status`, `events --follow`, `terminate`) and
//!   the status report assembled from the core's answers ([`control::status`]).
//! - [`driver`]: the packet loop that connects the core to the system (the only place that
//!   reads the clock and owns file descriptors) and its control plane (signals, netlink,
//!   control requests, reload).

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
