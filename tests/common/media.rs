//! A media stream through the simulation and its report, judged against what was *sent*.
//!
//! A [`MediaRun`] sends a 50 packets/s stream of numbered packets (the payload is a `u32`
//! sequence number) uplink and/or downlink, for as many stretches as a test wants, with bearer
//! changes in between. Its [`MediaRun::report`] says, per direction:
//! - `lost`: sent minus received distinct sequence numbers (a path that never resumes loses
//!   everything after the cut, whatever was received before);
//! - `longest_silence`: the longest time without a new packet on the receiver's timeline, from
//!   when the first packet was due (its send time plus the link latency) to when the last one
//!   was due, so a stream that goes quiet and never resumes is silent up to its end.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{gateway_inner, ipv4, laptop_inner, World};

/// Time between two packets of a stream (50 packets/s).
pub const MEDIA_INTERVAL: Duration = Duration::from_millis(20);

/// Loss and the longest silence of one direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaReport {
    pub sent: usize,
    pub received: usize,
    pub lost: usize,
    pub longest_silence: Duration,
}

/// Both directions of a stream (a direction that was not sent reports all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaReports {
    pub up: MediaReport,
    pub down: MediaReport,
}

/// One stream between laptop `laptop` and the gateway.
#[derive(Debug)]
pub struct MediaRun {
    laptop: usize,
    up: bool,
    down: bool,
    /// Sequence numbers sent, in order, with their send times (the same number goes each way).
    sent: Vec<(u32, Instant)>,
    /// Where the receivers' TUN logs stood when the run started.
    gateway_mark: usize,
    laptop_mark: usize,
}

impl MediaRun {
    /// A stream from now on, uplink and/or downlink (nothing is sent until [`Self::play`]).
    pub fn new(w: &World, laptop: usize, up: bool, down: bool) -> Self {
        Self {
            laptop,
            up,
            down,
            sent: Vec::new(),
            gateway_mark: w.gateway_tun_out.len(),
            laptop_mark: w.laptops[laptop].tun_out.len(),
        }
    }

    /// Plays the stream for `d`: one packet each way every [`MEDIA_INTERVAL`], running the
    /// world in between.
    pub fn play(&mut self, w: &mut World, d: Duration) {
        self.play_with(w, d, |_| {});
    }

    /// [`Self::play`], calling `each` right after each packet is sent (before the world runs
    /// on): what an on-path attacker does with every fresh datagram.
    pub fn play_with(&mut self, w: &mut World, d: Duration, mut each: impl FnMut(&mut World)) {
        let end = w.now + d;
        while w.now < end {
            let seq = w.next_media_seq;
            w.next_media_seq += 1;
            self.sent.push((seq, w.now));
            let payload = seq.to_be_bytes();
            let lap = laptop_inner(self.laptop);
            if self.up {
                w.laptop_sends(self.laptop, &ipv4(lap, gateway_inner(), &payload));
            }
            if self.down {
                w.gateway_sends(&ipv4(gateway_inner(), lap, &payload));
            }
            each(w);
            let next = w.now + MEDIA_INTERVAL;
            w.run_until(next);
        }
    }

    /// How many packets were sent each way so far.
    pub fn sent(&self) -> usize {
        self.sent.len()
    }

    /// Runs the world until the last packet was due at its receiver, then reports both
    /// directions.
    pub fn finish(&self, w: &mut World) -> MediaReports {
        if let Some((_, sent_at)) = self.sent.last() {
            let due = *sent_at + w.latency;
            w.run_until(due.max(w.now));
        }
        self.report(w)
    }

    /// Both directions as received so far.
    pub fn report(&self, w: &World) -> MediaReports {
        let lap = &w.laptops[self.laptop];
        let up = self.direction(
            self.up,
            &w.gateway_tun_out[self.gateway_mark..],
            &w.gateway_tun_at[self.gateway_mark..],
            laptop_inner(self.laptop),
            w.latency,
        );
        let down = self.direction(
            self.down,
            &lap.tun_out[self.laptop_mark..],
            &lap.tun_at[self.laptop_mark..],
            gateway_inner(),
            w.latency,
        );
        MediaReports { up, down }
    }

    /// One direction: `packets` written to the receiver's TUN at `times`, from `src`.
    fn direction(
        &self,
        enabled: bool,
        packets: &[Vec<u8>],
        times: &[Instant],
        src: IpAddr,
        latency: Duration,
    ) -> MediaReport {
        let (Some(first), Some(last), true) = (self.sent.first(), self.sent.last(), enabled) else {
            return MediaReport::default();
        };
        let ours: BTreeSet<u32> = self.sent.iter().map(|s| s.0).collect();
        let mut seen = BTreeSet::new();
        let mut arrivals = Vec::new();
        for (p, t) in packets.iter().zip(times) {
            let Some(seq) = media_seq(p, src) else {
                continue;
            };
            if ours.contains(&seq) && seen.insert(seq) {
                arrivals.push(*t);
            }
        }
        // The receiver's timeline: from when the first packet was due to when the last was.
        let (start, end) = (first.1 + latency, last.1 + latency);
        let mut marks = vec![start];
        marks.extend(arrivals.iter().copied());
        marks.push(end.max(arrivals.last().copied().unwrap_or(end)));
        let longest_silence = marks
            .windows(2)
            .map(|m| m[1].saturating_duration_since(m[0]))
            .max()
            .unwrap_or_default();
        MediaReport {
            sent: self.sent.len(),
            received: seen.len(),
            lost: self.sent.len() - seen.len(),
            longest_silence,
        }
    }
}

/// The sequence number of a media packet from `src` (a 20-byte IPv4 header, a 4-byte payload).
fn media_seq(p: &[u8], src: IpAddr) -> Option<u32> {
    if p.len() != 24 || jvpn::proto::wire::ip_ends(p).map(|e| e.src) != Some(src) {
        return None;
    }
    Some(u32::from_be_bytes(p[20..24].try_into().ok()?))
}
