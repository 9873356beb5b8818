//! The core's written contract: what a driver may call on a core (the laptop's [`Client`] or
//! the [`Gateway`]), in which order, and what each output means. The driver is written against
//! [`Core`] only; nothing else of a core is reachable from it.
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
use super::client::Client;
use super::gateway::Gateway;
use super::path::Uplink;
use super::session::SessionStats;
use super::state::{Reason, State};
use super::{
    DropCounters, Event, OwnedTransmit, ProtoConfig, Received, SessionId, SocketChange, Timer,
    Transmit, UplinkId,
};

/// The calls a driver makes on a core (laptop or gateway). See the module doc for the order.
pub trait Core {
    /// An inner packet from the TUN device; sealed in place, to send as the returned transmit.
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit>;
    /// A datagram received by the socket of `via`, addressed to `local` (when known).
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received;
    /// The deadline of `poll_timeout` has passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The usable uplinks changed (a snapshot).
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant);
    /// Sending by `via` failed at the socket.
    fn handle_send_error(&mut self, via: UplinkId, now: Instant);
    /// The node stops: tell the peer(s); no deadline follows.
    fn shutdown(&mut self, now: Instant);
    /// `jvpn terminate`: the outcome in words for the operator.
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String>;
    /// A reloaded policy, from now on.
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
    /// The next deadline and the timer that explains it.
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

impl Core for Client {
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        Client::handle_tun_packet(self, buf, len, now)
    }
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        Client::handle_datagram(self, via, local, remote, buf, len, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Client::handle_timeout(self, now)
    }
    fn handle_uplinks(&mut self, snapshot: Vec<Uplink>, now: Instant) {
        Client::handle_uplinks(self, snapshot, now)
    }
    fn handle_send_error(&mut self, via: UplinkId, now: Instant) {
        Client::handle_send_error(self, via, now)
    }
    fn shutdown(&mut self, now: Instant) {
        Client::shutdown(self, now)
    }
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        match self.session() {
            Some(s) if s.id() == session_id => {
                Client::terminate(self, Reason::OperatorTerminated, now);
                Ok(format!(
                    "session {} terminated (operator_terminated); a new session follows",
                    session_id.to_hex()
                ))
            }
            _ => Err(format!("no session {} on this laptop", session_id.to_hex())),
        }
    }
    fn set_proto(&mut self, proto: ProtoConfig, now: Instant) {
        Client::set_proto(self, proto, now)
    }
    fn send_audit_record(&mut self, session_id: SessionId, bytes: Vec<u8>, now: Instant) {
        Client::send_audit_record(self, session_id, bytes, now)
    }
    fn poll_socket_change(&mut self) -> Option<SocketChange> {
        Client::poll_socket_change(self)
    }
    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        Client::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Client::poll_event(self)
    }
    fn poll_audit(&mut self) -> Option<AuditItem> {
        Client::poll_audit(self).map(AuditItem::Draft)
    }
    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        Client::poll_timeout(self)
    }
    fn sessions(&self, now: Instant) -> Vec<SessionSummary> {
        let Some(s) = self.session() else {
            return Vec::new();
        };
        let active = self.paths().active().interface();
        vec![SessionSummary {
            session_id: s.id(),
            peer: None,
            state: self.state(),
            remote: None,
            bearer: self.paths().uplinks().find(|u| u.id == active).cloned(),
            stats: s.stats,
            key_epoch: s.epoch(),
            key_age: now.saturating_duration_since(s.key_installed()),
            age: now.saturating_duration_since(s.created),
            since_last_recv: now.saturating_duration_since(s.last_recv),
        }]
    }
    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        match (self.session(), self.state()) {
            (Some(s), Some((_, v))) if s.id() == session_id => Some(v),
            _ => None,
        }
    }
    fn drop_counts(&self) -> &DropCounters {
        Client::drops(self)
    }
    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        let c = Client::audit_counters(self);
        vec![
            ("acknowledged", c.acknowledged),
            ("undelivered", c.undelivered),
            ("draft_overflow", c.draft_overflow),
        ]
    }
}

impl Core for Gateway {
    fn handle_tun_packet(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<Transmit> {
        Gateway::handle_tun_packet(self, buf, len, now)
    }
    fn handle_datagram(
        &mut self,
        via: UplinkId,
        local: Option<IpAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        Gateway::handle_datagram(self, via, local, remote, buf, len, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Gateway::handle_timeout(self, now)
    }
    /// The gateway listens on one socket; it has no uplinks to choose from.
    fn handle_uplinks(&mut self, _snapshot: Vec<Uplink>, _now: Instant) {}
    fn handle_send_error(&mut self, _via: UplinkId, _now: Instant) {}
    fn shutdown(&mut self, now: Instant) {
        Gateway::shutdown(self, now)
    }
    fn terminate(&mut self, session_id: SessionId, now: Instant) -> Result<String, String> {
        if Gateway::terminate(self, session_id, now) {
            Ok(format!(
                "session {} terminated (operator_terminated)",
                session_id.to_hex()
            ))
        } else {
            Err(format!(
                "no session {} on this gateway",
                session_id.to_hex()
            ))
        }
    }
    fn set_proto(&mut self, proto: ProtoConfig, _now: Instant) {
        Gateway::set_proto(self, proto)
    }
    fn send_audit_record(&mut self, _session_id: SessionId, _bytes: Vec<u8>, _now: Instant) {}
    fn poll_socket_change(&mut self) -> Option<SocketChange> {
        None
    }
    fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        Gateway::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Gateway::poll_event(self)
    }
    fn poll_audit(&mut self) -> Option<AuditItem> {
        Gateway::poll_audit(self).map(AuditItem::Received)
    }
    fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        Gateway::poll_timeout(self)
    }
    fn sessions(&self, now: Instant) -> Vec<SessionSummary> {
        Gateway::sessions(self, now)
            .into_iter()
            .map(|v| SessionSummary {
                session_id: v.session_id,
                peer: Some(v.peer),
                state: Some((v.state, v.state_version)),
                remote: Some(v.endpoint),
                bearer: None,
                stats: v.stats,
                key_epoch: v.key_epoch,
                key_age: v.key_age,
                age: v.age,
                since_last_recv: v.since_last_recv,
            })
            .collect()
    }
    fn state_version(&self, session_id: SessionId) -> Option<u64> {
        Gateway::state_version(self, session_id)
    }
    fn drop_counts(&self) -> &DropCounters {
        Gateway::drops(self)
    }
    fn audit_counters(&self) -> Vec<(&'static str, u64)> {
        vec![("received_overflow", self.audit_overflow)]
    }
}
