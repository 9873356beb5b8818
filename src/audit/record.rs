//! Audit records: the signed `transport.rebind` record a moving node makes for each completed
//! re-anchor, and the `transport.rebind.witness` line a gateway appends when it has verified
//! such a record from a session's laptop.
//!
//! What is signed and hashed is one canonical byte string per line kind (PROTOCOL.md §14):
//! a domain string, then fixed-width little-endian integers, fixed-size byte arrays and
//! length-prefixed (u16) UTF-8 strings, in a fixed order. The JSON line is a readable copy of
//! exactly those fields plus the signature and the hash; a verifier rebuilds the canonical bytes
//! from the JSON, so a JSON line that differs in any signed field fails.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{json, Map, Value};

/// The audit format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

const REBIND_DOMAIN: &[u8] = b"jvpn/v1 transport.rebind\0";
const WITNESS_DOMAIN: &[u8] = b"jvpn/v1 transport.rebind.witness\0";
const HASH_DOMAIN: &[u8] = b"jvpn/v1 audit hash\0";

/// `type` of a laptop's own record.
pub const REBIND_TYPE: &str = "transport.rebind";
/// `type` of a gateway's witness line.
pub const WITNESS_TYPE: &str = "transport.rebind.witness";

/// Longest string field accepted (interface names ≤ 15 bytes, reasons ≤ 32, addresses ≤ 47).
const MAX_STR: usize = 64;

/// One end of a re-anchor as the moving node saw it. `bearer` is the outward-visible class;
/// `iface` and `local` are the finer detail that stays in the audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathEnd {
    pub bearer: String,
    pub iface: String,
    pub local: String,
}

/// A `transport.rebind` record: who moved, why, between which bearers, at which point in the
/// packet sequence, when, and where it sits in the signer's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebindRecord {
    pub version: u8,
    /// Position in the signer's chain, from 0.
    pub seq: u64,
    /// Hash of the previous record of the chain; zero for the first.
    pub prev: [u8; 32],
    pub session_id: [u8; 16],
    pub reason: String,
    pub old_path: PathEnd,
    pub new_path: PathEnd,
    /// Key epoch of the two counters below.
    pub epoch: u32,
    /// The last data counter sent on the old path.
    pub last_seq: u64,
    /// The first data counter sent on the new path.
    pub resume_seq: u64,
    pub signed_at_ms: u64,
    pub signer: [u8; 32],
}

/// A record with its signature (and so its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRebind {
    pub record: RebindRecord,
    pub sig: [u8; 64],
}

/// A gateway's witness of a verified record from a session's laptop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessRecord {
    pub version: u8,
    pub seq: u64,
    pub prev: [u8; 32],
    pub received_at_ms: u64,
    /// The laptop's address as the gateway saw it when the record arrived.
    pub observed_from: String,
    pub witness: [u8; 32],
    pub record: SignedRebind,
}

/// A witness line with the gateway's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedWitness {
    pub witness: WitnessRecord,
    pub sig: [u8; 64],
}

/// Why bytes or a JSON object are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u64),
    #[error("field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("field `{0}` is not valid: {1}")]
    Invalid(&'static str, String),
    #[error("the encoded record is truncated or has trailing bytes")]
    Length,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, s: &str) {
        // Callers bound every string to MAX_STR bytes.
        let s = &s.as_bytes()[..s.len().min(MAX_STR)];
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Length);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn str(&mut self, field: &'static str) -> Result<String, FormatError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        if n > MAX_STR {
            return Err(FormatError::Invalid(field, format!("{n} bytes long")));
        }
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| FormatError::Invalid(field, "not UTF-8".into()))
    }
}

fn bounded(field: &'static str, s: &str) -> Result<(), FormatError> {
    if s.len() > MAX_STR {
        return Err(FormatError::Invalid(
            field,
            format!("{} bytes long", s.len()),
        ));
    }
    Ok(())
}

fn hash(canonical: &[u8], sig: &[u8; 64]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(HASH_DOMAIN);
    ctx.update(canonical);
    ctx.update(sig);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn verify(signer: &[u8; 32], canonical: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(signer)
        .is_ok_and(|k| k.verify(canonical, &Signature::from_bytes(sig)).is_ok())
}

impl RebindRecord {
    /// The bytes that are signed.
    pub fn canonical(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256));
        w.bytes(REBIND_DOMAIN);
        w.u8(self.version);
        w.u64(self.seq);
        w.bytes(&self.prev);
        w.bytes(&self.session_id);
        w.str(&self.reason);
        for end in [&self.old_path, &self.new_path] {
            w.str(&end.bearer);
            w.str(&end.iface);
            w.str(&end.local);
        }
        w.u32(self.epoch);
        w.u64(self.last_seq);
        w.u64(self.resume_seq);
        w.u64(self.signed_at_ms);
        w.bytes(&self.signer);
        w.0
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.version != FORMAT_VERSION {
            return Err(FormatError::Version(self.version.into()));
        }
        bounded("reason", &self.reason)?;
        for (end, names) in [
            (
                &self.old_path,
                ["old_path.bearer", "old_path.iface", "old_path.local"],
            ),
            (
                &self.new_path,
                ["new_path.bearer", "new_path.iface", "new_path.local"],
            ),
        ] {
            bounded(names[0], &end.bearer)?;
            bounded(names[1], &end.iface)?;
            bounded(names[2], &end.local)?;
        }
        Ok(())
    }

    /// Signs with the signer's key (which must be `self.signer`'s).
    pub fn sign(self, key: &SigningKey) -> Result<SignedRebind, FormatError> {
        self.check()?;
        let sig = key.sign(&self.canonical()).to_bytes();
        Ok(SignedRebind { record: self, sig })
    }

    fn decode_canonical(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        if r.take(REBIND_DOMAIN.len())? != REBIND_DOMAIN {
            return Err(FormatError::Invalid(
                "type",
                "not a transport.rebind record".into(),
            ));
        }
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(FormatError::Version(version.into()));
        }
        let seq = r.u64()?;
        let prev = r.array()?;
        let session_id = r.array()?;
        let reason = r.str("reason")?;
        let mut ends = [PathEnd::default(), PathEnd::default()];
        for e in &mut ends {
            e.bearer = r.str("bearer")?;
            e.iface = r.str("iface")?;
            e.local = r.str("local")?;
        }
        let [old_path, new_path] = ends;
        Ok(Self {
            version,
            seq,
            prev,
            session_id,
            reason,
            old_path,
            new_path,
            epoch: r.u32()?,
            last_seq: r.u64()?,
            resume_seq: r.u64()?,
            signed_at_ms: r.u64()?,
            signer: r.array()?,
        })
    }
}

impl SignedRebind {
    /// Hash of the signed record: what the next record's `prev` names.
    pub fn hash(&self) -> [u8; 32] {
        hash(&self.record.canonical(), &self.sig)
    }

    /// Whether the signature verifies under the record's own `signer`.
    pub fn signature_ok(&self) -> bool {
        verify(&self.record.signer, &self.record.canonical(), &self.sig)
    }

    /// The form sent to the gateway in a control message: canonical bytes ‖ signature.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = self.record.canonical();
        v.extend_from_slice(&self.sig);
        v
    }

    /// Parses the wire form (does not verify the signature).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader(bytes);
        let record = RebindRecord::decode_canonical(&mut r)?;
        record.check()?;
        let sig = r.array()?;
        if !r.0.is_empty() {
            return Err(FormatError::Length);
        }
        Ok(Self { record, sig })
    }

    /// The JSON object (without a trailing newline).
    pub fn to_json(&self) -> Value {
        let r = &self.record;
        let end = |e: &PathEnd| json!({"bearer": e.bearer, "iface": e.iface, "local": e.local});
        json!({
            "v": r.version,
            "type": REBIND_TYPE,
            "seq": r.seq,
            "prev": hex(&r.prev),
            "session_id": hex(&r.session_id),
            "reason": r.reason,
            "old_path": end(&r.old_path),
            "new_path": end(&r.new_path),
            "media_window": {"epoch": r.epoch, "last_seq": r.last_seq, "resume_seq": r.resume_seq},
            "auth": {
                "signer": b64(&r.signer),
                "signed_at": rfc3339_ms(r.signed_at_ms),
                "signed_at_ms": r.signed_at_ms,
                "sig": b64(&self.sig),
            },
            "hash": hex(&self.hash()),
        })
    }

    /// Rebuilds a record from its JSON object. Returns the record and the `hash` field as
    /// written (the caller compares it with the recomputed one).
    pub fn from_json(v: &Value) -> Result<(Self, [u8; 32]), FormatError> {
        let o = v.as_object().ok_or(FormatError::Field("(object)"))?;
        let version = version_of(o)?;
        if str_field(o, "type")? != REBIND_TYPE {
            return Err(FormatError::Invalid(
                "type",
                "expected transport.rebind".into(),
            ));
        }
        let window = object_at(o, "media_window")?;
        let auth = object_at(o, "auth")?;
        let signed_at_ms = u64_at(auth, "signed_at_ms", "auth.signed_at_ms")?;
        // The readable time is part of the line, so it must agree with the signed one.
        if str_at(auth, "signed_at", "auth.signed_at")? != rfc3339_ms(signed_at_ms) {
            return Err(FormatError::Invalid(
                "auth.signed_at",
                "does not match auth.signed_at_ms".into(),
            ));
        }
        let record = RebindRecord {
            version,
            seq: u64_at(o, "seq", "seq")?,
            prev: hex_at(o, "prev", "prev")?,
            session_id: hex_at(o, "session_id", "session_id")?,
            reason: str_at(o, "reason", "reason")?,
            old_path: path_end_at(
                o,
                "old_path",
                ["old_path.bearer", "old_path.iface", "old_path.local"],
            )?,
            new_path: path_end_at(
                o,
                "new_path",
                ["new_path.bearer", "new_path.iface", "new_path.local"],
            )?,
            epoch: u32::try_from(u64_at(window, "epoch", "media_window.epoch")?)
                .map_err(|_| FormatError::Invalid("media_window.epoch", "too large".into()))?,
            last_seq: u64_at(window, "last_seq", "media_window.last_seq")?,
            resume_seq: u64_at(window, "resume_seq", "media_window.resume_seq")?,
            signed_at_ms,
            signer: b64_at(auth, "signer", "auth.signer")?,
        };
        record.check()?;
        let sig = b64_at(auth, "sig", "auth.sig")?;
        let written = hex_at(o, "hash", "hash")?;
        Ok((Self { record, sig }, written))
    }
}

impl WitnessRecord {
    /// The bytes the gateway signs.
    pub fn canonical(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(160));
        w.bytes(WITNESS_DOMAIN);
        w.u8(self.version);
        w.u64(self.seq);
        w.bytes(&self.prev);
        w.u64(self.received_at_ms);
        w.str(&self.observed_from);
        w.bytes(&self.witness);
        w.bytes(&self.record.hash());
        w.0
    }

    /// Signs with the gateway's key.
    pub fn sign(self, key: &SigningKey) -> Result<SignedWitness, FormatError> {
        if self.version != FORMAT_VERSION {
            return Err(FormatError::Version(self.version.into()));
        }
        bounded("observed_from", &self.observed_from)?;
        let sig = key.sign(&self.canonical()).to_bytes();
        Ok(SignedWitness { witness: self, sig })
    }
}

impl SignedWitness {
    pub fn hash(&self) -> [u8; 32] {
        hash(&self.witness.canonical(), &self.sig)
    }

    pub fn signature_ok(&self) -> bool {
        verify(&self.witness.witness, &self.witness.canonical(), &self.sig)
    }

    pub fn to_json(&self) -> Value {
        let w = &self.witness;
        json!({
            "v": w.version,
            "type": WITNESS_TYPE,
            "seq": w.seq,
            "prev": hex(&w.prev),
            "received_at": rfc3339_ms(w.received_at_ms),
            "received_at_ms": w.received_at_ms,
            "observed_from": w.observed_from,
            "witness": b64(&w.witness),
            "record": w.record.to_json(),
            "sig": b64(&self.sig),
            "hash": hex(&self.hash()),
        })
    }

    /// Rebuilds a witness line; returns it, its written `hash`, and the embedded record's
    /// written `hash`.
    pub fn from_json(v: &Value) -> Result<(Self, [u8; 32], [u8; 32]), FormatError> {
        let o = v.as_object().ok_or(FormatError::Field("(object)"))?;
        let version = version_of(o)?;
        if str_field(o, "type")? != WITNESS_TYPE {
            return Err(FormatError::Invalid(
                "type",
                "expected transport.rebind.witness".into(),
            ));
        }
        let received_at_ms = u64_at(o, "received_at_ms", "received_at_ms")?;
        if str_at(o, "received_at", "received_at")? != rfc3339_ms(received_at_ms) {
            return Err(FormatError::Invalid(
                "received_at",
                "does not match received_at_ms".into(),
            ));
        }
        let (record, record_hash) =
            SignedRebind::from_json(o.get("record").ok_or(FormatError::Field("record"))?)?;
        let witness = WitnessRecord {
            version,
            seq: u64_at(o, "seq", "seq")?,
            prev: hex_at(o, "prev", "prev")?,
            received_at_ms,
            observed_from: str_at(o, "observed_from", "observed_from")?,
            witness: b64_at(o, "witness", "witness")?,
            record,
        };
        bounded("observed_from", &witness.observed_from)?;
        let sig = b64_at(o, "sig", "sig")?;
        let written = hex_at(o, "hash", "hash")?;
        Ok((Self { witness, sig }, written, record_hash))
    }
}

/// The `v` of a JSON line (checked first: a newer format is reported as such).
pub fn version_of(o: &Map<String, Value>) -> Result<u8, FormatError> {
    let v = o
        .get("v")
        .and_then(Value::as_u64)
        .ok_or(FormatError::Field("v"))?;
    if v != u64::from(FORMAT_VERSION) {
        return Err(FormatError::Version(v));
    }
    Ok(FORMAT_VERSION)
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, FormatError> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or(FormatError::Field(key))
}

/// The JSON object under `name`.
fn object_at<'a>(
    o: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a Map<String, Value>, FormatError> {
    o.get(name)
        .and_then(Value::as_object)
        .ok_or(FormatError::Field(name))
}

/// The path end under `name`; `keys` name its three fields in errors.
fn path_end_at(
    o: &Map<String, Value>,
    name: &'static str,
    keys: [&'static str; 3],
) -> Result<PathEnd, FormatError> {
    let e = object_at(o, name)?;
    Ok(PathEnd {
        bearer: str_at(e, "bearer", keys[0])?,
        iface: str_at(e, "iface", keys[1])?,
        local: str_at(e, "local", keys[2])?,
    })
}

fn str_at(o: &Map<String, Value>, key: &str, name: &'static str) -> Result<String, FormatError> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(FormatError::Field(name))
}

fn u64_at(o: &Map<String, Value>, key: &str, name: &'static str) -> Result<u64, FormatError> {
    o.get(key)
        .and_then(Value::as_u64)
        .ok_or(FormatError::Field(name))
}

fn hex_at<const N: usize>(
    o: &Map<String, Value>,
    key: &str,
    name: &'static str,
) -> Result<[u8; N], FormatError> {
    let s = str_at(o, key, name)?;
    unhex(&s).ok_or_else(|| FormatError::Invalid(name, format!("expected {} hex digits", 2 * N)))
}

fn b64_at<const N: usize>(
    o: &Map<String, Value>,
    key: &str,
    name: &'static str,
) -> Result<[u8; N], FormatError> {
    use base64::Engine;
    let s = str_at(o, key, name)?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| FormatError::Invalid(name, format!("expected base64 of {N} bytes")))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Standard padded base64.
pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `2026-11-22T04:50:00.123Z` for milliseconds since the Unix epoch (UTC, proleptic
/// Gregorian; the civil-from-days algorithm of H. Hinnant).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn sample(seq: u64, prev: [u8; 32], k: &SigningKey) -> SignedRebind {
        RebindRecord {
            version: FORMAT_VERSION,
            seq,
            prev,
            session_id: [0x5a; 16],
            reason: "heartbeat_timeout".into(),
            old_path: PathEnd {
                bearer: "wifi".into(),
                iface: "wlan0".into(),
                local: "0.0.0.0:40000".into(),
            },
            new_path: PathEnd {
                bearer: "cellular".into(),
                iface: "wwan0".into(),
                local: "0.0.0.0:40001".into(),
            },
            epoch: 0,
            last_seq: 19_420,
            resume_seq: 19_421,
            signed_at_ms: 1_795_323_000_123,
            signer: k.verifying_key().to_bytes(),
        }
        .sign(k)
        .unwrap()
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let s = sample(0, [0; 32], &key(7));
        let c = s.record.canonical();
        // domain ‖ v ‖ seq ‖ prev ‖ sid ‖ 7 strings ‖ epoch ‖ 3 × u64 ‖ signer
        let strings = 2 + 17 + 6 * 2 + (4 + 5 + 13) + (8 + 5 + 13);
        assert_eq!(c.len(), 25 + 1 + 8 + 32 + 16 + strings + 4 + 24 + 32);
        assert_eq!(&c[..25], b"jvpn/v1 transport.rebind\0");
        assert_eq!(c[25], 1);
        assert_eq!(&c[26..34], &0u64.to_le_bytes());
        assert_eq!(&c[66..82], &[0x5a; 16]);
        assert_eq!(&c[82..84], &17u16.to_le_bytes());
        assert_eq!(&c[84..101], b"heartbeat_timeout");
    }

    #[test]
    fn signature_and_hash_vectors() {
        // Ed25519 is deterministic: these bytes are the reference a second implementation
        // must reproduce from the same key and fields.
        let s = sample(0, [0; 32], &key(7));
        assert!(s.signature_ok());
        assert_eq!(
            hex(&s.hash()),
            hex(&hash(&s.record.canonical(), &s.sig)),
            "hash covers canonical bytes and signature"
        );
        let mut other = s.clone();
        other.record.last_seq += 1;
        assert!(
            !other.signature_ok(),
            "an edited field breaks the signature"
        );
        assert_ne!(other.hash(), s.hash());
    }

    #[test]
    fn wire_and_json_round_trip() {
        let s = sample(3, [9; 32], &key(7));
        assert_eq!(SignedRebind::from_wire(&s.to_wire()).unwrap(), s);
        let (back, written) = SignedRebind::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(written, s.hash());
        let w = WitnessRecord {
            version: FORMAT_VERSION,
            seq: 0,
            prev: [0; 32],
            received_at_ms: 1_795_323_000_200,
            observed_from: "10.30.0.2:40001".into(),
            witness: key(9).verifying_key().to_bytes(),
            record: s.clone(),
        }
        .sign(&key(9))
        .unwrap();
        assert!(w.signature_ok());
        let (wb, wh, rh) = SignedWitness::from_json(&w.to_json()).unwrap();
        assert_eq!((wb, wh, rh), (w.clone(), w.hash(), s.hash()));
    }

    #[test]
    fn wire_rejects_truncation_trailing_bytes_and_other_versions() {
        let s = sample(0, [0; 32], &key(7));
        let wire = s.to_wire();
        for n in 0..wire.len() {
            assert!(
                SignedRebind::from_wire(&wire[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(SignedRebind::from_wire(&long), Err(FormatError::Length));
        let mut v2 = wire;
        v2[25] = 2;
        assert_eq!(SignedRebind::from_wire(&v2), Err(FormatError::Version(2)));
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_323_000_123), "2026-11-22T04:50:00.123Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
