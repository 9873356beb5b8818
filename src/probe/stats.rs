//! What the receiver measures, computed from (packet, arrival time) pairs.
//!
//! The rule this module enforces: it is pure and clock-free. Every input carries its arrival
//! time, [`ProbeStats::report`] takes "now" as an argument, and the same inputs always give the
//! same [`Report`], so every number the probe prints is tested here without sockets or sleeps.
//!
//! Definitions (all on the receiver's timeline, which starts when it begins listening):
//! - The receiver follows the first stream it hears; probe packets of other streams are counted
//!   and otherwise ignored.
//! - *Received* counts distinct media sequence numbers; a repeat is a *duplicate*, a new packet
//!   with a lower sequence number than one already seen is *reordered* (and also received).
//! - *Lost* is expected − received. Expected runs from sequence 0 if the stream began after the
//!   receiver started listening (else from the lowest sequence seen) up to the highest sequence
//!   seen or, once an end marker arrived, up to the number it says were sent (tail loss).
//! - A *silence* is the time between consecutive arrivals of new packets (media, or the first end
//!   marker, which closes a silence at the end of the stream). When the first packets are lost,
//!   the silence before the first arrival counts from when packet 0 was due. Without an end
//!   marker, the time since the last arrival is an open silence that counts too.
//! - *Jitter* is RFC 3550's interarrival jitter, over new media packets in arrival order, using
//!   the sender's monotonic send times.
//! - *One-way delay* is arrival realtime − the sender's realtime. It is reported only when every
//!   sample lies in 0..=[`MAX_PLAUSIBLE_OWD`]; otherwise the clocks disagree and it is unknown.

use std::time::Duration;

use super::packet::ProbePacket;
use super::quality::{self, Quality};

/// How many sequence numbers behind the highest one duplicates are still recognised. Older
/// packets are counted as stale and otherwise ignored (at 50 packets/s this is 21 minutes).
pub const SEQ_WINDOW: u64 = 1 << 16;
/// A one-way delay beyond this (or below zero) means the two realtime clocks disagree.
pub const MAX_PLAUSIBLE_OWD: Duration = Duration::from_secs(10);
/// How many of the longest silences a report lists.
pub const TOP_GAPS: usize = 10;

/// When a datagram arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Monotonic time since the receiver started listening.
    pub at: Duration,
    /// The receiver's CLOCK_REALTIME, ns since the Unix epoch; 0 if unknown.
    pub realtime_ns: u64,
}

/// What [`ProbeStats::observe`] made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new media packet, in order.
    New,
    /// A new media packet that arrived after a higher sequence number.
    Reordered,
    /// A media packet seen before.
    Duplicate,
    /// Too far behind the highest sequence number to tell; ignored.
    Stale,
    /// The first end marker of the stream.
    End,
    /// A repeated end marker.
    RepeatedEnd,
    /// A probe packet of a stream other than the one being measured.
    OtherStream,
}

/// A silence: no new packet arrived during `len` from `start` (receiver timeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub start: Duration,
    pub len: Duration,
}

/// One of the longest silences, as reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GapReport {
    /// When it began, ms since the stream's first expected packet.
    pub start_ms: f64,
    /// How long it lasted, ms.
    pub length_ms: f64,
}

/// One-way delay statistics, ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Owd {
    pub min_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
}

/// Everything the probe reports, at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub stream_id: Option<u64>,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub stale: u64,
    pub other_stream: u64,
    pub non_probe_datagrams: u64,
    /// From the end marker; `None` until one arrives.
    pub sent: Option<u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// `None` until something has arrived.
    pub longest_silence_ms: Option<f64>,
    /// The silence still going on at report time (no end marker yet), ms.
    pub open_silence_ms: Option<f64>,
    /// `None` before two media packets arrived.
    pub jitter_ms: Option<f64>,
    /// `None` when unknown (no samples, or the clocks disagree).
    pub owd: Option<Owd>,
    /// `None` before a media packet arrived.
    pub quality: Option<Quality>,
    /// From the first expected packet to the last arrival (or to now, during an open silence).
    pub duration_ms: f64,
    /// The longest silences, longest first (ties: earliest first).
    pub gaps: Vec<GapReport>,
}

/// The receiver's measurements for one stream. See the module docs for the definitions.
#[derive(Debug, Default)]
pub struct ProbeStats {
    stream_id: Option<u64>,
    counts: Counts,
    window: SeqWindow,
    seqs: Option<(u64, u64)>,
    /// When packet 0 was due (or the first arrival, if we joined an older stream).
    start: Duration,
    /// Whether loss is counted from sequence 0.
    from_zero: bool,
    /// The last arrival of a new packet.
    last_arrival: Option<Duration>,
    end: Option<u64>,
    gaps: TopGaps,
    jitter: Jitter,
    owd: OwdAcc,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    received: u64,
    duplicates: u64,
    reordered: u64,
    stale: u64,
    other_stream: u64,
    non_probe: u64,
}

impl ProbeStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a datagram that is not a probe packet.
    pub fn note_non_probe(&mut self) {
        self.counts.non_probe += 1;
    }

    /// Whether an end marker of the measured stream has arrived.
    pub fn end_seen(&self) -> bool {
        self.end.is_some()
    }

    /// Feeds one probe packet. Arrival times must not go backwards.
    pub fn observe(&mut self, pkt: &ProbePacket, arrival: Arrival) -> Verdict {
        match self.stream_id {
            None => self.begin(pkt, arrival),
            Some(id) if id != pkt.stream_id => {
                self.counts.other_stream += 1;
                return Verdict::OtherStream;
            }
            Some(_) => {}
        }
        match pkt.end {
            Some(sent) => self.observe_end(sent, arrival.at),
            None => self.observe_media(pkt, arrival),
        }
    }

    /// Locks onto the stream of its first packet and places packet 0 on our timeline.
    fn begin(&mut self, pkt: &ProbePacket, arrival: Arrival) {
        self.stream_id = Some(pkt.stream_id);
        let sent_at = Duration::from_nanos(pkt.mono_ns);
        self.from_zero = arrival.at >= sent_at;
        self.start = arrival.at.saturating_sub(sent_at);
        let first_lost = pkt.end.is_some() || pkt.seq > 0;
        if self.from_zero && first_lost {
            self.gaps.offer(Gap {
                start: self.start,
                len: arrival.at - self.start,
            });
        }
    }

    fn observe_end(&mut self, sent: u64, at: Duration) -> Verdict {
        if self.end.is_some() {
            return Verdict::RepeatedEnd;
        }
        self.end = Some(sent);
        self.arrived(at);
        Verdict::End
    }

    fn observe_media(&mut self, pkt: &ProbePacket, arrival: Arrival) -> Verdict {
        match self.window.insert(pkt.seq) {
            Seen::Duplicate => {
                self.counts.duplicates += 1;
                return Verdict::Duplicate;
            }
            Seen::TooOld => {
                self.counts.stale += 1;
                return Verdict::Stale;
            }
            Seen::New => {}
        }
        self.counts.received += 1;
        self.arrived(arrival.at);
        self.jitter.sample(arrival.at, pkt.mono_ns);
        self.owd.sample(arrival.realtime_ns, pkt.realtime_ns);
        let (lowest, highest) = self.seqs.unwrap_or((pkt.seq, pkt.seq));
        self.seqs = Some((lowest.min(pkt.seq), highest.max(pkt.seq)));
        if pkt.seq < highest {
            self.counts.reordered += 1;
            Verdict::Reordered
        } else {
            Verdict::New
        }
    }

    /// A new packet arrived: the silence since the previous one is over.
    fn arrived(&mut self, at: Duration) {
        if let Some(last) = self.last_arrival {
            self.gaps.offer(Gap {
                start: last,
                len: at.saturating_sub(last),
            });
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |last| last.max(at)));
    }

    /// Media packets that should have arrived: see the module docs.
    fn expected(&self) -> u64 {
        let sent = self.end.unwrap_or(0);
        match self.seqs {
            None if self.from_zero => sent,
            None => 0,
            Some((lowest, highest)) => {
                let base = if self.from_zero { 0 } else { lowest };
                highest.saturating_add(1).max(sent) - base
            }
        }
    }

    /// The silence still going on at `now`, if no end marker has closed the stream.
    fn open_gap(&self, now: Duration) -> Option<Gap> {
        let last = self.last_arrival.filter(|_| self.end.is_none())?;
        Some(Gap {
            start: last,
            len: now.saturating_sub(last),
        })
    }

    /// Everything measured so far; `now` is on the same timeline as the arrivals.
    pub fn report(&self, now: Duration) -> Report {
        let c = self.counts;
        let lost = self.expected().saturating_sub(c.received);
        let open = self.open_gap(now);
        let mut gaps = self.gaps.clone();
        if let Some(g) = open {
            gaps.offer(g);
        }
        let last = self.last_arrival.unwrap_or(self.start);
        let end_of_data = open.map_or(last, |g| g.start + g.len);
        let jitter_ms = self.jitter.value_ms();
        let owd = self.owd.value();
        let quality = (c.received > 0).then(|| {
            let loss = lost as f64 / (c.received + lost) as f64;
            quality::estimate(loss, owd.map(|o| o.avg_ms), jitter_ms.unwrap_or(0.0))
        });
        Report {
            stream_id: self.stream_id,
            received: c.received,
            lost,
            duplicates: c.duplicates,
            reordered: c.reordered,
            stale: c.stale,
            other_stream: c.other_stream,
            non_probe_datagrams: c.non_probe,
            sent: self.end,
            first_seq: self.seqs.map(|s| s.0),
            last_seq: self.seqs.map(|s| s.1),
            longest_silence_ms: gaps.longest().map(|g| ms(g.len)),
            open_silence_ms: open.map(|g| ms(g.len)),
            jitter_ms,
            owd,
            quality,
            duration_ms: ms(end_of_data.saturating_sub(self.start)),
            gaps: gaps.report(self.start),
        }
    }
}

/// Duration → milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Which sequence numbers of the last [`SEQ_WINDOW`] have been seen: a ring of bits.
#[derive(Debug)]
struct SeqWindow {
    bits: Vec<u64>,
    highest: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    New,
    Duplicate,
    TooOld,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow {
            bits: vec![0; (SEQ_WINDOW / 64) as usize],
            highest: None,
        }
    }
}

impl SeqWindow {
    /// Records `seq` and says whether it was new.
    fn insert(&mut self, seq: u64) -> Seen {
        match self.highest {
            Some(h) if seq <= h => {
                if h - seq >= SEQ_WINDOW {
                    return Seen::TooOld;
                }
                if self.test_and_set(seq) {
                    return Seen::Duplicate;
                }
            }
            Some(h) => {
                self.clear_between(h, seq);
                self.test_and_set(seq);
                self.highest = Some(seq);
            }
            None => {
                self.test_and_set(seq);
                self.highest = Some(seq);
            }
        }
        Seen::New
    }

    /// Forgets the slots of `(from, to]`, which now stand for new sequence numbers.
    fn clear_between(&mut self, from: u64, to: u64) {
        if to - from >= SEQ_WINDOW {
            self.bits.fill(0);
            return;
        }
        for seq in from + 1..=to {
            let (word, bit) = Self::slot(seq);
            self.bits[word] &= !bit;
        }
    }

    fn test_and_set(&mut self, seq: u64) -> bool {
        let (word, bit) = Self::slot(seq);
        let was = self.bits[word] & bit != 0;
        self.bits[word] |= bit;
        was
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }
}

/// The [`TOP_GAPS`] longest silences, longest first; ties keep the earliest first.
#[derive(Clone, Debug, Default)]
struct TopGaps(Vec<Gap>);

impl TopGaps {
    fn offer(&mut self, gap: Gap) {
        let at = self.0.partition_point(|g| g.len >= gap.len);
        if at < TOP_GAPS {
            self.0.insert(at, gap);
            self.0.truncate(TOP_GAPS);
        }
    }

    fn longest(&self) -> Option<Gap> {
        self.0.first().copied()
    }

    fn report(&self, stream_start: Duration) -> Vec<GapReport> {
        self.0
            .iter()
            .map(|g| GapReport {
                start_ms: ms(g.start.saturating_sub(stream_start)),
                length_ms: ms(g.len),
            })
            .collect()
    }
}

/// RFC 3550 §6.4.1 interarrival jitter: J += (|D| − J) / 16, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Jitter {
    last_transit: Option<i128>,
    differences: u64,
    value_ns: f64,
}

impl Jitter {
    fn sample(&mut self, arrival: Duration, sent_mono_ns: u64) {
        let transit = arrival.as_nanos() as i128 - i128::from(sent_mono_ns);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.value_ns += (d - self.value_ns) / 16.0;
            self.differences += 1;
        }
        self.last_transit = Some(transit);
    }

    /// `None` until two packets gave a difference.
    fn value_ms(&self) -> Option<f64> {
        (self.differences > 0).then_some(self.value_ns / 1e6)
    }
}

/// One-way delay samples (ns) and how many were implausible or missing.
#[derive(Clone, Copy, Debug, Default)]
struct OwdAcc {
    n: u64,
    sum: i128,
    min: i128,
    max: i128,
    implausible: u64,
}

impl OwdAcc {
    fn sample(&mut self, arrival_realtime_ns: u64, sent_realtime_ns: u64) {
        if arrival_realtime_ns == 0 || sent_realtime_ns == 0 {
            self.implausible += 1;
            return;
        }
        let d = i128::from(arrival_realtime_ns) - i128::from(sent_realtime_ns);
        if d < 0 || d > MAX_PLAUSIBLE_OWD.as_nanos() as i128 {
            self.implausible += 1;
            return;
        }
        self.min = if self.n == 0 { d } else { self.min.min(d) };
        self.max = self.max.max(d);
        self.sum += d;
        self.n += 1;
    }

    fn value(&self) -> Option<Owd> {
        if self.n == 0 || self.implausible > 0 {
            return None;
        }
        Some(Owd {
            min_ms: self.min as f64 / 1e6,
            avg_ms: self.sum as f64 / self.n as f64 / 1e6,
            max_ms: self.max as f64 / 1e6,
        })
    }
}
