//! Audit chain test vectors (E5): a good laptop chain, a good gateway witness chain, and one
//! file per kind of damage, kept in `tests/vectors/audit/`. The files are regenerated from fixed
//! keys and fields (Ed25519 signatures are deterministic), so the test also proves the committed
//! bytes are what this build writes: `JVPN_WRITE_VECTORS=1 cargo test --test audit_vectors`
//! rewrites them after an intended format change.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Command;

use ed25519_dalek::SigningKey;
use jvpn::audit::record::{b64, FORMAT_VERSION};
use jvpn::audit::{verify_chain, PathEnd, Problem, RebindRecord, SignedRebind, WitnessRecord};
use serde_json::Value;

const LAPTOP: [u8; 32] = [7; 32];
const GATEWAY: [u8; 32] = [9; 32];
const OTHER: [u8; 32] = [8; 32];
const T0: u64 = 1_795_323_000_000;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/audit")
}

fn key(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

fn end(bearer: &str, iface: &str, port: u16) -> PathEnd {
    PathEnd {
        bearer: bearer.into(),
        iface: iface.into(),
        local: format!("0.0.0.0:{port}"),
    }
}

/// Record `seq` of the laptop's chain, signed by `signer`.
fn record(seq: u64, prev: [u8; 32], signer: &SigningKey) -> SignedRebind {
    let moves = [
        ("transport_dead", ("wifi", "wlan0"), ("cellular", "wwan0")),
        (
            "preferred_bearer_available",
            ("cellular", "wwan0"),
            ("wifi", "wlan0"),
        ),
        (
            "heartbeat_timeout",
            ("wifi", "wlan0"),
            ("cellular", "wwan0"),
        ),
        (
            "moving_target",
            ("cellular", "wwan0"),
            ("cellular", "wwan0"),
        ),
        (
            "preferred_bearer_available",
            ("cellular", "wwan0"),
            ("wifi", "wlan0"),
        ),
    ];
    let (reason, (ob, oi), (nb, ni)) = moves[seq as usize % moves.len()];
    RebindRecord {
        version: FORMAT_VERSION,
        seq,
        prev,
        session_id: if seq < 3 { [0x11; 16] } else { [0x22; 16] },
        reason: reason.into(),
        old_path: end(ob, oi, 40_000 + seq as u16),
        new_path: end(nb, ni, 40_001 + seq as u16),
        epoch: (seq / 2) as u32,
        last_seq: 1000 * seq + 499,
        resume_seq: 1000 * seq + 500,
        signed_at_ms: T0 + 5_000 * seq,
        signer: signer.verifying_key().to_bytes(),
    }
    .sign(signer)
    .expect("fields within bounds")
}

fn chain(n: u64) -> Vec<SignedRebind> {
    let k = key(LAPTOP);
    let mut out: Vec<SignedRebind> = Vec::new();
    for seq in 0..n {
        let prev = out.last().map_or([0; 32], |r| r.hash());
        out.push(record(seq, prev, &k));
    }
    out
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|v| format!("{v}\n")).collect()
}

fn json(r: &[SignedRebind]) -> Vec<Value> {
    r.iter().map(SignedRebind::to_json).collect()
}

/// The gateway's witness lines for the laptop's records.
fn witnesses(records: &[SignedRebind]) -> Vec<Value> {
    let k = key(GATEWAY);
    let mut out = Vec::new();
    let mut prev = [0; 32];
    for (i, r) in records.iter().enumerate() {
        let w = WitnessRecord {
            version: FORMAT_VERSION,
            seq: i as u64,
            prev,
            received_at_ms: r.record.signed_at_ms + 3,
            observed_from: format!("10.30.0.2:{}", 40_001 + i),
            witness: k.verifying_key().to_bytes(),
            record: r.clone(),
        }
        .sign(&k)
        .expect("fields within bounds");
        prev = w.hash();
        out.push(w.to_json());
    }
    out
}

/// Every vector: file name, contents, and the expected outcome (`None` = good chain; else the
/// 1-based line and the problem).
/// A vector: file name, contents, expected outcome.
type Vector = (&'static str, String, Option<(usize, Problem)>);

fn vectors() -> Vec<Vector> {
    let good = chain(5);
    let mut v = Vec::new();
    v.push(("good-laptop.jsonl", lines(&json(&good)), None));
    v.push(("good-gateway.jsonl", lines(&witnesses(&good)), None));

    let mut edited = json(&good);
    edited[2]["media_window"]["last_seq"] = 1.into();
    v.push(("edited.jsonl", lines(&edited), Some((3, Problem::Edited))));

    let mut reordered = json(&good);
    reordered.swap(2, 3);
    v.push((
        "reordered.jsonl",
        lines(&reordered),
        Some((3, Problem::Reordered { follows_line: 4 })),
    ));

    let mut dropped = json(&good);
    dropped.remove(2);
    v.push((
        "dropped.jsonl",
        lines(&dropped),
        Some((
            3,
            Problem::Dropped {
                missing_from: 2,
                missing_to: 2,
            },
        )),
    ));

    // A second record 2 follows record 1: a forked history.
    let mut forked = json(&good[..4]);
    let mut alt = record(2, good[1].hash(), &key(LAPTOP)).record;
    alt.reason = "loss_threshold_exceeded".into();
    forked.push(alt.sign(&key(LAPTOP)).unwrap().to_json());
    v.push((
        "forked.jsonl",
        lines(&forked),
        Some((5, Problem::Forked { sibling_line: 3 })),
    ));

    // Record 3 is well formed and well linked, but signed by another key.
    let mut wrong = json(&good[..3]);
    wrong.push(record(3, good[2].hash(), &key(OTHER)).to_json());
    v.push((
        "wrong-signer.jsonl",
        lines(&wrong),
        Some((
            4,
            Problem::WrongSigner {
                expected: b64(&key(LAPTOP).verifying_key().to_bytes()),
                found: b64(&key(OTHER).verifying_key().to_bytes()),
            },
        )),
    ));

    let mut version = json(&good);
    version[1]["v"] = 2.into();
    v.push((
        "unknown-version.jsonl",
        lines(&version),
        Some((2, Problem::UnknownVersion(2))),
    ));

    // The gateway's file: an edit inside an embedded laptop record is named as such.
    let mut inner = witnesses(&good);
    inner[1]["record"]["new_path"]["bearer"] = "wired".into();
    v.push((
        "gateway-edited-record.jsonl",
        lines(&inner),
        Some((2, Problem::Embedded(Box::new(Problem::Edited)))),
    ));
    v
}

#[test]
fn committed_vectors_are_what_this_build_writes() {
    let write = std::env::var_os("JVPN_WRITE_VECTORS").is_some();
    if write {
        std::fs::create_dir_all(dir()).unwrap();
    }
    for (name, contents, _) in vectors() {
        let path = dir().join(name);
        if write {
            std::fs::write(&path, &contents).unwrap();
        }
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed, contents,
            "{name} differs from what this build writes"
        );
    }
}

#[test]
fn each_vector_verifies_or_names_its_first_bad_record() {
    for (name, contents, expected) in vectors() {
        let got = verify_chain(&contents, None);
        match expected {
            None => {
                let s = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(s.records, 5, "{name}");
                assert_eq!(s.sessions.len(), 2, "{name}");
                assert_eq!(s.first_ms, Some(T0), "{name}");
                assert_eq!(s.last_ms, Some(T0 + 20_000), "{name}");
                assert_eq!(s.transitions["wifi → cellular"], 2, "{name}");
                assert_eq!(s.transitions["cellular → wifi"], 2, "{name}");
                assert_eq!(s.transitions["cellular → cellular"], 1, "{name}");
            }
            Some((line, problem)) => {
                let e = got.expect_err(name);
                assert_eq!((e.line, e.problem), (line, problem), "{name}");
            }
        }
    }
}

#[test]
fn pinned_signer_rejects_a_chain_of_another_key() {
    let good = lines(&json(&chain(2)));
    let gateway = key(GATEWAY).verifying_key().to_bytes();
    let e = verify_chain(&good, Some(&gateway)).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(matches!(e.problem, Problem::WrongSigner { .. }));
    let laptop = key(LAPTOP).verifying_key().to_bytes();
    assert_eq!(verify_chain(&good, Some(&laptop)).unwrap().records, 2);
    // The gateway's file is the gateway's chain.
    let w = lines(&witnesses(&chain(2)));
    assert_eq!(verify_chain(&w, Some(&gateway)).unwrap().records, 2);
    assert!(verify_chain(&w, Some(&laptop)).is_err());
}

#[test]
fn a_torn_last_line_and_a_missing_first_record_are_named() {
    let good = lines(&json(&chain(3)));
    let torn = &good[..good.len() - 40];
    let e = verify_chain(torn, None).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(matches!(e.problem, Problem::Malformed(_)), "{e}");
    let headless: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let e = verify_chain(&headless, None).unwrap_err();
    assert_eq!(
        (e.line, e.problem),
        (
            1,
            Problem::Dropped {
                missing_from: 0,
                missing_to: 0
            }
        )
    );
}

#[test]
fn the_cli_exits_zero_on_a_good_chain_and_names_the_bad_record_otherwise() {
    let exe = env!("CARGO_BIN_EXE_jvpn");
    let laptop_key = b64(&key(LAPTOP).verifying_key().to_bytes());
    let out = Command::new(exe)
        .args(["audit", "verify", "--key", &laptop_key])
        .arg(dir().join("good-laptop.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for want in [
        "5 records",
        "sessions: 2",
        "2026-11-22T04:50:00.000Z .. 2026-11-22T04:50:20.000Z",
        "wifi → cellular ×2",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in {stdout}");
    }
    for (file, want) in [
        ("edited.jsonl", "line 3 (record seq 2): edited"),
        ("reordered.jsonl", "line 3 (record seq 3): reordered"),
        (
            "dropped.jsonl",
            "line 3 (record seq 3): dropped: record seq 2",
        ),
        ("forked.jsonl", "line 5 (record seq 2): forked"),
        ("wrong-signer.jsonl", "line 4 (record seq 3): wrong signer"),
        (
            "unknown-version.jsonl",
            "line 2 (record seq 1): unknown format version 2",
        ),
    ] {
        let out = Command::new(exe)
            .args(["audit", "verify"])
            .arg(dir().join(file))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} passed");
        assert!(stderr.contains(want), "{file}: {stderr}");
    }
}
