//! The audit file and its writer thread.
//!
//! A file is one node's chain, appended one JSON line per record with a single `write` (and
//! `fdatasync`), so a crash leaves at most a torn last line that `jvpn audit verify` names. All
//! signing, hashing and writing happens on a dedicated thread fed through a channel: the data
//! path only hands over a draft and never waits. A failure to record is counted and logged; it
//! never touches the session.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use ed25519_dalek::SigningKey;

use super::record::{
    PathEnd, RebindRecord, SignedRebind, SignedWitness, WitnessRecord, FORMAT_VERSION,
};
use crate::proto::audit::{RebindDraft, ReceivedRecord};
use crate::proto::SessionId;

/// Bytes read from the end of an existing file to find its last record.
const TAIL: u64 = 16 * 1024;

/// Why an audit file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("audit file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("audit file {path}: its last line is not a jvpn audit record ({problem}); move the file aside or repair it (`jvpn audit verify` names the bad line)")]
    Unreadable { path: PathBuf, problem: String },
    #[error("audit file {path} is another node's chain (signed by {found}, this node is {ours}); give each node its own file")]
    OtherSigner {
        path: PathBuf,
        found: String,
        ours: String,
    },
}

/// Counters of the audit trail, shared with the node for `status` and logs.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records appended to the file.
    pub appended: AtomicU64,
    /// Records that could not be signed or written (the session went on).
    pub failed: AtomicU64,
    /// Records from a laptop the gateway refused (bad signature, wrong signer or session).
    pub rejected: AtomicU64,
}

/// An open audit file: the chain's position and the key that signs its lines.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    key: SigningKey,
    next_seq: u64,
    prev: [u8; 32],
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the file and finds the end of its chain.
    pub fn open(path: &Path, key: SigningKey) -> Result<Self, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = crate::sys::open_append_nofollow(path, true, 0).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let mut tail = Vec::new();
        // Only a regular file has a chain to continue (a device such as /dev/null has none,
        // and reading /dev/full or /dev/zero would never end).
        if meta.is_file() {
            file.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL)))
                .map_err(io_err)?;
            file.read_to_end(&mut tail).map_err(io_err)?;
        }
        let text = String::from_utf8_lossy(&tail);
        let mut log = Self {
            path: path.to_owned(),
            file,
            key,
            next_seq: 0,
            prev: [0; 32],
        };
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            let (seq, hash, signer) = last_link(last).map_err(|problem| OpenError::Unreadable {
                path: path.to_owned(),
                problem,
            })?;
            let ours = log.key.verifying_key().to_bytes();
            if signer != ours {
                return Err(OpenError::OtherSigner {
                    path: path.to_owned(),
                    found: super::record::b64(&signer),
                    ours: super::record::b64(&ours),
                });
            }
            log.next_seq = seq + 1;
            log.prev = hash;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `seq` the next line gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Signs a completed re-anchor as this node's record and appends it.
    pub fn append_rebind(
        &mut self,
        draft: &RebindDraft,
        locals: [String; 2],
    ) -> Result<SignedRebind, String> {
        let [old_local, new_local] = locals;
        let class = |c: Option<crate::policy::BearerClass>| {
            c.map_or_else(|| "unknown".to_owned(), |c| c.as_str().to_owned())
        };
        let signed = RebindRecord {
            version: FORMAT_VERSION,
            seq: self.next_seq,
            prev: self.prev,
            session_id: draft.session_id.0,
            reason: draft.reason.to_owned(),
            old_path: PathEnd {
                bearer: class(draft.old.class),
                iface: draft.old.iface.clone(),
                local: old_local,
            },
            new_path: PathEnd {
                bearer: class(draft.new.class),
                iface: draft.new.iface.clone(),
                local: new_local,
            },
            epoch: draft.epoch,
            last_seq: draft.last_seq,
            resume_seq: draft.resume_seq,
            signed_at_ms: draft.at_ms,
            signer: self.key.verifying_key().to_bytes(),
        }
        .sign(&self.key)
        .map_err(|e| e.to_string())?;
        self.append(&signed.to_json(), signed.hash())?;
        Ok(signed)
    }

    /// Verifies a record a laptop sent (it must be signed by `expected` for `session_id`) and
    /// appends this gateway's witness of it.
    pub fn append_witness(
        &mut self,
        wire: &[u8],
        expected: &[u8; 32],
        session_id: SessionId,
        from: SocketAddr,
        at_ms: u64,
    ) -> Result<SignedWitness, Rejection> {
        let record =
            SignedRebind::from_wire(wire).map_err(|e| Rejection::Refused(e.to_string()))?;
        if &record.record.signer != expected {
            return Err(Rejection::Refused(
                "signed by another key than the session's peer".into(),
            ));
        }
        if record.record.session_id != session_id.0 {
            return Err(Rejection::Refused("names another session".into()));
        }
        if !record.signature_ok() {
            return Err(Rejection::Refused("signature does not verify".into()));
        }
        let witness = WitnessRecord {
            version: FORMAT_VERSION,
            seq: self.next_seq,
            prev: self.prev,
            received_at_ms: at_ms,
            observed_from: from.to_string(),
            witness: self.key.verifying_key().to_bytes(),
            record,
        }
        .sign(&self.key)
        .map_err(|e| Rejection::Failed(e.to_string()))?;
        self.append(&witness.to_json(), witness.hash())
            .map_err(Rejection::Failed)?;
        Ok(witness)
    }

    fn append(&mut self, line: &serde_json::Value, hash: [u8; 32]) -> Result<(), String> {
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot append to {}: {e}", self.path.display()))?;
        self.next_seq += 1;
        self.prev = hash;
        Ok(())
    }
}

/// Why a gateway did not witness a received record.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The record is not acceptable (counted as rejected).
    Refused(String),
    /// It was, but could not be recorded (counted as failed).
    Failed(String),
}

/// The chain link of a line: its seq, its hash and the chain signer.
fn last_link(line: &str) -> Result<(u64, [u8; 32], [u8; 32]), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some(super::record::REBIND_TYPE) => {
            let (r, written) = SignedRebind::from_json(&v).map_err(|e| e.to_string())?;
            if r.hash() != written {
                return Err("its hash does not match its fields".into());
            }
            Ok((r.record.seq, written, r.record.signer))
        }
        Some(super::record::WITNESS_TYPE) => {
            let (w, written, _) = SignedWitness::from_json(&v).map_err(|e| e.to_string())?;
            if w.hash() != written {
                return Err("its hash does not match its fields".into());
            }
            Ok((w.witness.seq, written, w.witness.witness))
        }
        _ => Err("unknown record type".into()),
    }
}

/// Work for the writer thread.
pub enum Job {
    /// Sign and append this node's record of a completed re-anchor; `locals` are the local
    /// socket addresses of the old and new path.
    Rebind {
        draft: RebindDraft,
        locals: [String; 2],
    },
    /// Verify and witness a laptop's record (gateway).
    Witness { record: ReceivedRecord, at_ms: u64 },
}

/// The writer thread's handle: jobs go in, signed records (to send to the gateway) come out.
pub struct AuditWorker {
    jobs: mpsc::Sender<Job>,
    /// Records this node signed: (session, wire form).
    pub signed: tokio::sync::mpsc::UnboundedReceiver<(SessionId, Vec<u8>)>,
    pub stats: Arc<AuditStats>,
}

impl AuditWorker {
    /// Starts the thread. `peer_keys[i]` is the Ed25519 key of the gateway's peer `i` (empty
    /// on a laptop).
    pub fn spawn(mut log: AuditLog, peer_keys: Vec<[u8; 32]>) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (signed_tx, signed) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(AuditStats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("jvpn-audit".into())
            .spawn(move || {
                for job in rx {
                    run_job(&mut log, &peer_keys, &st, &signed_tx, job);
                }
            })?;
        Ok(Self {
            jobs,
            signed,
            stats,
        })
    }

    /// Hands a job to the thread; never blocks.
    pub fn submit(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn run_job(
    log: &mut AuditLog,
    peer_keys: &[[u8; 32]],
    stats: &AuditStats,
    signed_tx: &tokio::sync::mpsc::UnboundedSender<(SessionId, Vec<u8>)>,
    job: Job,
) {
    match job {
        Job::Rebind { draft, locals } => match log.append_rebind(&draft, locals) {
            Ok(signed) => {
                stats.appended.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session_id = %draft.session_id, seq = signed.record.seq, reason = draft.reason, "transport.rebind recorded");
                let _ = signed_tx.send((draft.session_id, signed.to_wire()));
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session_id = %draft.session_id, error = %e, "could not record a transport.rebind (the session is not affected)");
            }
        },
        Job::Witness { record, at_ms } => {
            let Some(key) = peer_keys.get(record.peer) else {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match log.append_witness(&record.bytes, key, record.session_id, record.from, at_ms) {
                Ok(w) => {
                    stats.appended.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(session_id = %record.session_id, seq = w.witness.seq, laptop_seq = w.witness.record.record.seq, "transport.rebind witnessed");
                }
                Err(Rejection::Refused(why)) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session_id = %record.session_id, reason = %why, "refused a transport.rebind record from the laptop");
                }
                Err(Rejection::Failed(e)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session_id = %record.session_id, error = %e, "could not record a transport.rebind witness (the session is not affected)");
                }
            }
        }
    }
}
