//! The laptop's handshakes: the rule is that the laptop never gives up. An initiation is resent
//! with exponential backoff and jitter up to `handshake_retry_max`, `HandshakeStalled` is
//! reported once after `handshake_timeout`, and a session that ends is followed by a new
//! handshake at once (unless shutting down). A response is accepted only for the initiation
//! in flight; a forged one is counted and the wait goes on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::{Client, Earliest};
use crate::proto::handshake::{Initiator, Timestamp};
use crate::proto::keys::{SessionId, SessionRoot};
use crate::proto::lifecycle::Lifecycle;
use crate::proto::session::Session;
use crate::proto::state::Reason;
use crate::proto::wire::{self, RoutingTag, DATA_OVERHEAD, HEADER_LEN};
use crate::proto::{CloseReason, DropReason, Event, Timer};

/// The handshake that is due or under way.
#[derive(Debug)]
pub(super) struct Handshaking {
    /// The first initiation goes out at the first timeout, so that uplinks reported right
    /// after construction carry it (the gateway first sees the address the session uses).
    start_at: Option<Instant>,
    pub(super) pending: Option<Pending>,
    /// Initiation timestamps strictly increase, even if the wall clock stands still or steps
    /// back.
    last_timestamp: Timestamp,
}

#[derive(Debug)]
pub(super) struct Pending {
    initiator: Initiator,
    first_sent: Instant,
    next_retry: Instant,
    attempt: u32,
    stall_reported: bool,
}

impl Handshaking {
    pub(super) fn starting_at(now: Instant) -> Self {
        Self {
            start_at: Some(now),
            pending: None,
            last_timestamp: Timestamp::default(),
        }
    }

    /// The first start, the next retry and the stall report, whichever are due.
    pub(super) fn deadlines(&self, timeout: Duration, next: &mut Earliest) {
        if let Some(t) = self.start_at {
            next.consider(t, Timer::HandshakeRetry);
        }
        if let Some(p) = &self.pending {
            next.consider(p.next_retry, Timer::HandshakeRetry);
            if !p.stall_reported {
                next.consider(p.first_sent + timeout, Timer::HandshakeRetry);
            }
        }
    }

    /// `now` on the wall clock, or just after the last timestamp if that is not later.
    fn next_timestamp(&mut self, now: Timestamp) -> Timestamp {
        let last = self.last_timestamp;
        let ts = if now <= last {
            Timestamp {
                secs: last.secs + u64::from(last.nanos == 999_999_999),
                nanos: (last.nanos + 1) % 1_000_000_000,
            }
        } else {
            now
        };
        self.last_timestamp = ts;
        ts
    }
}

impl Client {
    /// The first initiation, retries and the stall report.
    pub(super) fn handshake_timers(&mut self, now: Instant) {
        if self.handshake.start_at.is_some_and(|t| now >= t) {
            self.handshake.start_at = None;
            self.send_initiation(now, 1, now);
        }
        if let Some(p) = self.handshake.pending.as_mut() {
            if !p.stall_reported && now >= p.first_sent + self.cfg.proto.handshake_timeout {
                p.stall_reported = true;
                self.out.event(Event::HandshakeStalled {
                    elapsed: now - p.first_sent,
                });
            }
            if now >= p.next_retry {
                let (first, attempt) = (p.first_sent, p.attempt + 1);
                self.send_initiation(first, attempt, now);
            }
        }
    }

    /// Starts a new handshake at once, unless one is under way or the core is shutting down.
    pub(super) fn restart_handshake(&mut self, now: Instant) {
        if self.handshake.pending.is_none() && !self.shut_down {
            self.send_initiation(now, 1, now);
        }
    }

    /// Sends initiation number `attempt` of a handshake first sent at `first`.
    fn send_initiation(&mut self, first: Instant, attempt: u32, now: Instant) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let tag = RoutingTag(self.rng.next_u32());
        let ts = self.handshake.next_timestamp(self.clock.at(now));
        let mut buf = vec![0u8; wire::INIT_LEN];
        let started = Initiator::start(
            &self.cfg.keys,
            &self.cfg.gateway_public,
            &self.cfg.psk,
            seed,
            ts,
            tag,
            &mut buf,
        );
        let (initiator, n) = match started {
            Ok(v) => v,
            Err(e) => {
                // Only a bad static key can make this fail; config validation prevents it.
                tracing::error!(error = %e, "failed to build handshake initiation");
                return;
            }
        };
        buf.truncate(n);
        self.out
            .transmit(self.paths.active(), self.cfg.endpoint, buf);
        self.out.event(Event::HandshakeInitiated { attempt });
        let delay = self.backoff(attempt);
        let stall_reported = self
            .handshake
            .pending
            .as_ref()
            .is_some_and(|p| p.stall_reported);
        self.handshake.pending = Some(Pending {
            initiator,
            first_sent: first,
            next_retry: now + delay,
            attempt,
            stall_reported,
        });
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.cfg.proto.handshake_retry_initial;
        let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.cfg.proto.handshake_retry_max);
        let jitter_ms = (base.as_millis() as u64 / 4).max(1);
        capped + Duration::from_millis(self.rng.next_u64() % jitter_ms)
    }

    /// A handshake response: `receiver` names our initiation, `sender` is the gateway's tag.
    pub(super) fn on_response(
        &mut self,
        sender: RoutingTag,
        receiver: RoutingTag,
        noise: &[u8],
        remote: SocketAddr,
        now: Instant,
    ) {
        let Some(p) = self
            .handshake
            .pending
            .take_if(|p| p.initiator.local_tag == receiver)
        else {
            self.drops.count(DropReason::UnexpectedResponse);
            return;
        };
        let local_tag = p.initiator.local_tag;
        let root = match p.initiator.finish(noise) {
            Ok(r) => r,
            Err(_) => {
                // A forged or corrupted response: keep waiting for the real one.
                self.drops.count(DropReason::HandshakeFailed);
                self.send_initiation(p.first_sent, p.attempt, now);
                if let Some(q) = self.handshake.pending.as_mut() {
                    q.next_retry = p.next_retry.max(now);
                }
                return;
            }
        };
        if self.session.is_some() {
            self.end_session_quietly(CloseReason::Replaced, now);
        }
        self.establish(root, (local_tag, sender), remote, now);
    }

    /// A new session from a completed handshake, on the active path with the handshake's tags
    /// `(local, remote)`.
    fn establish(
        &mut self,
        root: SessionRoot,
        (local_tag, remote_tag): (RoutingTag, RoutingTag),
        remote: SocketAddr,
        now: Instant,
    ) {
        let window = self.cfg.proto.replay_window_bits;
        let mut session = Session::new(root, true, local_tag, remote_tag, window, now);
        let session_id = session.id();
        tracing::debug!(%session_id, %remote, "handshake response accepted");
        self.out.event(Event::SessionEstablished {
            session_id,
            peer: 0,
            previous: self.previous,
        });
        self.out.event(Event::TransportAttached {
            session_id,
            class: self.paths.class_of(self.paths.active()),
        });
        session.set_grace(self.cfg.proto.keys.grace);
        self.rekey = Default::default();
        self.bad_controls = 0;
        self.slots.reset(self.paths.active(), local_tag, remote_tag);
        self.start_life(session_id, now);
        self.session = Some(session);
        self.paths.set_live(true, now);
        self.next_move = self.move_deadline(now);
        self.flush_queue(now);
    }

    fn start_life(&mut self, session_id: SessionId, now: Instant) {
        let mut life = Lifecycle::new(session_id, self.cfg.proto.lifecycle.clone(), now);
        life.attach(now, &mut self.out.state_events);
        self.out.flush_state_events();
        self.life = Some(life);
    }

    /// Sends the packets queued while there was no session.
    fn flush_queue(&mut self, now: Instant) {
        let via = self.paths.active();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut sent_any = false;
        while let Some(pkt) = self.queue.pop_front() {
            let mut buf = vec![0u8; pkt.len() + DATA_OVERHEAD];
            buf[HEADER_LEN..HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
            if let Some(n) = s.seal_data(&mut buf, pkt.len(), now) {
                buf.truncate(n);
                self.out.transmit(via, self.cfg.endpoint, buf);
                sent_any = true;
            }
        }
        // The gateway treats a session as confirmed on our first data packet.
        if !sent_any {
            self.send_keepalive(now);
        }
    }

    /// Ends the session and starts a new handshake.
    pub(super) fn end_session(&mut self, reason: CloseReason, now: Instant) {
        self.end_session_quietly(reason, now);
        self.restart_handshake(now);
    }

    pub(super) fn end_session_quietly(&mut self, reason: CloseReason, now: Instant) {
        self.end_session_with(reason, reason.state_reason(), now);
    }

    /// Drops the session: TERMINATED with `state_reason`, then `SessionClosed`.
    pub(super) fn end_session_with(
        &mut self,
        reason: CloseReason,
        state_reason: Reason,
        now: Instant,
    ) {
        let Some(s) = self.session.take() else {
            return;
        };
        if let Some(mut life) = self.life.take() {
            life.terminate(state_reason, now, &mut self.out.state_events);
            self.out.flush_state_events();
        }
        self.paths.set_live(false, now);
        self.audit.outbox.keep_session(None);
        self.previous = Some(s.id());
        self.out.event(Event::SessionClosed {
            session_id: s.id(),
            peer: 0,
            reason,
        });
    }
}
