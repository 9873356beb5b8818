//! Keys as written in node configs: base64 of 32 bytes.
//!
//! The rule enforced here: a public key is accepted only if it is a valid, non-weak Ed25519
//! point, and a preshared key never appears in `Debug` output or in an error message.

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeSliceError, Engine as _};
use ed25519_dalek::VerifyingKey;

use crate::policy::error::{ConfigError, Origin};

const PUBLIC_KEY_RULE: &str =
    "must be the base64 of a 32-byte Ed25519 public key, as printed by `jvpn keygen` or `jvpn pubkey`";

/// An optional symmetric key mixed into the handshake (Noise `psk2`).
///
/// `Debug` prints `PresharedKey(<redacted>)`; the bytes are overwritten with zeros on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PresharedKey(bytes)
    }

    /// The key bytes. Do not log them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The base64 form, as written in a config file.
    pub(crate) fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl std::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keep the stores from being optimised away as dead writes.
        std::hint::black_box(&mut self.0);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// The base64 form of a public key, as written in a config file.
pub fn public_key_to_base64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Parses a base64 Ed25519 public key at `key` (a key path) in file `o`.
pub(crate) fn parse_public_key(
    o: Origin,
    key: &str,
    text: &str,
) -> Result<VerifyingKey, ConfigError> {
    let bytes = decode32(text)
        .map_err(|why| o.invalid_str(key, text, format!("{PUBLIC_KEY_RULE} ({why})")))?;
    let public = VerifyingKey::from_bytes(&bytes).map_err(|_| {
        o.invalid_str(
            key,
            text,
            format!("{PUBLIC_KEY_RULE} (these bytes are not a point on the curve)"),
        )
    })?;
    if public.is_weak() {
        let why = "a weak, small-order point that anyone could claim";
        return Err(o.invalid_str(key, text, format!("{PUBLIC_KEY_RULE} (this is {why})")));
    }
    Ok(public)
}

/// Parses a base64 preshared key. The error never repeats the text, only its length.
pub(crate) fn parse_preshared_key(
    o: Origin,
    key: &str,
    text: &str,
) -> Result<PresharedKey, ConfigError> {
    match decode32(text) {
        Ok(bytes) => Ok(PresharedKey(bytes)),
        Err(why) => Err(o.invalid(
            key,
            format!("<redacted, {} characters>", text.chars().count()),
            format!("must be the base64 of 32 random bytes, e.g. from `head -c 32 /dev/urandom | base64` ({why})"),
        )),
    }
}

fn decode32(text: &str) -> Result<[u8; 32], String> {
    // Decoded into a stack buffer that is wiped afterwards, so no copy of a secret is left in
    // a freed heap allocation.
    let mut buf = [0u8; 48];
    let result = match STANDARD.decode_slice(text.trim(), &mut buf) {
        Ok(32) => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&buf[..32]);
            Ok(key)
        }
        Ok(n) => Err(format!("decodes to {n} bytes, not 32")),
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            Err("decodes to far more than 32 bytes".to_string())
        }
        Err(DecodeSliceError::DecodeError(_)) => Err("not valid base64".to_string()),
    };
    buf.fill(0);
    std::hint::black_box(&mut buf);
    result
}
