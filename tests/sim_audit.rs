//! Simulation ring for the audit trail (E5): jumps produce the expected signed records on the
//! laptop, the gateway receives each exactly once over the control channel (resent under loss),
//! verifies and witnesses it, and both files are good chains that match the jumps. Virtual
//! clock, seeded; the records go through the real `AuditLog` into temporary files.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use jvpn::audit::{verify_chain, AuditLog, SignedRebind};
use jvpn::policy::BearerClass;
use jvpn::proto::{Core, ProtoConfig, UplinkId};

const WIFI: u32 = 2;
const CELL: u32 = 3;
const WIFI_ADDR: &str = "192.0.2.10:40000";
const CELL_ADDR: &str = "203.0.113.50:61000";

fn two_bearers(seed: u64) -> World {
    let mut w = World::with_config(1, seed, ProtoConfig::default());
    w.give_links(
        0,
        &[
            (WIFI, BearerClass::Wifi, "wlan0", WIFI_ADDR),
            (CELL, BearerClass::Cellular, "wwan0", CELL_ADDR),
        ],
    );
    w.establish();
    w
}

fn temp_file(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("jvpn-sim-audit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What the node's writer thread does with the laptop's drafts: sign, append, send.
fn sign_and_send(w: &mut World, log: &mut AuditLog) -> Vec<SignedRebind> {
    let drafts = std::mem::take(&mut w.laptops[0].audit_drafts);
    let mut out = Vec::new();
    for d in drafts {
        let locals = [
            format!("local-of-{}", d.old.via.0),
            format!("local-of-{}", d.new.via.0),
        ];
        let signed = log.append_rebind(&d, locals).expect("append");
        let now = w.now;
        w.laptops[0]
            .core
            .send_audit_record(d.session_id, signed.to_wire(), now);
        out.push(signed);
    }
    w.run_for(Duration::from_millis(1));
    out
}

/// Data packets (type 4) in the capture from `from`: (epoch byte, counter), in wire order, read
/// through the header protection with the laptop's own keys.
fn data_counters(w: &World, from: &str) -> Vec<(u8, u64)> {
    let from = from.parse().unwrap();
    let s = w.laptops[0].core.session().unwrap();
    w.capture
        .iter()
        .filter(|d| d.from == from && d.bytes.len() >= 32 && d.bytes[0] == 4)
        .filter_map(|d| s.sent_header(&d.bytes))
        .collect()
}

#[test]
fn two_jumps_leave_matching_signed_records_on_the_laptop_and_witnessed_ones_on_the_gateway() {
    let mut w = two_bearers(11);
    let laptop_file = temp_file("laptop.jsonl");
    let gateway_file = temp_file("gateway.jsonl");
    let laptop_key = w.laptops[0].identity.signing_key().clone();
    let mut laptop_log = AuditLog::open(&laptop_file, laptop_key.clone()).unwrap();
    let gw_key = identity(200).signing_key().clone();
    let mut gateway_log = AuditLog::open(&gateway_file, gw_key.clone()).unwrap();
    let session_id = w.laptops[0].core.session().unwrap().id();

    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(1));
    w.link_down(0, WIFI);
    media.play(&mut w, Duration::from_secs(3));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    let first = sign_and_send(&mut w, &mut laptop_log);
    w.link_up(0, WIFI);
    media.play(&mut w, Duration::from_secs(3));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(WIFI));
    let second = sign_and_send(&mut w, &mut laptop_log);
    media.play(&mut w, Duration::from_secs(1));

    // The laptop's records: one per jump, with the reasons, classes and detail of the jumps.
    assert_eq!((first.len(), second.len()), (1, 1));
    let (a, b) = (&first[0].record, &second[0].record);
    assert_eq!(a.session_id, session_id.0);
    assert_eq!(
        (
            a.reason.as_str(),
            a.old_path.bearer.as_str(),
            a.new_path.bearer.as_str()
        ),
        ("transport_dead", "wifi", "cellular")
    );
    assert_eq!(
        (a.old_path.iface.as_str(), a.new_path.iface.as_str()),
        ("wlan0", "wwan0")
    );
    assert_eq!(a.new_path.local, format!("local-of-{CELL}"));
    assert_eq!(
        (
            b.reason.as_str(),
            b.old_path.bearer.as_str(),
            b.new_path.bearer.as_str()
        ),
        ("preferred_bearer_available", "cellular", "wifi")
    );
    assert_eq!((a.seq, b.seq), (0, 1));
    assert_eq!(b.prev, first[0].hash());

    // The media window is where data really changed bearer on the wire.
    let wifi = data_counters(&w, WIFI_ADDR);
    let cell = data_counters(&w, CELL_ADDR);
    let in_epoch = |v: &[(u8, u64)], e: u32| -> Vec<u64> {
        v.iter()
            .filter(|(ep, _)| *ep == e as u8)
            .map(|c| c.1)
            .collect()
    };
    let (wifi_a, cell_a) = (in_epoch(&wifi, a.epoch), in_epoch(&cell, a.epoch));
    assert!(
        wifi_a.contains(&a.last_seq),
        "first record's last_seq went by Wi-Fi: {} not in {:?}",
        a.last_seq,
        &wifi_a[wifi_a.len().saturating_sub(5)..]
    );
    assert_eq!(
        cell_a.first(),
        Some(&a.resume_seq),
        "first record's resume_seq"
    );
    let (wifi_b, cell_b) = (in_epoch(&wifi, b.epoch), in_epoch(&cell, b.epoch));
    assert_eq!(
        cell_b.iter().max(),
        Some(&b.last_seq),
        "second record's last_seq"
    );
    assert_eq!(
        wifi_b
            .iter()
            .find(|c| **c >= b.resume_seq.min(a.resume_seq)),
        Some(&b.resume_seq),
        "second record's resume_seq: nothing went by Wi-Fi between the two jumps"
    );
    assert!(b.resume_seq > a.resume_seq || b.epoch > a.epoch);

    // The gateway got each record once and acknowledged it.
    assert_eq!(w.gateway_audit.len(), 2, "{:?}", w.gateway_audit);
    assert_eq!(w.laptops[0].core.audit_traffic().acknowledged, 2);
    let laptop_public = laptop_key.verifying_key().to_bytes();
    for (r, mine) in w.gateway_audit.clone().iter().zip([&first[0], &second[0]]) {
        assert_eq!(r.session_id, session_id);
        assert_eq!(r.bytes, mine.to_wire());
        let witness = gateway_log
            .append_witness(&r.bytes, &laptop_public, r.session_id, r.from, 1)
            .unwrap();
        assert_eq!(&witness.witness.record, mine);
    }
    // The second record arrived over Wi-Fi, where the laptop was by then.
    assert_eq!(w.gateway_audit[1].from, WIFI_ADDR.parse().unwrap());

    let laptop_text = std::fs::read_to_string(&laptop_file).unwrap();
    let s = verify_chain(&laptop_text, Some(&laptop_public)).unwrap();
    assert_eq!((s.records, s.sessions.len()), (2, 1));
    assert_eq!(s.transitions["wifi → cellular"], 1);
    assert_eq!(s.transitions["cellular → wifi"], 1);
    let gateway_text = std::fs::read_to_string(&gateway_file).unwrap();
    let g = verify_chain(&gateway_text, Some(&gw_key.verifying_key().to_bytes())).unwrap();
    assert_eq!((g.records, g.witness), (2, true));
    assert_eq!(g.transitions, s.transitions);
    let _ = std::fs::remove_file(laptop_file);
    let _ = std::fs::remove_file(gateway_file);
}

#[test]
fn the_gateway_refuses_a_record_signed_by_another_key_or_for_another_session() {
    let mut w = two_bearers(12);
    let file = temp_file("laptop2.jsonl");
    let gw_file = temp_file("gateway2.jsonl");
    // Signed by a key that is not the session's peer (a second laptop's identity).
    let mut impostor = AuditLog::open(&file, identity(9).signing_key().clone()).unwrap();
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(2));
    let signed = sign_and_send(&mut w, &mut impostor);
    assert_eq!(signed.len(), 1);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.gateway_audit.len(), 1, "delivered and acknowledged");
    let r = w.gateway_audit[0].clone();
    let mut gw = AuditLog::open(&gw_file, identity(200).signing_key().clone()).unwrap();
    let laptop_public = w.laptops[0].identity.public().0.to_bytes();
    assert!(gw
        .append_witness(&r.bytes, &laptop_public, r.session_id, r.from, 1)
        .is_err());
    // The right signer but another session's id.
    let other = jvpn::proto::SessionId([0xee; 16]);
    let impostor_public = identity(9).public().0.to_bytes();
    assert!(gw
        .append_witness(&r.bytes, &impostor_public, other, r.from, 1)
        .is_err());
    // Both right: witnessed.
    assert!(gw
        .append_witness(&r.bytes, &impostor_public, r.session_id, r.from, 1)
        .is_ok());
    assert_eq!(gw.next_seq(), 1, "only the acceptable record was witnessed");
    let text = std::fs::read_to_string(&gw_file).unwrap();
    assert_eq!(verify_chain(&text, None).unwrap().records, 1);
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(gw_file);
}

#[test]
fn records_are_resent_under_loss_and_witnessed_exactly_once() {
    let mut w = two_bearers(13);
    let file = temp_file("laptop3.jsonl");
    let mut log = AuditLog::open(&file, w.laptops[0].identity.signing_key().clone()).unwrap();
    w.link_down(0, WIFI);
    w.run_for(Duration::from_secs(2));
    w.loss = 0.3;
    let signed = sign_and_send(&mut w, &mut log);
    assert_eq!(signed.len(), 1);
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(10));
    w.loss = 0.0;
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.gateway_audit.len(), 1, "exactly once");
    assert_eq!(w.laptops[0].core.audit_traffic().acknowledged, 1);
    // The loss made it take more than one send: AuditRecords are the only control packets the
    // laptop sends that are longer than a padded Reattach (16 + 256 + 16 bytes).
    let sends = w
        .capture
        .iter()
        .filter(|d| d.to == w.gateway_addr && d.bytes[0] == 5 && d.bytes.len() > 288)
        .count();
    assert!(sends >= 2, "{sends} AuditRecord sends");
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_move_whose_record_is_never_signed_leaves_the_session_unaffected() {
    let mut w = two_bearers(14);
    // Never signing anything is what a failing writer looks like to the core.
    let mut media = MediaRun::new(&w, 0, true, true);
    media.play(&mut w, Duration::from_secs(1));
    w.link_down(0, WIFI);
    media.play(&mut w, Duration::from_secs(2));
    assert_eq!(w.laptops[0].core.paths().active(), UplinkId(CELL));
    assert_eq!(w.laptops[0].audit_drafts.len(), 1, "drafted, never signed");
    assert!(w.gateway_audit.is_empty());
    assert!(w.laptops[0].core.session().is_some());
}

#[test]
fn a_symlinked_audit_path_is_refused_by_name_and_its_target_untouched() {
    let target = temp_file("audit-target");
    std::fs::write(&target, "precious\n").unwrap();
    let link = temp_file("audit-link.jsonl");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let Err(err) = AuditLog::open(&link, identity(3).signing_key().clone()) else {
        panic!("a symlinked audit path must be refused");
    };
    let shown = format!("{} is a symbolic link", link.display());
    assert!(err.to_string().contains(&shown), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_file(target);
}
