//! The sans-IO core: no sockets, no clock, no OS randomness. Every input takes `now`; every
//! output is polled. The driver (`crate::driver`) is the only caller in production; the
//! simulation in `tests/` is the other.
//!
//! The call contract is the trait [`Core`] (in [`node`]), implemented by both cores,
//! [`client::Client`] and [`gateway::Gateway`]: feed one input, then drain the outputs in the
//! order it names.
//!
//! The hot path (`handle_tun_packet`, and data in `handle_datagram`) works in place in the
//! caller's buffer and returns its result directly; it allocates nothing.
// The core iterates only ordered collections: one seed and one input sequence give one output
// (M5). clippy.toml names the hash collections this denies.
#![deny(clippy::disallowed_types)]

pub mod audit;
pub mod bearer;
pub mod binding;
pub mod client;
pub mod control;
pub mod event;
pub mod gateway;
pub mod handshake;
pub mod inner;
pub mod iptable;
pub mod keys;
pub mod lifecycle;
pub mod node;
pub mod path;
pub mod path_tags;
pub mod rekey;
pub mod replay;
pub mod seed;
pub mod session;
pub mod state;
pub mod status_frame;
pub mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use event::{CloseReason, Event};
pub use handshake::{StaticKeys, Timestamp};
pub use keys::SessionId;
pub use node::{AuditItem, Core, SessionSummary};
pub use seed::Seed;

/// Headroom the driver must leave before a TUN packet in its buffer.
pub const TUN_HEADROOM: usize = wire::HEADER_LEN;
/// Room the driver must leave after a TUN packet in its buffer.
pub const TUN_TAILROOM: usize = wire::TAG_LEN;

/// The local socket a datagram leaves or arrives by. On the laptop each uplink (bearer) has
/// its own, identified by the interface index; `DEFAULT` is an unbound socket that follows the
/// routing table (the gateway's only socket, and the laptop's before it knows its uplinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UplinkId(pub u32);

impl UplinkId {
    /// The unbound socket.
    pub const DEFAULT: UplinkId = UplinkId(0);
    const GENERATION_SHIFT: u32 = 24;

    /// The interface part: the uplink as the system reports it (generation 0).
    pub fn interface(self) -> UplinkId {
        UplinkId(self.0 & ((1 << Self::GENERATION_SHIFT) - 1))
    }

    /// Which socket of the interface: 0 is the first; a moving-target move (J10) opens the
    /// next (a new source port), 1 to 255 and round again.
    pub fn generation(self) -> u32 {
        self.0 >> Self::GENERATION_SHIFT
    }

    /// The same interface, socket generation `g` (mod 256).
    pub fn with_generation(self, g: u32) -> UplinkId {
        UplinkId(self.interface().0 | ((g & 0xff) << Self::GENERATION_SHIFT))
    }

    /// The generation after this one (never 0 again, so a move always changes the socket).
    pub fn next_generation(self) -> UplinkId {
        self.with_generation(self.generation() % 255 + 1)
    }
}

/// A socket the laptop core wants opened or closed: generation 0 of each uplink in a bearer
/// snapshot, and (J10) the next generation of the active uplink's socket on a moving-target
/// move, closed again when the move is done or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketChange {
    /// Open socket `id`, sending only through interface `device`.
    Open {
        id: UplinkId,
        device: String,
    },
    Close(UplinkId),
}

/// A datagram written into the caller's buffer (`buf[..len]`), to send by `via` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The source: choosing the uplink is the point of a jumping VPN.
    pub via: UplinkId,
    /// The local address to send from (the gateway answers from the address it was reached
    /// at); `None` lets the route decide.
    pub src_ip: Option<IpAddr>,
    pub dst: SocketAddr,
    pub len: usize,
}

/// A datagram the core owns (handshakes, keepalives, control): not on the hot path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedTransmit {
    pub via: UplinkId,
    pub src_ip: Option<IpAddr>,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What a received datagram produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Nothing for the TUN device (handshake, keepalive, control, or dropped).
    Nothing,
    /// An inner IP packet at `buf[range]` to write to the TUN device.
    Tun(std::ops::Range<usize>),
}

/// Why the core woke up at a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Resend the handshake initiation (laptop).
    HandshakeRetry,
    /// Send a keepalive so the gateway and NATs on the way keep the path (laptop).
    Keepalive,
    /// Nothing heard from the gateway for too long: replace the session (laptop).
    PeerSilent,
    /// Periodic sweep of idle sessions and rate-limit buckets (gateway).
    Housekeeping,
    /// Send a liveness probe on the active path or a standby uplink (laptop).
    Probe,
    /// The active path has been silent for `heartbeat_volatile` (laptop).
    PathSilent,
    /// Coalesced bearer changes are due, or a denied switch may be retried (laptop).
    Reevaluate,
    /// Resend a reattach, or give it up (laptop); resend or expire a path challenge (gateway).
    Reattach,
    /// A session bound: lifetime, time without a bearer, time VOLATILE.
    Lifecycle,
    /// Start, resend or give up a rekey; expire keys (laptop); expire replaced keys.
    Rekey,
    /// Resend an audit record the gateway has not acknowledged (laptop).
    Audit,
    /// Move the transport to a new source port (moving target, laptop).
    MovingTarget,
}

impl Timer {
    /// Stable lower_snake_case name (logs, `jvpn status`).
    pub fn name(self) -> &'static str {
        match self {
            Timer::HandshakeRetry => "handshake_retry",
            Timer::Keepalive => "keepalive",
            Timer::PeerSilent => "peer_silent",
            Timer::Housekeeping => "housekeeping",
            Timer::Probe => "probe",
            Timer::PathSilent => "path_silent",
            Timer::Reevaluate => "reevaluate",
            Timer::Reattach => "reattach",
            Timer::Lifecycle => "lifecycle",
            Timer::Rekey => "rekey",
            Timer::Audit => "audit",
            Timer::MovingTarget => "moving_target",
        }
    }
}

/// Why a datagram or TUN packet was dropped. Counted per reason, logged at TRACE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    Malformed,
    UnknownTag,
    AuthFailed,
    Replay,
    UnknownPeer,
    StaleInitiation,
    InitiationRateLimited,
    HandshakeFailed,
    UnexpectedResponse,
    DisallowedSource,
    NoRoute,
    NoSession,
    NotIp,
    TooLarge,
    QueueFull,
    CounterExhausted,
    BadControl,
    AmplificationLimit,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 18] = [
        DropReason::Malformed,
        DropReason::UnknownTag,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::UnknownPeer,
        DropReason::StaleInitiation,
        DropReason::InitiationRateLimited,
        DropReason::HandshakeFailed,
        DropReason::UnexpectedResponse,
        DropReason::DisallowedSource,
        DropReason::NoRoute,
        DropReason::NoSession,
        DropReason::NotIp,
        DropReason::TooLarge,
        DropReason::QueueFull,
        DropReason::CounterExhausted,
        DropReason::BadControl,
        DropReason::AmplificationLimit,
    ];

    /// Stable lower_snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownTag => "unknown_tag",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::StaleInitiation => "stale_initiation",
            DropReason::InitiationRateLimited => "initiation_rate_limited",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::UnexpectedResponse => "unexpected_response",
            DropReason::DisallowedSource => "disallowed_source",
            DropReason::NoRoute => "no_route",
            DropReason::NoSession => "no_session",
            DropReason::NotIp => "not_ip",
            DropReason::TooLarge => "too_large",
            DropReason::QueueFull => "queue_full",
            DropReason::CounterExhausted => "counter_exhausted",
            DropReason::BadControl => "bad_control",
            DropReason::AmplificationLimit => "amplification_limit",
        }
    }
}

/// Per-reason drop counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    /// Counts one drop and logs it at TRACE.
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
        tracing::trace!(reason = reason.name(), "dropped packet");
    }

    /// How many drops of `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters by name.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Timing and limits the core needs, taken from the policy by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtoConfig {
    /// First handshake retransmission delay; doubles up to `handshake_retry_max`.
    pub handshake_retry_initial: Duration,
    pub handshake_retry_max: Duration,
    /// After this long without an answer the laptop warns (and keeps retrying).
    pub handshake_timeout: Duration,
    /// The laptop sends a keepalive after this long without sending.
    pub keepalive: Duration,
    /// The laptop replaces a session it heard nothing on for this long.
    pub peer_silent_after: Duration,
    /// Bits in each replay window.
    pub replay_window_bits: usize,
    /// Minimum spacing of accepted initiations per peer.
    pub initiation_min_interval: Duration,
    /// Paths: probing, silence detection, switching bounds (laptop); validation (gateway).
    pub paths: PathConfig,
    /// Session bounds: lifetime, time without a bearer, time VOLATILE.
    pub lifecycle: lifecycle::LifecycleConfig,
    /// Key lifetime: rekey thresholds, maximum key age, grace of replaced keys.
    pub keys: rekey::KeyLimits,
}

/// Timing and bounds of bearer handling, from the policy (`volatility`, `switching`,
/// `security`, `bearers`).
#[derive(Clone, Debug, PartialEq)]
pub struct PathConfig {
    /// Probe the active path when nothing was heard on it for this long.
    pub heartbeat_interval: Duration,
    /// Nothing heard on the active path for this long: it is dead; jump.
    pub heartbeat_volatile: Duration,
    /// This many active-path probes unanswered in a row: the path is unstable; jump (0 = off).
    pub max_consecutive_drops: u32,
    /// Downlink loss is measured over windows of this length…
    pub loss_window: Duration,
    /// …and a loss fraction above this makes the path unstable.
    pub loss_threshold: f64,
    /// Bearer changes after an acted-on one are coalesced for this long.
    pub debounce: Duration,
    pub max_switches_per_min: u32,
    pub switch_cooldown: Duration,
    /// A reattach not acknowledged within this is given up.
    pub recovery_window: Duration,
    /// Reattach resend interval.
    pub reattach_retry: Duration,
    /// A reattach whose timestamp is further than this from the gateway's view is stale.
    pub reattach_proof_max_age: Duration,
    /// A new address that has not answered its challenge within this loses the binding.
    pub validation_timeout: Duration,
    /// Probe interval of standby uplinks, by bearer class.
    pub standby_probe: BTreeMap<bearer::BearerClass, Duration>,
    /// Failed authentications per source per window before events about it are suppressed.
    pub max_auth_failures: u32,
    pub auth_failure_window: Duration,
    /// Moving target (J10): move the transport to a new source port every `interval ±
    /// jitter` (`None`: off).
    pub moving_target: Option<(Duration, Duration)>,
}

impl Default for PathConfig {
    fn default() -> Self {
        use bearer::BearerClass;
        Self {
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_volatile: Duration::from_millis(2000),
            max_consecutive_drops: 3,
            loss_window: Duration::from_millis(2000),
            loss_threshold: 0.2,
            debounce: Duration::from_millis(250),
            max_switches_per_min: 8,
            switch_cooldown: Duration::from_millis(1500),
            recovery_window: Duration::from_millis(8000),
            reattach_retry: Duration::from_millis(250),
            reattach_proof_max_age: Duration::from_millis(5000),
            validation_timeout: Duration::from_millis(1000),
            standby_probe: [
                (BearerClass::Wired, Duration::from_millis(1000)),
                (BearerClass::Wifi, Duration::from_millis(1000)),
                (BearerClass::Cellular, Duration::from_millis(5000)),
                (BearerClass::Unknown, Duration::from_millis(2000)),
            ]
            .into_iter()
            .collect(),
            max_auth_failures: 16,
            auth_failure_window: Duration::from_millis(60_000),
            moving_target: None,
        }
    }
}

impl Default for ProtoConfig {
    fn default() -> Self {
        Self {
            handshake_retry_initial: Duration::from_millis(1000),
            handshake_retry_max: Duration::from_millis(16_000),
            handshake_timeout: Duration::from_millis(90_000),
            keepalive: Duration::from_millis(10_000),
            peer_silent_after: Duration::from_millis(35_000),
            replay_window_bits: 4096,
            initiation_min_interval: Duration::from_millis(20),
            paths: PathConfig::default(),
            lifecycle: lifecycle::LifecycleConfig::default(),
            keys: rekey::KeyLimits::default(),
        }
    }
}

/// Wall-clock time derived from a base pair, so the core needs no clock of its own.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base_instant: Instant,
    base: Timestamp,
}

impl WallClock {
    /// `base` is the wall time at `base_instant`.
    pub fn new(base_instant: Instant, base: Timestamp) -> Self {
        Self { base_instant, base }
    }

    /// The wall time at `now`.
    pub fn at(&self, now: Instant) -> Timestamp {
        let d = now.saturating_duration_since(self.base_instant);
        let nanos = u64::from(self.base.nanos) + u64::from(d.subsec_nanos());
        Timestamp {
            secs: self.base.secs + d.as_secs() + nanos / 1_000_000_000,
            nanos: (nanos % 1_000_000_000) as u32,
        }
    }
}
