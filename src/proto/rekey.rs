//! Rekey (S6): fresh key material from an X25519 exchange inside the session, under the control
//! keys. The SessionID is unchanged; only the key epoch advances. Rekeys are policy driven and
//! bounded: at most one per `min_rekey_interval`, a bounded number of retransmissions, and a
//! `RekeyDenied` event (never a loop) when a trigger comes too soon.

use std::time::{Duration, Instant};

use curve25519_dalek::MontgomeryPoint;
use rand_core::RngCore;
use zeroize::Zeroizing;

/// What asked for a rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RekeyTrigger {
    /// The keys reached `rekey_after_ms` or `rekey_after_packets`.
    TimeElapsed,
    /// The session moved to another bearer.
    TransportChange,
    /// An operator or a policy change asked for it.
    PolicyTrigger,
    /// Something suspicious happened on the session (a replayed control packet).
    SecurityEvent,
    /// The peer started it (how the responder reports it).
    PeerInitiated,
}

impl RekeyTrigger {
    /// Stable lower_snake_case reason code.
    pub fn code(self) -> &'static str {
        match self {
            RekeyTrigger::TimeElapsed => "time_elapsed",
            RekeyTrigger::TransportChange => "transport_change",
            RekeyTrigger::PolicyTrigger => "policy_trigger",
            RekeyTrigger::SecurityEvent => "security_event",
            RekeyTrigger::PeerInitiated => "peer_initiated",
        }
    }
}

/// Why a rekey was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RekeyDenial {
    /// The previous rekey is younger than `min_rekey_interval_ms`.
    RateLimited,
    /// A rekey is already under way.
    InProgress,
    /// The peer never answered within the retransmission bound.
    NoResponse,
}

impl RekeyDenial {
    /// Stable lower_snake_case reason code.
    pub fn code(self) -> &'static str {
        match self {
            RekeyDenial::RateLimited => "rekey_rate_limited",
            RekeyDenial::InProgress => "rekey_in_progress",
            RekeyDenial::NoResponse => "rekey_no_response",
        }
    }
}

/// Key lifetime bounds from the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    pub rekey_after: Duration,
    pub rekey_after_packets: u64,
    pub key_max_age: Duration,
    pub grace: Duration,
    pub min_rekey_interval: Duration,
    /// Rekey after every completed move to another bearer.
    pub on_transport_change: bool,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            rekey_after: Duration::from_secs(120),
            rekey_after_packets: 1 << 48,
            key_max_age: Duration::from_secs(180),
            grace: Duration::from_secs(5),
            min_rekey_interval: Duration::from_secs(10),
            on_transport_change: true,
        }
    }
}

/// An ephemeral X25519 key pair; the secret is zeroized on drop.
pub struct Ephemeral {
    secret: Zeroizing<[u8; 32]>,
    pub public: [u8; 32],
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral").finish_non_exhaustive()
    }
}

impl Ephemeral {
    /// A key pair from the core's seeded RNG.
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Self { secret, public }
    }

    /// The shared secret with `peer`; `None` for a low-order point (all-zero output).
    pub fn shared(&self, peer: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let s = Zeroizing::new(MontgomeryPoint(*peer).mul_clamped(*self.secret).to_bytes());
        (*s != [0u8; 32]).then_some(s)
    }
}

/// The initiator's rekey under way.
#[derive(Debug)]
pub struct Pending {
    pub epoch: u32,
    pub ephemeral: Ephemeral,
    pub trigger: RekeyTrigger,
    pub started: Instant,
    pub next_retry: Instant,
    pub tries: u32,
}

/// Retransmissions of a RekeyInit before giving up.
pub const MAX_TRIES: u32 = 5;
/// Spacing of RekeyInit retransmissions.
pub const RETRY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn both_sides_compute_the_same_secret_and_low_order_points_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (a, b) = (Ephemeral::generate(&mut rng), Ephemeral::generate(&mut rng));
        assert_eq!(*a.shared(&b.public).unwrap(), *b.shared(&a.public).unwrap());
        assert!(a.shared(&[0u8; 32]).is_none());
        assert!(!format!("{a:?}").contains(&format!("{:?}", &a.secret[..4])));
    }
}
