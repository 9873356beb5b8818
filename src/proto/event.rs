//! Events the core reports: plain data, drained with `poll_event()`. The driver logs them
//! and (later) writes them to event sinks; emitting never changes the data path.

use std::net::SocketAddr;
use std::time::Duration;

use super::keys::SessionId;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent an authenticated close.
    PeerClosed,
    /// This node is shutting down.
    LocalShutdown,
    /// Nothing was heard from the peer for too long.
    PeerSilent,
    /// The gateway's idle expiry removed the session.
    IdleExpired,
    /// A newer handshake from the same peer replaced it.
    Replaced,
    /// The sending counter ran out.
    CounterExhausted,
}

impl CloseReason {
    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::LocalShutdown => "local_shutdown",
            CloseReason::PeerSilent => "peer_silent",
            CloseReason::IdleExpired => "idle_expired",
            CloseReason::Replaced => "replaced",
            CloseReason::CounterExhausted => "counter_exhausted",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            CloseReason::PeerClosed => 1,
            CloseReason::LocalShutdown => 2,
            CloseReason::PeerSilent => 3,
            CloseReason::IdleExpired => 4,
            CloseReason::Replaced => 5,
            CloseReason::CounterExhausted => 6,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => CloseReason::PeerClosed,
            2 => CloseReason::LocalShutdown,
            3 => CloseReason::PeerSilent,
            4 => CloseReason::IdleExpired,
            5 => CloseReason::Replaced,
            6 => CloseReason::CounterExhausted,
            _ => return None,
        })
    }
}

/// Something that happened to a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The laptop sent a handshake initiation (attempt counts from 1).
    HandshakeInitiated { attempt: u32 },
    /// The laptop has heard nothing from the gateway for `elapsed`; it keeps retrying.
    HandshakeStalled { elapsed: Duration },
    /// A session is established and carries traffic. `peer` is the peer's index in the
    /// configuration (always 0 on the laptop).
    SessionEstablished {
        session_id: SessionId,
        peer: usize,
        remote: SocketAddr,
    },
    /// The gateway saw an authenticated packet from a new source address for a session.
    EndpointChanged {
        session_id: SessionId,
        remote: SocketAddr,
    },
    /// A session ended.
    SessionClosed {
        session_id: SessionId,
        peer: usize,
        reason: CloseReason,
    },
}
