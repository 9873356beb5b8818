//! The Noise handshake (`Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, prologue `jvpn/v1`) that
//! creates a session. The laptop (initiator) knows the gateway's static key and proves its own
//! inside message 1; the gateway answers only initiations from configured peers. Message 1
//! carries a 12-byte wall-clock timestamp that must strictly increase per peer, so a captured
//! initiation cannot be replayed. The psk slot is all zeros when no preshared key is set.
//!
//! Randomness (ephemeral keys) comes from a seed the caller draws from the core's seeded RNG,
//! so a simulation replays exactly.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use zeroize::Zeroizing;

use super::keys::SessionRoot;
use super::wire::{self, RoutingTag, INIT_PAYLOAD_LEN};

const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"jvpn/v1";

/// A node's Noise static key pair (X25519, derived from its Ed25519 identity).
pub struct StaticKeys {
    pub private: Zeroizing<[u8; 32]>,
    pub public: [u8; 32],
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").finish_non_exhaustive()
    }
}

/// A wall-clock timestamp carried in the initiation (seconds and nanoseconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: u64,
    pub nanos: u32,
}

impl Timestamp {
    fn encode(self) -> [u8; INIT_PAYLOAD_LEN] {
        let mut b = [0u8; INIT_PAYLOAD_LEN];
        b[..8].copy_from_slice(&self.secs.to_le_bytes());
        b[8..].copy_from_slice(&self.nanos.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != INIT_PAYLOAD_LEN {
            return None;
        }
        let nanos = u32::from_le_bytes(b[8..12].try_into().ok()?);
        (nanos < 1_000_000_000).then_some(Self {
            secs: u64::from_le_bytes(b[..8].try_into().ok()?),
            nanos,
        })
    }
}

/// Why a handshake message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("failed to process noise message: {0}")]
    Noise(#[from] snow::Error),
    #[error("initiation payload is malformed")]
    BadPayload,
}

/// The laptop's half-finished handshake.
pub struct Initiator {
    state: HandshakeState,
    /// The tag the laptop chose for packets sent to it.
    pub local_tag: RoutingTag,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("local_tag", &self.local_tag)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake and writes the initiation into `out` (at least `wire::INIT_LEN`).
    pub fn start(
        local: &StaticKeys,
        remote_public: &[u8; 32],
        psk: &[u8; 32],
        seed: [u8; 32],
        now: Timestamp,
        local_tag: RoutingTag,
        out: &mut [u8],
    ) -> Result<(Self, usize), HandshakeError> {
        let mut state = builder(seed)
            .local_private_key(local.private.as_ref())?
            .remote_public_key(remote_public)?
            .psk(2, psk)?
            .build_initiator()?;
        wire::write_init_header(out, local_tag);
        let n = state.write_message(&now.encode(), &mut out[8..wire::INIT_LEN])?;
        debug_assert_eq!(8 + n, wire::INIT_LEN);
        Ok((Self { state, local_tag }, 8 + n))
    }

    /// Completes the handshake with the gateway's response.
    pub fn finish(mut self, noise: &[u8]) -> Result<SessionRoot, HandshakeError> {
        let mut payload = [0u8; 16];
        let n = self.state.read_message(noise, &mut payload)?;
        if n != 0 {
            return Err(HandshakeError::BadPayload);
        }
        Ok(root_of(&mut self.state))
    }
}

/// What the gateway learned from an initiation before deciding whether to answer.
pub struct Responder {
    state: HandshakeState,
    /// The initiator's static public key (X25519).
    pub remote_static: [u8; 32],
    /// The initiator's timestamp (must exceed the last accepted one for this peer).
    pub timestamp: Timestamp,
}

impl Responder {
    /// Reads an initiation's Noise message. No reply is produced here: the caller first checks
    /// that `remote_static` is a configured peer and that `timestamp` is fresh.
    pub fn read(local: &StaticKeys, seed: [u8; 32], noise: &[u8]) -> Result<Self, HandshakeError> {
        let mut state = builder(seed)
            .local_private_key(local.private.as_ref())?
            .build_responder()?;
        let mut payload = [0u8; INIT_PAYLOAD_LEN + 16];
        let n = state.read_message(noise, &mut payload)?;
        let timestamp = Timestamp::decode(&payload[..n]).ok_or(HandshakeError::BadPayload)?;
        let remote_static = state
            .get_remote_static()
            .and_then(|s| s.try_into().ok())
            .ok_or(HandshakeError::BadPayload)?;
        Ok(Self {
            state,
            remote_static,
            timestamp,
        })
    }

    /// Accepts the initiation: writes the response into `out` (at least `wire::RESP_LEN`)
    /// and returns the session root.
    pub fn accept(
        mut self,
        psk: &[u8; 32],
        local_tag: RoutingTag,
        remote_tag: RoutingTag,
        out: &mut [u8],
    ) -> Result<(SessionRoot, usize), HandshakeError> {
        self.state.set_psk(2, psk)?;
        wire::write_resp_header(out, local_tag, remote_tag);
        let n = self
            .state
            .write_message(&[], &mut out[12..wire::RESP_LEN])?;
        Ok((root_of(&mut self.state), 12 + n))
    }
}

fn root_of(state: &mut HandshakeState) -> SessionRoot {
    let (a, b) = state.dangerously_get_raw_split();
    let (a, b) = (Zeroizing::new(a), Zeroizing::new(b));
    SessionRoot::new(state.get_handshake_hash(), (&a, &b))
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    let params = PATTERN
        .parse()
        .expect("the pattern string is a valid constant");
    snow::Builder::with_resolver(params, Box::new(SeededResolver::new(seed)))
        .prologue(PROLOGUE)
        .expect("the prologue is set once")
}

/// ring for the cipher, snow's defaults for X25519 and BLAKE2s, and our seeded RNG.
struct SeededResolver {
    seed: [u8; 32],
    inner: FallbackResolver,
}

impl SeededResolver {
    fn new(seed: [u8; 32]) -> Self {
        Self {
            seed,
            inner: FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)),
        }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        self.inner.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.inner.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.inner.resolve_cipher(choice)
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn keys(seed: u8) -> StaticKeys {
        let id = Identity::from_seed(&[seed; 32]);
        StaticKeys {
            private: id.x25519_private(),
            public: id.public().x25519(),
        }
    }

    fn run(psk_i: [u8; 32], psk_r: [u8; 32]) -> Result<(SessionRoot, SessionRoot), HandshakeError> {
        let (laptop, gateway) = (keys(1), keys(2));
        let mut init = [0u8; wire::INIT_LEN];
        let ts = Timestamp { secs: 10, nanos: 5 };
        let (i, n) = Initiator::start(
            &laptop,
            &gateway.public,
            &psk_i,
            [3; 32],
            ts,
            RoutingTag(7),
            &mut init,
        )?;
        assert_eq!(n, wire::INIT_LEN);
        let r = Responder::read(&gateway, [4; 32], &init[8..])?;
        assert_eq!(r.remote_static, laptop.public);
        assert_eq!(r.timestamp, ts);
        let mut resp = [0u8; wire::RESP_LEN];
        let (rr, n) = r.accept(&psk_r, RoutingTag(8), RoutingTag(7), &mut resp)?;
        assert_eq!(n, wire::RESP_LEN);
        let ir = i.finish(&resp[12..])?;
        Ok((ir, rr))
    }

    #[test]
    fn both_sides_agree_on_the_session_id() {
        let (a, b) = run([0; 32], [0; 32]).unwrap();
        assert_eq!(a.session_id(), b.session_id());
    }

    #[test]
    fn fixed_seeds_give_a_fixed_session_id() {
        let (a, _) = run([0; 32], [0; 32]).unwrap();
        let (c, _) = run([0; 32], [0; 32]).unwrap();
        assert_eq!(a.session_id(), c.session_id());
    }

    #[test]
    fn psk_mismatch_fails() {
        assert!(run([1; 32], [2; 32]).is_err());
    }

    #[test]
    fn initiation_to_the_wrong_gateway_fails() {
        let mut init = [0u8; wire::INIT_LEN];
        let (_, _) = Initiator::start(
            &keys(1),
            &keys(2).public,
            &[0; 32],
            [3; 32],
            Timestamp::default(),
            RoutingTag(1),
            &mut init,
        )
        .unwrap();
        assert!(Responder::read(&keys(9), [4; 32], &init[8..]).is_err());
    }
}
