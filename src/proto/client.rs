//! The laptop side: one session to one gateway. It starts the handshake at construction,
//! retransmits with exponential backoff and jitter, queues a few packets while it has no
//! session, keeps the path alive, and replaces a session that has gone silent (a new handshake
//! means a new SessionID, reported as such).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use super::control::ControlMessage;
use super::handshake::{Initiator, StaticKeys, Timestamp};
use super::iptable::IpTable;
use super::session::Session;
use super::wire::{self, Packet, RoutingTag, SealedKind, DATA_OVERHEAD, HEADER_LEN, TAG_LEN};
use super::{
    CloseReason, DropCounters, DropReason, Event, OwnedTransmit, ProtoConfig, Received, Timer,
    Transmit, WallClock,
};

/// Packets held while no session exists.
const QUEUE_LIMIT: usize = 64;

/// What the laptop core needs to know.
#[derive(Debug)]
pub struct ClientConfig {
    pub keys: StaticKeys,
    /// The gateway's Noise static key (X25519).
    pub gateway_public: [u8; 32],
    pub psk: Zeroizing<[u8; 32]>,
    pub endpoint: SocketAddr,
    /// Inner networks the gateway may send from (the tunnel's routes).
    pub routes: Vec<IpNet>,
    pub proto: ProtoConfig,
}

#[derive(Debug)]
struct Pending {
    initiator: Initiator,
    first_sent: Instant,
    next_retry: Instant,
    attempt: u32,
    stall_reported: bool,
}

/// The laptop core.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    routes: IpTable<()>,
    rng: ChaCha20Rng,
    clock: WallClock,
    last_timestamp: Timestamp,
    pending: Option<Pending>,
    session: Option<Session>,
    queue: VecDeque<Vec<u8>>,
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<Event>,
    drops: DropCounters,
    shut_down: bool,
}

impl Client {
    /// Creates the core and sends the first handshake initiation.
    pub fn new(cfg: ClientConfig, seed: u64, now: Instant, wall: Timestamp) -> Self {
        let mut routes = IpTable::default();
        for r in &cfg.routes {
            routes.insert(*r, ());
        }
        let mut c = Self {
            cfg,
            routes,
            rng: ChaCha20Rng::seed_from_u64(seed),
            clock: WallClock::new(now, wall),
            last_timestamp: Timestamp::default(),
            pending: None,
            session: None,
            queue: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            shut_down: false,
        };
        c.send_initiation(now, 1, now);
        c
    }

    /// Hot path: `buf[TUN_HEADROOM..TUN_HEADROOM + len]` holds an IP packet from the TUN
    /// device. On success the datagram is `buf[..t.len]`.
    pub fn handle_tun_packet(
        &mut self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Option<Transmit> {
        if HEADER_LEN + len + TAG_LEN > buf.len() {
            self.drops.count(DropReason::TooLarge);
            return None;
        }
        if wire::ip_ends(&buf[HEADER_LEN..HEADER_LEN + len]).is_none() {
            self.drops.count(DropReason::NotIp);
            return None;
        }
        if let Some(s) = self.session.as_mut() {
            if let Some(n) = s.seal_data(buf, len, now) {
                return Some(Transmit {
                    src: None,
                    dst: self.cfg.endpoint,
                    len: n,
                });
            }
            self.drops.count(DropReason::CounterExhausted);
            self.end_session(CloseReason::CounterExhausted, now);
        }
        if self.queue.len() >= QUEUE_LIMIT {
            self.drops.count(DropReason::QueueFull);
        } else {
            self.queue
                .push_back(buf[HEADER_LEN..HEADER_LEN + len].to_vec());
        }
        None
    }

    /// A datagram arrived at `local` from `remote`: `buf[..len]`. Data is opened in place.
    pub fn handle_datagram(
        &mut self,
        _local: Option<SocketAddr>,
        remote: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Received {
        let len = len.min(buf.len());
        match wire::parse(&buf[..len]) {
            Err(_) => self.drops.count(DropReason::Malformed),
            Ok(Packet::HandshakeResp {
                sender,
                receiver,
                noise,
            }) => {
                let noise = noise.to_vec();
                self.on_response(sender, receiver, &noise, remote, now);
            }
            Ok(Packet::HandshakeInit { .. }) => self.drops.count(DropReason::UnexpectedResponse),
            Ok(Packet::Sealed {
                kind,
                receiver,
                counter,
            }) => return self.on_sealed(kind, receiver, counter, &mut buf[..len], now),
        }
        Received::Nothing
    }

    /// Runs whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        if let Some(p) = self.pending.as_mut() {
            if !p.stall_reported && now >= p.first_sent + self.cfg.proto.handshake_timeout {
                p.stall_reported = true;
                self.events.push_back(Event::HandshakeStalled {
                    elapsed: now - p.first_sent,
                });
            }
            if now >= p.next_retry {
                let (first, attempt) = (p.first_sent, p.attempt + 1);
                self.send_initiation(first, attempt, now);
            }
        }
        let Some(s) = self.session.as_ref() else {
            return;
        };
        if now >= s.last_recv + self.cfg.proto.peer_silent_after {
            self.end_session(CloseReason::PeerSilent, now);
        } else if now >= s.last_send + self.cfg.proto.keepalive {
            self.send_keepalive(now);
        }
    }

    /// Shuts down: tells the gateway (authenticated close) and stops all timers.
    pub fn shutdown(&mut self, now: Instant) {
        if let Some(mut s) = self.session.take() {
            self.send_control(
                &mut s,
                ControlMessage::Close(CloseReason::LocalShutdown),
                now,
            );
            self.events.push_back(Event::SessionClosed {
                session_id: s.id(),
                peer: 0,
                reason: CloseReason::LocalShutdown,
            });
        }
        self.pending = None;
        self.shut_down = true;
    }

    /// Next owned datagram to send.
    pub fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline and why it exists.
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if self.shut_down {
            return None;
        }
        let mut best: Option<(Instant, Timer)> = None;
        let mut consider = |t: Instant, why: Timer| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, why));
            }
        };
        if let Some(p) = &self.pending {
            consider(p.next_retry, Timer::HandshakeRetry);
            if !p.stall_reported {
                consider(
                    p.first_sent + self.cfg.proto.handshake_timeout,
                    Timer::HandshakeRetry,
                );
            }
        }
        if let Some(s) = &self.session {
            consider(s.last_send + self.cfg.proto.keepalive, Timer::Keepalive);
            consider(
                s.last_recv + self.cfg.proto.peer_silent_after,
                Timer::PeerSilent,
            );
        }
        best
    }

    /// The current session, if established.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    fn on_response(
        &mut self,
        sender: RoutingTag,
        receiver: RoutingTag,
        noise: &[u8],
        remote: SocketAddr,
        now: Instant,
    ) {
        let matches = self
            .pending
            .as_ref()
            .is_some_and(|p| p.initiator.local_tag == receiver);
        if !matches {
            self.drops.count(DropReason::UnexpectedResponse);
            return;
        }
        let p = self.pending.take().expect("checked just above");
        let local_tag = p.initiator.local_tag;
        let root = match p.initiator.finish(noise) {
            Ok(r) => r,
            Err(_) => {
                // A forged or corrupted response: keep waiting for the real one.
                self.drops.count(DropReason::HandshakeFailed);
                self.restore_pending(p.first_sent, p.attempt, p.next_retry, now);
                return;
            }
        };
        if self.session.is_some() {
            self.end_session_quietly(CloseReason::Replaced);
        }
        let session = Session::new(
            root,
            true,
            local_tag,
            sender,
            self.cfg.proto.replay_window_bits,
            now,
        );
        self.events.push_back(Event::SessionEstablished {
            session_id: session.id(),
            peer: 0,
            remote,
        });
        self.session = Some(session);
        self.flush_queue(now);
    }

    /// A response failed to authenticate; the initiator state is spent, so start a fresh
    /// initiation at the scheduled retry time rather than immediately.
    fn restore_pending(&mut self, first: Instant, attempt: u32, next_retry: Instant, now: Instant) {
        self.send_initiation(first, attempt, now);
        if let Some(p) = self.pending.as_mut() {
            p.next_retry = next_retry.max(now);
        }
    }

    fn on_sealed(
        &mut self,
        kind: SealedKind,
        receiver: RoutingTag,
        counter: u64,
        datagram: &mut [u8],
        now: Instant,
    ) -> Received {
        let Some(s) = self.session.as_mut().filter(|s| s.local_tag == receiver) else {
            self.drops.count(DropReason::UnknownTag);
            return Received::Nothing;
        };
        let opened = match s.open(kind, counter, datagram, now) {
            Ok(o) => o,
            Err(reason) => {
                self.drops.count(reason);
                return Received::Nothing;
            }
        };
        match kind {
            SealedKind::Data if opened.plaintext.is_empty() => Received::Nothing,
            SealedKind::Data => {
                let inner = &datagram[opened.plaintext.clone()];
                match wire::ip_ends(inner) {
                    Some(ends) if self.routes.lookup(ends.src).is_some() => {
                        Received::Tun(opened.plaintext)
                    }
                    Some(_) => {
                        self.drops.count(DropReason::DisallowedSource);
                        Received::Nothing
                    }
                    None => {
                        self.drops.count(DropReason::NotIp);
                        Received::Nothing
                    }
                }
            }
            SealedKind::Control => {
                match ControlMessage::decode(&datagram[opened.plaintext]) {
                    Some(ControlMessage::Close(_)) => {
                        self.end_session(CloseReason::PeerClosed, now)
                    }
                    None => self.drops.count(DropReason::BadControl),
                }
                Received::Nothing
            }
        }
    }

    fn flush_queue(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut sent_any = false;
        while let Some(pkt) = self.queue.pop_front() {
            let mut buf = vec![0u8; pkt.len() + DATA_OVERHEAD];
            buf[HEADER_LEN..HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
            if let Some(n) = s.seal_data(&mut buf, pkt.len(), now) {
                buf.truncate(n);
                self.transmits.push_back(OwnedTransmit {
                    src: None,
                    dst: self.cfg.endpoint,
                    payload: buf,
                });
                sent_any = true;
            }
        }
        // The gateway treats a session as confirmed on our first data packet.
        if !sent_any {
            self.send_keepalive(now);
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; DATA_OVERHEAD];
        if let Some(n) = s.seal_data(&mut buf, 0, now) {
            buf.truncate(n);
            self.transmits.push_back(OwnedTransmit {
                src: None,
                dst: self.cfg.endpoint,
                payload: buf,
            });
        }
    }

    fn send_control(&mut self, s: &mut Session, msg: ControlMessage, now: Instant) {
        let body = msg.encode();
        let mut buf = vec![0u8; DATA_OVERHEAD + body.len()];
        if let Some(n) = s.seal_control(&body, &mut buf, now) {
            buf.truncate(n);
            self.transmits.push_back(OwnedTransmit {
                src: None,
                dst: self.cfg.endpoint,
                payload: buf,
            });
        }
    }

    fn end_session(&mut self, reason: CloseReason, now: Instant) {
        self.end_session_quietly(reason);
        if self.pending.is_none() && !self.shut_down {
            self.send_initiation(now, 1, now);
        }
    }

    fn end_session_quietly(&mut self, reason: CloseReason) {
        if let Some(s) = self.session.take() {
            self.events.push_back(Event::SessionClosed {
                session_id: s.id(),
                peer: 0,
                reason,
            });
        }
    }

    /// Sends initiation number `attempt` of a handshake first sent at `first`.
    fn send_initiation(&mut self, first: Instant, attempt: u32, now: Instant) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let tag = RoutingTag(self.rng.next_u32());
        // Strictly increasing even if the wall clock stands still or steps back.
        let mut ts = self.clock.at(now);
        if ts <= self.last_timestamp {
            ts = Timestamp {
                secs: self.last_timestamp.secs
                    + u64::from(self.last_timestamp.nanos == 999_999_999),
                nanos: (self.last_timestamp.nanos + 1) % 1_000_000_000,
            };
        }
        self.last_timestamp = ts;
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
        self.transmits.push_back(OwnedTransmit {
            src: None,
            dst: self.cfg.endpoint,
            payload: buf,
        });
        self.events.push_back(Event::HandshakeInitiated { attempt });
        let delay = self.backoff(attempt);
        self.pending = Some(Pending {
            initiator,
            first_sent: first,
            next_retry: now + delay,
            attempt,
            stall_reported: self.pending.as_ref().is_some_and(|p| p.stall_reported),
        });
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.cfg.proto.handshake_retry_initial;
        let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.cfg.proto.handshake_retry_max);
        let jitter_ms = (base.as_millis() as u64 / 4).max(1);
        capped + Duration::from_millis(self.rng.next_u64() % jitter_ms)
    }
}
