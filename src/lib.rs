//! jvpn: a userspace "jumping" VPN. A Noise session, identified by a SessionID, is the anchor;
//! the transport underneath is only an attachment.
//!
//! Map of the crate:
//! - [`identity`]: Ed25519 node identities, key files, and the derived Noise static keys.
//! - [`proto`]: the sans-IO core (wire format, handshake, keys, replay window, laptop and
//!   gateway state machines). No sockets, no clock, no OS randomness.
//! - [`policy`]: policy files and node configuration, parsed into validated types.
//! - [`probe`]: `jvpn probe`, a media probe (send/receive an RTP-like stream, measure loss,
//!   silences, jitter and voice quality); independent of the VPN.
//! - [`sys`]: everything that makes Linux syscalls: TUN, UDP, netlink.
//! - [`events`]: the core's events as JSON lines and log lines, and the lines' non-blocking
//!   sinks (file, stdout, followers).
//! - [`control`]: the local control socket (`jvpn status`, `events --follow`, `terminate`).
//! - [`driver`]: the event loop that connects the core to the system; the only place that
//!   reads the clock and owns file descriptors.

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
