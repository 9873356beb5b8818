//! The core's written contract: what a driver may call on a core (the laptop's
//! [`Client`](super::client::Client) or the [`Gateway`](super::gateway::Gateway)), in which
//! order, and what each output means. The driver is written against [`Core`] only; nothing else
//! of a core is reachable from it. Both cores implement it directly, each in its own room.
//!
//! # Inputs
//!
//! Every input takes `now` (the driver's monotonic clock) and never blocks:
//!
//! - [`Core::handle_tun_packet`]: an inner packet read from the TUN device at
//!   `buf[TUN_HEADROOM..TUN_HEADROOM + len]`. The core seals it in place and returns the
//!   [`Transmit`] to send from `buf[..len]` (the hot path: no queue, no allocation).
//! - [`Core::handle_datagram`]: a datagram read from the socket of uplink `via`, at
//!   `buf[..len]`. [`Received::Tun`] names the inner packet to write to the TUN device.
//! - [`Core::handle_timeout`]: the deadline of [`Core::poll_timeout`] has passed.
//! - [`Core::handle_uplinks`]: the system's usable uplinks (a sorted snapshot, not a delta).
//! - [`Core::handle_send_error`]: sending by `via` failed at the socket: data for the path
//!   logic, never an error of the driver.
//! - Commands: [`Core::terminate`], [`Core::set_proto`] (a reloaded policy),
//!   [`Core::send_audit_record`] (a record the audit thread signed), [`Core::shutdown`].
//!
//! # Outputs, in this order after every input
//!
//! 1. [`Core::poll_socket_change`] until `None`: sockets to open or close. Apply them first,
//!    because the transmits that follow may leave by a socket just opened.
//! 2. [`Core::poll_transmit`] until `None`: datagrams to send (the source uplink is chosen by
//!    the core; a failed send goes back as [`Core::handle_send_error`]).
//! 3. [`Core::poll_event`] until `None`: what happened, as plain data. A driver that reports
//!    events asks [`Core::state_version`] for a session's current version. An event may be
//!    queued by the transmits' send errors, so repeat 1–3 until no event came.
//! 4. [`Core::poll_audit`] until `None`: audit work (E5) for the signing thread.
//! 5. [`Core::poll_timeout`]: when to call [`Core::handle_timeout`] next, and the [`Timer`]
//!    that explains the deadline. `None`: no deadline (wait for input only).
//!
//! # Sockets
//!
//! The core is the only owner of its sockets but one: the driver opens the unbound
//! [`UplinkId::DEFAULT`] socket at start (the gateway's only socket, the one it listens on;
//! the laptop's until it knows its uplinks) and keeps it open to the end. Every other socket
//! exists from the [`SocketChange::Open`] that names it to the [`SocketChange::Close`] of the
//! same id: the laptop opens generation 0 of each uplink of a snapshot and the moving
//! target's generations, and closes every socket of an uplink that left the snapshot. The
//! gateway opens nothing. A transmit by a moving-target generation that is not open never
//! leaves by another socket (the driver reports a send error); one by generation 0 of an
//! uplink without an open socket (it could not be bound) follows the routing table by the
//! default socket.
//!
//! # Queries
//!
//! [`Core::sessions`], [`Core::drop_counts`] and [`Core::audit_counters`] answer in proto
//! data; `control::status` turns them into what `jvpn status` shows.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::audit::{RebindDraft, ReceivedRecord};
use super::path::Uplink;
use super::session::SessionStats;
use super::state::State;
use super::{
    DropCounters, Event, OwnedTransmit, ProtoConfig, Received, SessionId, SocketChange, Timer,
    Transmit, UplinkId,
};

/// The calls a driver makes on a core (laptop or gateway). See the module doc for the order.
pub trait Core {
    /// Hot path: `buf[TUN_HEADROOM..TUN_HEADROOM + len]` holds an IP packet from the TUN
    /// device. It is sealed in place; on success the datagram to send is `buf[..t.len]`.
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit>;
    /// A datagram received by the socket of `via` from `remote`, addressed to `local` (when
    /// known): `buf[..len]`. Data is opened in place.
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received;
    /// The deadline of `poll_timeout` has passed: runs whatever timers are due.
    fn handle_timeout(&mut self, now: Instant);
    /// The system's usable uplinks changed (a snapshot, not a delta).
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant);
    /// Sending by `via` failed at the socket (no route, link down).
    fn handle_send_error(&mut self, via: UplinkId, now: Instant);
    /// The node stops: tells the peer(s) (authenticated close); no deadline follows.
    fn shutdown(&mut self, now: Instant);
    /// Operator termination (`jvpn terminate`): ends the session with reason
    /// `operator_terminated` and tells the peer. The outcome in words for the operator; an
    /// unknown SessionID is an error.
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String>;
    /// Applies a reloaded policy (P3) from now on.
    fn set_proto(&mut self, proto: ProtoConfig, now: Instant);
    /// A record this node signed, to send to the gateway (laptop; the gateway ignores it).
    fn send_audit_record(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant);

    /// A socket to open or close (drained before the transmits).
    fn poll_socket_change(&mut self) -> Option<SocketChange>;
    /// A datagram to send.
    fn poll_transmit(&mut self) -> Option<OwnedTransmit>;
    /// Something that happened.
    fn poll_event(&mut self) -> Option<Event>;
    /// Audit work: a re-anchor to sign, or a laptop's record to witness.
    fn poll_audit(&mut self) -> Option<AuditItem>;
    /// The next deadline and the timer that explains it (why it exists).
    fn poll_timeout(&self) -> Option<(Instant, Timer)>;

    /// Established sessions, as of `now`.
    fn sessions(&self, now: Instant) -> Vec<SessionSummary>;
    /// The session's current state_version (for events that do not carry one).
    fn state_version(&self, session_id: SessionId) -> Option<u64>;
    /// Packets dropped, by reason.
    fn drop_counts(&self) -> &DropCounters;
    /// The core's own audit counters, by name.
    fn audit_counters(&self) -> Vec<(&'static str, u64)>;
}

/// Audit work a core hands to the driver.
pub enum AuditItem {
    /// A completed re-anchor to sign and append (laptop).
    Draft(RebindDraft),
    /// A laptop's record to verify and witness (gateway).
    Received(ReceivedRecord),
}

/// One established session as the core sees it. Durations are *before now*.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    pub session_id: SessionId,
    /// The gateway's peer index; `None` on the laptop (its peer is the gateway).
    pub peer: Option<usize>,
    /// The state and its `state_version` (`None` before the session is bound).
    pub state: Option<(State, u64)>,
    /// Where the peer's packets come from (gateway).
    pub remote: Option<SocketAddr>,
    /// The uplink carrying the session (laptop).
    pub bearer: Option<Uplink>,
    pub stats: SessionStats,
    pub key_epoch: u32,
    pub key_age: Duration,
    pub age: Duration,
    pub since_last_recv: Duration,
}
