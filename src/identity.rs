//! Node identity: one Ed25519 key per node.
//!
//! The Ed25519 key signs audit records; the Noise static X25519 key is *derived* from it (the
//! clamped SHA-512 scalar of the seed, and the birational map of the public point to Montgomery
//! form), so one file and one public key identify a node everywhere. See `docs/PROTOCOL.md`.
//!
//! File format: the text line `jvpn-identity-v1 <base64 32-byte seed>`; written with mode 0600
//! and never overwritten.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

const MAGIC: &str = "jvpn-identity-v1";

/// Errors reading or writing identity files.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("failed to create identity file {path}: {error}")]
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "failed to read identity file {path}: {error} (create one with `jvpn keygen --out FILE`)"
    )]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("identity file {path} is malformed: {why} (expected one line `{MAGIC} <base64 seed>`, as written by `jvpn keygen`)")]
    Malformed { path: PathBuf, why: &'static str },
    /// The file is readable by group or others (as OpenSSH refuses such a private key).
    #[error("{}", too_open_message(path, *mode))]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("invalid public key {value:?}: {why}")]
    BadPublicKey { value: String, why: &'static str },
}

/// The permission bits of an identity file that group or others may use, `None` when only its
/// owner may (or the file cannot be examined: reading it then names the problem).
pub fn too_open(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// OpenSSH's wording for a private key others can read.
pub fn too_open_message(path: &Path, mode: u32) -> String {
    format!(
        "permissions {mode:04o} for '{}' are too open: an identity file must be readable by its \
         owner only (chmod 600 {0})",
        path.display()
    )
}

/// A node's secret identity. Not `Clone`; zeroized on drop; `Debug` shows only the public key.
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// Creates an identity from 32 bytes of seed material.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Generates a new identity from the operating system's randomness.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Writes the identity to a new file with mode 0600; refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), IdentityError> {
        let create = |error| IdentityError::Create {
            path: path.to_owned(),
            error,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        let mut line = Zeroizing::new(format!("{MAGIC} {}\n", B64.encode(self.signing.to_bytes())));
        let res = file
            .write_all(line.as_bytes())
            .and_then(|_| file.sync_all());
        line.zeroize();
        res.map_err(create)
    }

    /// Reads an identity file written by [`Identity::write_new`].
    /// Refuses a file readable by group or others ([`IdentityError::TooOpen`]).
    pub fn read(path: &Path) -> Result<Self, IdentityError> {
        if let Some(mode) = too_open(path) {
            return Err(IdentityError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|error| IdentityError::Read {
                    path: path.to_owned(),
                    error,
                })?,
            );
        let malformed = |why| IdentityError::Malformed {
            path: path.to_owned(),
            why,
        };
        let mut parts = text.split_whitespace();
        if parts.next() != Some(MAGIC) {
            return Err(malformed("missing the jvpn-identity-v1 header"));
        }
        let encoded = parts.next().ok_or_else(|| malformed("missing the key"))?;
        if parts.next().is_some() {
            return Err(malformed("trailing data after the key"));
        }
        let bytes = Zeroizing::new(
            B64.decode(encoded)
                .map_err(|_| malformed("key is not base64"))?,
        );
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| malformed("key is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The Ed25519 signing key (for audit records).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The Noise static private key (X25519 scalar derived from the Ed25519 seed).
    pub fn x25519_private(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// A node's public identity (Ed25519), printed as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    /// Parses base64 of a 32-byte Ed25519 public key.
    pub fn from_base64(value: &str) -> Result<Self, IdentityError> {
        let bad = |why| IdentityError::BadPublicKey {
            value: value.to_owned(),
            why,
        };
        let bytes = B64.decode(value.trim()).map_err(|_| bad("not base64"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr)
            .map(PublicKey)
            .map_err(|_| bad("not a valid Ed25519 point"))
    }

    /// Base64 form, as in config files.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// The Noise static public key (X25519) this identity uses.
    pub fn x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(k: VerifyingKey) -> Self {
        Self(k)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_x25519_keys_agree() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        // X25519(a_priv, B_pub) == X25519(b_priv, A_pub) proves the derivation is consistent.
        let ab = x25519(&a.x25519_private(), &b.public().x25519());
        let ba = x25519(&b.x25519_private(), &a.public().x25519());
        assert_eq!(ab, ba);
        assert_ne!(ab, [0; 32]);
    }

    fn x25519(private: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
        let scalar = curve25519_dalek_scalar(private);
        (curve25519_dalek::MontgomeryPoint(*public) * scalar).to_bytes()
    }

    fn curve25519_dalek_scalar(b: &[u8; 32]) -> curve25519_dalek::Scalar {
        curve25519_dalek::Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(*b))
    }

    /// A fresh directory of this test and the (absent) key path in it.
    fn scratch_key_path(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("jvpn-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.key");
        (dir, path)
    }

    #[test]
    fn file_round_trip_and_no_overwrite() {
        let (dir, path) = scratch_key_path("round-trip");
        let id = Identity::generate();
        id.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Identity::read(&path).unwrap();
        assert_eq!(back.public(), id.public());
        assert!(matches!(
            Identity::generate().write_new(&path),
            Err(IdentityError::Create { .. })
        ));
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            Identity::read(&path),
            Err(IdentityError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_readable_by_others_is_refused_as_openssh_does() {
        let (dir, path) = scratch_key_path("open");
        Identity::generate().write_new(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::read(&path).expect_err("a 0644 key must be refused");
        let shown = format!("permissions 0644 for '{}' are too open", path.display());
        assert!(err.to_string().starts_with(&shown), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Identity::read(&path),
            Err(IdentityError::TooOpen { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Identity::read(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_does_not_leak_the_seed() {
        let id = Identity::from_seed(&[7; 32]);
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&B64.encode([7u8; 32])));
        assert!(dbg.contains(&id.public().to_base64()));
    }

    #[test]
    fn public_key_parse_errors() {
        assert!(PublicKey::from_base64("!!").is_err());
        assert!(PublicKey::from_base64(&B64.encode([0u8; 16])).is_err());
        let id = Identity::from_seed(&[3; 32]);
        assert_eq!(
            PublicKey::from_base64(&id.public().to_base64()).unwrap(),
            id.public()
        );
    }
}
