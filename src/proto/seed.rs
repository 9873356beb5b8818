//! The seed of a core's random stream (H1). Every handshake and rekey ephemeral key, every
//! handshake routing tag and every path-challenge token comes from the ChaCha20 stream this seed
//! starts, so it carries full entropy: 32 bytes, drawn from the OS by the node in production.
//! A seed made from a `u64` exists for tests and the simulation only, where a failing run must
//! replay from the number it printed.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// 32 bytes that start a core's ChaCha20 stream. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Seed([u8; 32]);

impl Seed {
    /// A seed from 32 bytes the caller drew from a full-entropy source.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A deterministic seed for tests and simulation: `n` in the first 8 bytes, zeros after.
    /// Never for production: it has at most 64 bits of entropy.
    pub fn for_tests(n: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        Self(bytes)
    }

    /// The random stream this seed starts.
    pub(crate) fn rng(&self) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(self.0)
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}
