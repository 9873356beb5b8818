//! A live session on the gateway: the session's keys and counters, where it is bound, its state
//! machine, and what the gateway keeps per session for resends, rekeys and audit records. The
//! rooms around it (table, receive, migrate, tombstone) work on one `GwSession` at a time.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Outputs;
use crate::proto::binding::Binding;
use crate::proto::control::ControlMessage;
use crate::proto::path_tags::HeardPaths;
use crate::proto::session::Session;
use crate::proto::state::{Machine, Reason, State};
use crate::proto::{DropReason, Event, ProtoConfig};

/// A live session on the gateway.
#[derive(Debug)]
pub(super) struct GwSession {
    pub session: Session,
    pub peer: usize,
    pub binding: Binding,
    /// The gateway address the laptop sends to; answers leave from it.
    pub local_ip: Option<IpAddr>,
    /// The gateway's view of the session's state (M6).
    pub machine: Machine,
    /// Our answer to the laptop's latest RekeyInit (epoch, our public key), for retransmits.
    pub rekey_resp: Option<(u32, [u8; 32])>,
    /// Authenticated control packets that made no sense (S9 evidence).
    pub bad_controls: u32,
    /// When a replayed control packet was last reported.
    pub last_replay_event: Option<Instant>,
    pub confirmed: bool,
    /// Digests of the audit records received lately (resent copies are only acknowledged).
    pub audit_seen: VecDeque<[u8; 8]>,
    /// The paths the laptop was heard on (J11), which pick the tag of what goes back.
    pub paths: HeardPaths,
    pub recent: RecentSend,
}

impl GwSession {
    /// A session whose handshake just finished, bound to the address the initiation came from.
    pub fn new(
        session: Session,
        peer: usize,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        proto: &ProtoConfig,
        now: Instant,
    ) -> Self {
        Self {
            session,
            peer,
            binding: Binding::new(remote, proto.paths.validation_timeout),
            local_ip,
            machine: Machine::new(now),
            rekey_resp: None,
            bad_controls: 0,
            last_replay_event: None,
            confirmed: false,
            audit_seen: VecDeque::new(),
            paths: HeardPaths::default(),
            recent: RecentSend::new(),
        }
    }

    /// Sends `msg` to `dst` on the path the laptop uses from there, within the binding's
    /// anti-amplification budget (a packet refused just leaves a gap in the control counters).
    pub fn send_control(
        &mut self,
        out: &mut Outputs,
        dst: SocketAddr,
        msg: ControlMessage,
        now: Instant,
    ) {
        let path_tag = self.paths.tag_for(dst, self.session.path_tags());
        let Some(payload) = self.session.control_packet(msg, path_tag, now) else {
            return;
        };
        if dst == self.binding.current() && !self.binding.may_send(payload.len()) {
            out.drops.count(DropReason::AmplificationLimit);
            return;
        }
        out.send(self.local_ip, dst, payload);
    }

    /// Applies a state transition to the session's machine and reports it (refusals are logged
    /// by the machine and change nothing).
    pub fn transition(&mut self, out: &mut Outputs, to: State, reason: Reason, now: Instant) {
        if let Ok(t) = self.machine.apply(to, reason, now) {
            out.events.push_back(Event::SessionStateChange {
                session_id: self.session.id(),
                previous_state: t.from,
                new_state: t.to,
                reason: t.reason,
                state_version: t.version,
            });
        }
    }
}

/// What the sweep of idle sessions enforces, from the policy.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    pub transport_lost_ttl: Duration,
    pub max_lifetime: Duration,
    pub key_max_age: Duration,
    /// A session whose first packet has not arrived within this is forgotten.
    pub pending_limit: Duration,
}

impl Bounds {
    pub fn of(proto: &ProtoConfig) -> Self {
        Self {
            transport_lost_ttl: proto.lifecycle.transport_lost_ttl,
            max_lifetime: proto.lifecycle.max_lifetime,
            // The laptop rekeys or ends the session at key_max_age; the gateway enforces it a
            // grace period later so the two never race.
            key_max_age: proto.keys.key_max_age + proto.keys.grace,
            pending_limit: proto.handshake_retry_max * 2,
        }
    }
}

/// The last data datagram to the laptop is kept for a resend if it was sent this recently...
const RECENT_WINDOW: Duration = Duration::from_millis(100);
/// ...and is at most this long (the buffer is allocated once, with the session).
const RECENT_MAX_LEN: usize = 1600;

/// The last data datagram sent to the laptop. When a NAT changes the laptop's mapping, what the
/// gateway sent to the old one until it heard from the new one is lost (at 50 packets/s one,
/// sometimes two); so when the binding moves to a new address of the same path, this datagram
/// goes again to the new one if it went to the old one within `RECENT_WINDOW`, and the laptop's
/// replay window drops it if it did arrive. Only one: more would spend the new path's
/// anti-amplification budget on packets that mostly arrived, and the next fresh packet would be
/// the one refused. The copy goes into a buffer allocated with the session, so the hot path
/// allocates nothing.
#[derive(Debug)]
pub(super) struct RecentSend {
    buf: Vec<u8>,
    sent: Option<(SocketAddr, Instant)>,
}

impl RecentSend {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(RECENT_MAX_LEN),
            sent: None,
        }
    }

    pub fn record(&mut self, datagram: &[u8], dst: SocketAddr, now: Instant) {
        if datagram.len() > RECENT_MAX_LEN {
            self.sent = None;
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(datagram);
        self.sent = Some((dst, now));
    }

    /// A copy of the datagram if it went to `old` within `RECENT_WINDOW`.
    pub fn to_resend(&self, old: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        match self.sent {
            Some((a, t)) if a == old && now.saturating_duration_since(t) <= RECENT_WINDOW => {
                Some(self.buf.clone())
            }
            _ => None,
        }
    }
}
