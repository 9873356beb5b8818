//! `jvpn audit verify`: checks every line of an audit file (hash, signature, signer, chain
//! link) and names the first bad record and what is wrong with it.
//!
//! A file is one node's chain: a laptop's file holds its own `transport.rebind` records, a
//! gateway's file its `transport.rebind.witness` lines (each embedding the laptop's signed
//! record). Every line is signed by the chain's signer; record `seq` n+1 follows record n and
//! names its hash in `prev`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::Value;

use super::record::{
    b64, hex, rfc3339_ms, version_of, FormatError, SignedRebind, SignedWitness, REBIND_TYPE,
    WITNESS_TYPE,
};

/// What is wrong with a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON, not an object, a missing field or a field of the wrong shape.
    Malformed(String),
    /// `v` is not a version this build reads.
    UnknownVersion(u64),
    /// The fields do not hash to the written `hash`: a field was edited.
    Edited,
    /// The signature does not verify over the fields.
    BadSignature,
    /// Signed by another key than the chain's.
    WrongSigner { expected: String, found: String },
    /// The record belongs after a record that comes later in the file.
    Reordered { follows_line: usize },
    /// Records between the previous one and this one are missing.
    Dropped { missing_from: u64, missing_to: u64 },
    /// Another record already follows the same predecessor.
    Forked { sibling_line: usize },
    /// `prev` names no record of the file, and no gap in `seq` explains it.
    BrokenLink,
    /// The embedded laptop record of a witness line is bad.
    Embedded(Box<Problem>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed(m) => write!(f, "malformed: {m}"),
            Problem::UnknownVersion(v) => write!(
                f,
                "unknown format version {v} (this build reads version {})",
                super::record::FORMAT_VERSION
            ),
            Problem::Edited => write!(
                f,
                "edited: its fields do not hash to its `hash` (a field was changed after signing)"
            ),
            Problem::BadSignature => {
                write!(f, "bad signature: the signature does not verify over its fields")
            }
            Problem::WrongSigner { expected, found } => {
                write!(f, "wrong signer: signed by {found}, the chain's signer is {expected}")
            }
            Problem::Reordered { follows_line } => write!(
                f,
                "reordered: it follows the record on line {follows_line}, which comes later in the file"
            ),
            Problem::Dropped {
                missing_from,
                missing_to,
            } => {
                if missing_from == missing_to {
                    write!(f, "dropped: record seq {missing_from} before it is missing")
                } else {
                    write!(
                        f,
                        "dropped: records seq {missing_from}..={missing_to} before it are missing"
                    )
                }
            }
            Problem::Forked { sibling_line } => write!(
                f,
                "forked: the record on line {sibling_line} already follows the same predecessor"
            ),
            Problem::BrokenLink => write!(
                f,
                "broken link: `prev` names no record of this file (the previous record was replaced or removed)"
            ),
            Problem::Embedded(p) => write!(f, "its embedded laptop record is bad: {p}"),
        }
    }
}

/// The first bad record of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainError {
    /// 1-based line number.
    pub line: usize,
    /// The record's `seq` when it could be read.
    pub seq: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(s) => write!(f, "line {} (record seq {s}): {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

/// What a good chain contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    /// The chain's signer (base64 Ed25519 public key); `None` for an empty file.
    pub signer: Option<String>,
    /// Whether the lines are a gateway's witness lines.
    pub witness: bool,
    pub sessions: BTreeSet<String>,
    /// Laptop signers of the records (for a witness file, one per laptop).
    pub movers: BTreeSet<String>,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    /// "old → new" bearer class transitions and how often each happened.
    pub transitions: BTreeMap<String, usize>,
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.witness {
            "gateway witness chain"
        } else {
            "transport.rebind chain"
        };
        writeln!(f, "good {kind}: {} records", self.records)?;
        if let Some(s) = &self.signer {
            writeln!(f, "signer: {s}")?;
        }
        if self.witness {
            writeln!(f, "laptops: {}", self.movers.len())?;
        }
        writeln!(f, "sessions: {}", self.sessions.len())?;
        if let (Some(a), Some(b)) = (self.first_ms, self.last_ms) {
            writeln!(
                f,
                "time span: {} .. {} ({:.3} s)",
                rfc3339_ms(a),
                rfc3339_ms(b),
                (b - a) as f64 / 1000.0
            )?;
        }
        let list = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "bearer transitions: {}", list(&self.transitions))?;
        write!(f, "reasons: {}", list(&self.reasons))
    }
}

/// One parsed line: its chain fields and the laptop record it carries.
struct Line {
    number: usize,
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    signer: [u8; 32],
    record: SignedRebind,
    at_ms: u64,
}

fn malformed(e: FormatError) -> Problem {
    match e {
        FormatError::Version(v) => Problem::UnknownVersion(v),
        other => Problem::Malformed(other.to_string()),
    }
}

/// Checks one laptop record: hash as written, then signature.
fn check_record(r: &SignedRebind, written: [u8; 32]) -> Result<(), Problem> {
    if r.hash() != written {
        return Err(Problem::Edited);
    }
    if !r.signature_ok() {
        return Err(Problem::BadSignature);
    }
    Ok(())
}

fn parse_line(number: usize, text: &str) -> Result<Line, ChainError> {
    let err = |seq, problem| ChainError {
        line: number,
        seq,
        problem,
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err(None, Problem::Malformed(format!("not JSON: {e}"))))?;
    let o = v
        .as_object()
        .ok_or_else(|| err(None, Problem::Malformed("not a JSON object".into())))?;
    let seq = o.get("seq").and_then(Value::as_u64);
    version_of(o).map_err(|e| err(seq, malformed(e)))?;
    match o.get("type").and_then(Value::as_str) {
        Some(REBIND_TYPE) => rebind_line(number, &v).map_err(|p| err(seq, p)),
        Some(WITNESS_TYPE) => witness_line(number, &v).map_err(|p| err(seq, p)),
        Some(other) => Err(err(
            seq,
            Problem::Malformed(format!("unknown record type `{other}`")),
        )),
        None => Err(err(
            seq,
            Problem::Malformed("field `type` is missing".into()),
        )),
    }
}

/// A laptop's own `transport.rebind` line, checked.
fn rebind_line(number: usize, v: &Value) -> Result<Line, Problem> {
    let (r, written) = SignedRebind::from_json(v).map_err(malformed)?;
    check_record(&r, written)?;
    Ok(Line {
        number,
        seq: r.record.seq,
        prev: r.record.prev,
        hash: written,
        signer: r.record.signer,
        at_ms: r.record.signed_at_ms,
        record: r,
    })
}

/// A gateway's witness line, checked, and the record it embeds.
fn witness_line(number: usize, v: &Value) -> Result<Line, Problem> {
    let (w, written, record_written) = SignedWitness::from_json(v).map_err(malformed)?;
    let embedded = |p| Problem::Embedded(Box::new(p));
    if w.hash() != written {
        // An edit inside the embedded record changes the witness hash too: name it.
        return Err(match check_record(&w.witness.record, record_written) {
            Err(p) => embedded(p),
            Ok(()) => Problem::Edited,
        });
    }
    if !w.signature_ok() {
        return Err(Problem::BadSignature);
    }
    check_record(&w.witness.record, record_written).map_err(embedded)?;
    Ok(Line {
        number,
        seq: w.witness.seq,
        prev: w.witness.prev,
        hash: written,
        signer: w.witness.witness,
        at_ms: w.witness.record.record.signed_at_ms,
        record: w.witness.record,
    })
}

/// Verifies a whole file's text. `expected_signer` pins the chain's signer (base64 Ed25519
/// public key); without it the first record's signer is the chain's.
pub fn verify_chain(text: &str, expected_signer: Option<&[u8; 32]>) -> Result<Summary, ChainError> {
    let (lines, first_error) = parse_lines(text);
    // Every hash in the file (up to the first unreadable line), to tell reordering from loss.
    let by_hash: HashMap<[u8; 32], usize> =
        lines.iter().enumerate().map(|(i, l)| (l.hash, i)).collect();
    let mut summary = Summary::default();
    let mut successor: HashMap<[u8; 32], usize> = HashMap::new();
    let mut chain_signer = expected_signer.copied();
    for (i, l) in lines.iter().enumerate() {
        let err = |problem| ChainError {
            line: l.number,
            seq: Some(l.seq),
            problem,
        };
        match chain_signer {
            Some(s) if s != l.signer => {
                return Err(err(Problem::WrongSigner {
                    expected: b64(&s),
                    found: b64(&l.signer),
                }))
            }
            Some(_) => {}
            None => chain_signer = Some(l.signer),
        }
        if let Some(sibling) = successor.get(&l.prev) {
            return Err(err(Problem::Forked {
                sibling_line: *sibling,
            }));
        }
        link_problem(&lines, i, &by_hash).map_or(Ok(()), |p| Err(err(p)))?;
        successor.insert(l.prev, l.number);
        summary.add(l);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.signer = chain_signer.map(|s| b64(&s));
    summary.witness = lines
        .first()
        .is_some_and(|l| l.signer != l.record.record.signer);
    Ok(summary)
}

/// The lines up to the first unreadable one, and that one's error.
fn parse_lines(text: &str) -> (Vec<Line>, Option<ChainError>) {
    let mut lines = Vec::new();
    for (i, t) in text.lines().enumerate() {
        if t.trim().is_empty() {
            continue;
        }
        match parse_line(i + 1, t) {
            Ok(l) => lines.push(l),
            Err(e) => return (lines, Some(e)),
        }
    }
    (lines, None)
}

/// What is wrong with the link from line `i` to the one before it, if anything: a line that
/// follows a later line was reordered, a gap in `seq` was dropped, anything else is broken.
fn link_problem(lines: &[Line], i: usize, by_hash: &HashMap<[u8; 32], usize>) -> Option<Problem> {
    let l = &lines[i];
    let linked = match i.checked_sub(1).map(|p| &lines[p]) {
        Some(p) => l.prev == p.hash && l.seq == p.seq + 1,
        None => l.prev == [0; 32] && l.seq == 0,
    };
    if linked {
        return None;
    }
    Some(match by_hash.get(&l.prev) {
        Some(&j) if j > i => Problem::Reordered {
            follows_line: lines[j].number,
        },
        _ => {
            let expected = i.checked_sub(1).map_or(0, |p| lines[p].seq + 1);
            if l.seq > expected {
                Problem::Dropped {
                    missing_from: expected,
                    missing_to: l.seq - 1,
                }
            } else {
                Problem::BrokenLink
            }
        }
    })
}

impl Summary {
    /// Counts one linked line.
    fn add(&mut self, l: &Line) {
        let r = &l.record.record;
        self.records += 1;
        self.sessions.insert(hex(&r.session_id));
        self.movers.insert(b64(&r.signer));
        self.first_ms = Some(self.first_ms.map_or(l.at_ms, |f| f.min(l.at_ms)));
        self.last_ms = Some(self.last_ms.map_or(l.at_ms, |f| f.max(l.at_ms)));
        *self
            .transitions
            .entry(format!("{} → {}", r.old_path.bearer, r.new_path.bearer))
            .or_default() += 1;
        *self.reasons.entry(r.reason.clone()).or_default() += 1;
    }
}
