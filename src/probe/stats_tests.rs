//! Deterministic tests of [`ProbeStats`]: synthetic 50 packets/s streams, no sockets, no clock.

use std::time::Duration;

use super::packet::ProbePacket;
use super::stats::{Arrival, ProbeStats, Report, Verdict, SEQ_WINDOW, TOP_GAPS};

const STREAM: u64 = 0x5eed_0000_0000_0001;
/// 50 packets/s.
const INTERVAL_NS: u64 = 20_000_000;
/// The sender starts 1 s after the receiver began listening.
const SENDER_START_NS: u64 = 1_000_000_000;
/// Network delay of the synthetic path.
const DELAY_NS: u64 = 30_000_000;
/// Both realtime clocks agree: the receiver's timeline starts at this realtime.
const REALTIME_ZERO_NS: u64 = 1_700_000_000_000_000_000;

/// Sender's view of packet `seq`: sent exactly on schedule.
fn media(seq: u64) -> ProbePacket {
    let mono = seq * INTERVAL_NS;
    ProbePacket::media(STREAM, seq, REALTIME_ZERO_NS + SENDER_START_NS + mono, mono)
}

/// End marker sent in the slot after the last media packet (`sent` packets were sent).
fn end_marker(sent: u64) -> ProbePacket {
    let mono = sent * INTERVAL_NS;
    ProbePacket::end_marker(
        STREAM,
        sent,
        REALTIME_ZERO_NS + SENDER_START_NS + mono,
        mono,
    )
}

/// Arrival of a packet sent at sender-offset `mono_ns` after the base delay plus `extra_ns`.
fn arrival(mono_ns: u64, extra_ns: i64) -> Arrival {
    let at = (SENDER_START_NS + mono_ns + DELAY_NS) as i64 + extra_ns;
    Arrival {
        at: Duration::from_nanos(at as u64),
        realtime_ns: REALTIME_ZERO_NS + at as u64,
    }
}

fn feed(stats: &mut ProbeStats, pkt: ProbePacket, extra_ns: i64) -> Verdict {
    stats.observe(&pkt, arrival(pkt.mono_ns, extra_ns))
}

/// `n` packets minus those in `drop`, in order, then (optionally) one end marker.
fn stream(n: u64, drop: impl Fn(u64) -> bool, end: bool) -> ProbeStats {
    let mut s = ProbeStats::new();
    for seq in (0..n).filter(|&q| !drop(q)) {
        feed(&mut s, media(seq), 0);
    }
    if end {
        feed(&mut s, end_marker(n), 0);
    }
    s
}

/// The report a moment after the last possible arrival of an `n`-packet stream.
fn report_after(s: &ProbeStats, n: u64) -> Report {
    s.report(arrival(n * INTERVAL_NS, 0).at + Duration::from_millis(1))
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn no_loss_means_lost_0_and_longest_silence_one_interval() {
    let s = stream(250, |_| false, true);
    let r = report_after(&s, 250);
    assert_eq!(
        (r.received, r.lost, r.duplicates, r.reordered),
        (250, 0, 0, 0)
    );
    assert_eq!(
        (r.first_seq, r.last_seq, r.sent),
        (Some(0), Some(249), Some(250))
    );
    assert!(close(r.longest_silence_ms.unwrap(), 20.0, 1e-6), "{r:?}");
    assert_eq!(r.open_silence_ms, None, "the end marker closes the stream");
    assert!(close(r.duration_ms, 5_000.0, 1e-6), "{}", r.duration_ms);
    assert_eq!(r.gaps.len(), TOP_GAPS);
    assert_eq!(r.jitter_ms, Some(0.0));
    let owd = r.owd.unwrap();
    assert!(close(owd.min_ms, 30.0, 1e-9) && close(owd.avg_ms, 30.0, 1e-9));
    assert!(close(owd.max_ms, 30.0, 1e-9));
}

#[test]
fn one_dropped_packet_is_one_lost_and_a_40_ms_silence() {
    let s = stream(250, |q| q == 100, true);
    let r = report_after(&s, 250);
    assert_eq!((r.received, r.lost), (249, 1));
    assert!(close(r.longest_silence_ms.unwrap(), 40.0, 1e-6));
    // The silence began when packet 99 arrived: 99 intervals after packet 0.
    assert!(
        close(r.gaps[0].start_ms, 99.0 * 20.0, 1e-6),
        "{:?}",
        r.gaps[0]
    );
    assert!(close(r.gaps[1].length_ms, 20.0, 1e-6));
}

#[test]
fn a_300_ms_outage_is_a_320_ms_silence() {
    // 15 packets (300 ms) vanish: from the last packet before to the first after is 320 ms.
    let s = stream(500, |q| (200..215).contains(&q), true);
    let r = report_after(&s, 500);
    assert_eq!((r.received, r.lost), (485, 15));
    assert!(close(r.longest_silence_ms.unwrap(), 320.0, 1e-6));
    assert!(close(r.gaps[0].start_ms, 199.0 * 20.0, 1e-6));
}

#[test]
fn duplicates_are_counted_and_not_received_twice() {
    let mut s = ProbeStats::new();
    for seq in (0..100).filter(|&q| q != 60) {
        assert_eq!(feed(&mut s, media(seq), 0), Verdict::New);
        if seq == 10 {
            assert_eq!(feed(&mut s, media(10), 1_000_000), Verdict::Duplicate);
            assert_eq!(feed(&mut s, media(10), 2_000_000), Verdict::Duplicate);
        }
        if seq == 59 {
            // A copy of 59 lands in the middle of the silence left by the lost 60.
            assert_eq!(feed(&mut s, media(59), 20_000_000), Verdict::Duplicate);
        }
    }
    feed(&mut s, end_marker(100), 0);
    let r = report_after(&s, 100);
    assert_eq!((r.received, r.duplicates, r.lost), (99, 3, 1));
    assert!(
        close(r.longest_silence_ms.unwrap(), 40.0, 1e-6),
        "a duplicate does not end a silence"
    );
}

#[test]
fn reordered_packets_are_received_and_counted() {
    let mut s = ProbeStats::new();
    for seq in 0..100 {
        match seq {
            50 => {}
            51 => {
                assert_eq!(feed(&mut s, media(51), 0), Verdict::New);
                assert_eq!(feed(&mut s, media(50), 25_000_000), Verdict::Reordered);
            }
            _ => {
                feed(&mut s, media(seq), 0);
            }
        }
    }
    feed(&mut s, end_marker(100), 0);
    let r = report_after(&s, 100);
    assert_eq!(
        (r.received, r.lost, r.reordered, r.duplicates),
        (100, 0, 1, 0)
    );
    // Packet 51 arrives 40 ms after 49; packet 50 arrives 5 ms after 51, then 52 15 ms later.
    assert!(close(r.longest_silence_ms.unwrap(), 40.0, 1e-6));
}

#[test]
fn tail_loss_is_counted_once_the_end_marker_says_how_many_were_sent() {
    // The last 10 of 250 are lost; without the end marker the loss cannot be seen.
    let without = stream(250, |q| q >= 240, false);
    let r = without.report(arrival(240 * INTERVAL_NS, 0).at);
    assert_eq!((r.received, r.lost, r.sent), (240, 0, None));
    let with = stream(250, |q| q >= 240, true);
    let r = report_after(&with, 250);
    assert_eq!((r.received, r.lost, r.sent), (240, 10, Some(250)));
    // From packet 239 to the end marker (sent in slot 250): 11 intervals.
    assert!(close(r.longest_silence_ms.unwrap(), 220.0, 1e-6));
    let mut repeat = with;
    assert_eq!(
        feed(&mut repeat, end_marker(250), 20_000_000),
        Verdict::RepeatedEnd
    );
    assert_eq!(
        report_after(&repeat, 250),
        r,
        "repeated end markers change nothing"
    );
}

#[test]
fn without_an_end_marker_the_silence_at_the_end_stays_open() {
    let s = stream(100, |_| false, false);
    let last = arrival(99 * INTERVAL_NS, 0).at;
    let r = s.report(last + Duration::from_millis(500));
    assert!(close(r.open_silence_ms.unwrap(), 500.0, 1e-6));
    assert!(close(r.longest_silence_ms.unwrap(), 500.0, 1e-6));
    assert!(close(r.duration_ms, 99.0 * 20.0 + 500.0, 1e-6));
}

#[test]
fn first_packets_lost_count_as_loss_and_silence_from_when_packet_0_was_due() {
    let s = stream(100, |q| q < 5, true);
    let r = report_after(&s, 100);
    assert_eq!((r.received, r.lost, r.first_seq), (95, 5, Some(5)));
    assert!(close(r.longest_silence_ms.unwrap(), 100.0, 1e-6));
    assert!(close(r.gaps[0].start_ms, 0.0, 1e-6), "{:?}", r.gaps[0]);
}

#[test]
fn joining_a_stream_that_started_earlier_does_not_count_what_was_never_heard() {
    // The sender's first packets were due before the receiver started listening.
    let mut s = ProbeStats::new();
    let late_start = 2 * SENDER_START_NS / INTERVAL_NS; // packet 100: 2 s into the stream
    for seq in late_start..late_start + 50 {
        let pkt = media(seq);
        s.observe(&pkt, arrival(pkt.mono_ns - 2 * SENDER_START_NS, 0));
    }
    let r = s.report(Duration::from_secs(3));
    assert_eq!((r.received, r.lost, r.first_seq), (50, 0, Some(late_start)));
    assert!(r.gaps.iter().all(|g| g.start_ms >= 0.0));
}

#[test]
fn jitter_of_a_periodic_stream_is_zero() {
    let r = report_after(&stream(500, |_| false, true), 500);
    assert_eq!(r.jitter_ms, Some(0.0));
}

#[test]
fn jitter_of_an_alternating_plus_minus_5_ms_stream_is_10_ms() {
    // Transit alternates 25 ms / 35 ms, so |D| = 10 ms for every pair: J → 10 ms.
    let mut s = ProbeStats::new();
    for seq in 0..500 {
        let extra = if seq % 2 == 0 { 5_000_000 } else { -5_000_000 };
        feed(&mut s, media(seq), extra);
    }
    let r = report_after(&s, 500);
    let j = r.jitter_ms.unwrap();
    assert!(close(j, 10.0, 0.01), "jitter {j} ms");
    assert_eq!(r.lost, 0);
    assert!(close(r.longest_silence_ms.unwrap(), 30.0, 1e-6));
    // R includes a jitter-buffer allowance of 2 × jitter on top of the 30 ms average delay.
    assert!(close(r.quality.unwrap().delay_ms, 30.0 + 2.0 * j, 1e-6));
}

#[test]
fn quality_falls_with_loss() {
    let clean = report_after(&stream(500, |_| false, true), 500);
    let q0 = clean.quality.unwrap();
    assert!(q0.mos > 4.3, "MOS {}", q0.mos);
    let mut last = q0;
    for every in [50u64, 20, 10, 5, 2] {
        let r = report_after(&stream(500, |q| q % every == every - 1, true), 500);
        assert_eq!(r.lost, 500 / every);
        let q = r.quality.unwrap();
        assert!(
            q.r < last.r && q.mos < last.mos,
            "1 in {every}: {q:?} vs {last:?}"
        );
        last = q;
    }
    let ten = report_after(&stream(500, |q| q % 10 == 9, true), 500);
    assert!(ten.quality.unwrap().mos < q0.mos - 0.8);
}

#[test]
fn implausible_sender_clock_makes_one_way_delay_unknown() {
    let mut s = ProbeStats::new();
    for seq in 0..50 {
        let mut pkt = media(seq);
        pkt.realtime_ns += 3_600_000_000_000; // the sender's clock is an hour ahead
        s.observe(&pkt, arrival(pkt.mono_ns, 0));
    }
    let r = report_after(&s, 50);
    assert_eq!(r.owd, None);
    let q = r.quality.unwrap();
    assert!(close(q.delay_ms, 0.0, 1e-9), "unknown delay counts as 0");
    let mut z = ProbeStats::new();
    let mut pkt = media(0);
    pkt.realtime_ns = 0;
    z.observe(&pkt, arrival(0, 0));
    assert_eq!(report_after(&z, 1).owd, None, "a sender without a clock");
}

#[test]
fn other_streams_and_non_probe_datagrams_are_counted_and_ignored() {
    let mut s = stream(50, |_| false, false);
    let mut other = media(3);
    other.stream_id ^= 1;
    assert_eq!(feed(&mut s, other, 0), Verdict::OtherStream);
    let mut other_end = end_marker(1000);
    other_end.stream_id ^= 1;
    assert_eq!(feed(&mut s, other_end, 0), Verdict::OtherStream);
    s.note_non_probe();
    s.note_non_probe();
    let r = report_after(&s, 50);
    assert_eq!((r.received, r.lost, r.sent), (50, 0, None));
    assert_eq!((r.other_stream, r.non_probe_datagrams), (2, 2));
}

#[test]
fn nothing_received_reports_unknowns() {
    let mut s = ProbeStats::new();
    s.note_non_probe();
    let r = s.report(Duration::from_secs(5));
    assert_eq!((r.received, r.lost, r.stream_id), (0, 0, None));
    assert_eq!(
        (r.longest_silence_ms, r.jitter_ms, r.quality),
        (None, None, None)
    );
    assert!(r.gaps.is_empty());
}

#[test]
fn only_end_markers_arriving_means_everything_was_lost() {
    let mut s = ProbeStats::new();
    feed(&mut s, end_marker(50), 0);
    let r = report_after(&s, 50);
    assert_eq!((r.received, r.lost, r.sent), (0, 50, Some(50)));
    assert!(close(r.longest_silence_ms.unwrap(), 1_000.0, 1e-6));
    assert_eq!(r.quality, None);
}

#[test]
fn sequence_window_recognises_duplicates_and_drops_stale_packets() {
    let mut s = ProbeStats::new();
    assert_eq!(feed(&mut s, media(0), 0), Verdict::New);
    assert_eq!(feed(&mut s, media(SEQ_WINDOW - 1), 0), Verdict::New);
    assert_eq!(feed(&mut s, media(0), 0), Verdict::Duplicate);
    assert_eq!(feed(&mut s, media(SEQ_WINDOW + 5), 0), Verdict::New);
    // Slot of seq 0 was reused: seq 0 is now too old; seq SEQ_WINDOW is new (reordered).
    assert_eq!(feed(&mut s, media(0), 0), Verdict::Stale);
    assert_eq!(feed(&mut s, media(SEQ_WINDOW), 0), Verdict::Reordered);
    assert_eq!(feed(&mut s, media(SEQ_WINDOW), 0), Verdict::Duplicate);
    assert_eq!(feed(&mut s, media(4 * SEQ_WINDOW), 0), Verdict::New);
    assert_eq!(
        feed(&mut s, media(3 * SEQ_WINDOW + 7), 0),
        Verdict::Reordered
    );
    let r = s.report(Duration::from_secs(1));
    assert_eq!((r.stale, r.duplicates, r.received), (1, 2, 6));
}

#[test]
fn top_gaps_keep_the_ten_longest_longest_first() {
    // Drop 1, 2, ..., 12 consecutive packets at spaced places.
    let drops: Vec<(u64, u64)> = (1..=12).map(|k| (k * 100, k)).collect();
    let s = stream(
        1_400,
        |q| drops.iter().any(|&(at, n)| (at..at + n).contains(&q)),
        true,
    );
    let r = report_after(&s, 1_400);
    assert_eq!(r.lost, (1..=12).sum::<u64>());
    assert_eq!(r.gaps.len(), TOP_GAPS);
    let lengths: Vec<f64> = r.gaps.iter().map(|g| g.length_ms.round()).collect();
    let want: Vec<f64> = (3..=12).rev().map(|k| (k as f64 + 1.0) * 20.0).collect();
    assert_eq!(lengths, want);
}

#[test]
fn same_inputs_same_report() {
    let a = report_after(&stream(300, |q| q % 7 == 0, true), 300);
    let b = report_after(&stream(300, |q| q % 7 == 0, true), 300);
    assert_eq!(a, b);
}
