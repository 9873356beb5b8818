//! The probe packet format.
//!
//! The rule this module enforces: decoding never panics and never allocates. A datagram gets one
//! length check, then every field is read at a fixed offset of a fixed-size header; anything that
//! is not a version-1 probe packet is a [`DecodeError`] that the receiver counts and drops.
//! Encoding writes into the caller's buffer.
//!
//! A probe packet looks like RTP carrying G.711 (so middleboxes and QoS rules treat it like a
//! call): a 12-byte RTP header, then the probe fields, then filler up to the packet size (0xFF,
//! which is silence in PCMU). All integers are big-endian (network order, as in RTP). Offsets:
//!
//! ```text
//!  0      RTP: 0x80 (version 2, no padding, extension or CSRCs)
//!  1      RTP: marker bit on sequence 0, payload type 0 (PCMU)
//!  2..4   RTP sequence number: low 16 bits of seq
//!  4..8   RTP timestamp: the 8 kHz sample clock, from mono_ns
//!  8..12  RTP SSRC: low 32 bits of stream_id
//! 12..16  magic "jvPR"
//! 16      version (1)
//! 17      flags: bit 0 = end of stream
//! 18..20  zero
//! 20..28  stream_id: random per sender run
//! 28..36  seq: 0, 1, 2, ... (on an end marker: the number of media packets sent)
//! 36..44  realtime_ns: the sender's CLOCK_REALTIME at sending, ns since the Unix epoch (0 = none)
//! 44..52  mono_ns: the sender's monotonic clock at sending, ns since the stream started
//! 52..60  sent: on an end marker, the number of media packets sent; zero otherwise
//! 60..    filler
//! ```

use thiserror::Error;

/// Length of the fixed header (RTP header plus probe fields); the smallest valid probe packet.
pub const HEADER_LEN: usize = 60;
/// Length of the RTP part of the header.
pub const RTP_HEADER_LEN: usize = 12;
/// Default packet size: a 12-byte RTP header plus 160 bytes of G.711 (20 ms at 8 kHz).
pub const DEFAULT_SIZE: usize = RTP_HEADER_LEN + 160;
/// The largest UDP payload over IPv4.
pub const MAX_SIZE: usize = 65_507;
/// Identifies a probe packet.
pub const MAGIC: [u8; 4] = *b"jvPR";
/// The only version this code speaks.
pub const VERSION: u8 = 1;
/// Filler byte after the header: PCMU silence.
pub const FILLER: u8 = 0xFF;

const FLAG_END: u8 = 0x01;
const RTP_V2: u8 = 0x80;
const RTP_MARKER: u8 = 0x80;
const RTP_PT_PCMU: u8 = 0;
const OFF_MAGIC: usize = 12;
const OFF_VERSION: usize = 16;
const OFF_FLAGS: usize = 17;
const OFF_STREAM: usize = 20;
const OFF_SEQ: usize = 28;
const OFF_REALTIME: usize = 36;
const OFF_MONO: usize = 44;
const OFF_SENT: usize = 52;

/// One decoded probe packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePacket {
    /// Random per sender run; the receiver follows one stream.
    pub stream_id: u64,
    /// Media sequence number, from 0. On an end marker it equals the number sent.
    pub seq: u64,
    /// Sender's CLOCK_REALTIME at sending (ns since the Unix epoch), 0 if it had none.
    pub realtime_ns: u64,
    /// Sender's monotonic time at sending, ns since the stream's first packet was due.
    pub mono_ns: u64,
    /// `Some(sent)` on an end-of-stream marker: the number of media packets sent.
    pub end: Option<u64>,
}

impl ProbePacket {
    /// A media packet.
    pub fn media(stream_id: u64, seq: u64, realtime_ns: u64, mono_ns: u64) -> Self {
        ProbePacket {
            stream_id,
            seq,
            realtime_ns,
            mono_ns,
            end: None,
        }
    }

    /// An end-of-stream marker saying `sent` media packets were sent.
    pub fn end_marker(stream_id: u64, sent: u64, realtime_ns: u64, mono_ns: u64) -> Self {
        ProbePacket {
            stream_id,
            seq: sent,
            realtime_ns,
            mono_ns,
            end: Some(sent),
        }
    }
}

/// Why a datagram is not a probe packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{0} bytes is shorter than a probe header ({HEADER_LEN} bytes)")]
    TooShort(usize),
    #[error("no probe magic")]
    BadMagic,
    #[error("probe version {0} is not supported (this is version {VERSION})")]
    BadVersion(u8),
}

/// The caller's buffer cannot hold a probe header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("a {0}-byte buffer cannot hold a probe header ({HEADER_LEN} bytes)")]
pub struct BufferTooShort(pub usize);

/// Writes `pkt`'s header into `buf[..HEADER_LEN]`; the rest of `buf` (the filler) is untouched.
pub fn encode(pkt: &ProbePacket, buf: &mut [u8]) -> Result<(), BufferTooShort> {
    let len = buf.len();
    let h: &mut [u8; HEADER_LEN] = buf
        .first_chunk_mut::<HEADER_LEN>()
        .ok_or(BufferTooShort(len))?;
    let marker = if pkt.seq == 0 && pkt.end.is_none() {
        RTP_MARKER
    } else {
        0
    };
    // The RTP timestamp is an 8 kHz sample clock that wraps, as RTP's does.
    let rtp_ts = (u128::from(pkt.mono_ns) * 8_000 / 1_000_000_000) as u32;
    h[0] = RTP_V2;
    h[1] = marker | RTP_PT_PCMU;
    h[2..4].copy_from_slice(&(pkt.seq as u16).to_be_bytes());
    h[4..8].copy_from_slice(&rtp_ts.to_be_bytes());
    h[8..12].copy_from_slice(&(pkt.stream_id as u32).to_be_bytes());
    h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC);
    h[OFF_VERSION] = VERSION;
    h[OFF_FLAGS] = if pkt.end.is_some() { FLAG_END } else { 0 };
    h[18..20].fill(0);
    put_u64(h, OFF_STREAM, pkt.stream_id);
    put_u64(h, OFF_SEQ, pkt.seq);
    put_u64(h, OFF_REALTIME, pkt.realtime_ns);
    put_u64(h, OFF_MONO, pkt.mono_ns);
    put_u64(h, OFF_SENT, pkt.end.unwrap_or(0));
    Ok(())
}

/// Decodes a datagram. Bytes after the header are ignored; so are the RTP fields.
pub fn decode(bytes: &[u8]) -> Result<ProbePacket, DecodeError> {
    let h: &[u8; HEADER_LEN] = bytes
        .first_chunk::<HEADER_LEN>()
        .ok_or(DecodeError::TooShort(bytes.len()))?;
    if h[OFF_MAGIC..OFF_MAGIC + 4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if h[OFF_VERSION] != VERSION {
        return Err(DecodeError::BadVersion(h[OFF_VERSION]));
    }
    let end = (h[OFF_FLAGS] & FLAG_END != 0).then(|| get_u64(h, OFF_SENT));
    Ok(ProbePacket {
        stream_id: get_u64(h, OFF_STREAM),
        seq: get_u64(h, OFF_SEQ),
        realtime_ns: get_u64(h, OFF_REALTIME),
        mono_ns: get_u64(h, OFF_MONO),
        end,
    })
}

fn put_u64(h: &mut [u8; HEADER_LEN], at: usize, v: u64) {
    h[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn get_u64(h: &[u8; HEADER_LEN], at: usize) -> u64 {
    u64::from_be_bytes(
        h[at..at + 8]
            .try_into()
            .expect("every field offset lies inside the fixed-size header"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProbePacket {
        ProbePacket::media(
            0x0123_4567_89ab_cdef,
            0x1122_3344_5566_7788,
            1_700_000_000_123_456_789,
            987_654_321,
        )
    }

    #[test]
    fn media_and_end_marker_round_trip() {
        let mut buf = [FILLER; DEFAULT_SIZE];
        for pkt in [
            sample(),
            ProbePacket::end_marker(7, 250, 1, 5_000_000_000),
            ProbePacket::media(u64::MAX, 0, 0, 0),
        ] {
            encode(&pkt, &mut buf).unwrap();
            assert_eq!(decode(&buf), Ok(pkt));
            assert_eq!(decode(&buf[..HEADER_LEN]), Ok(pkt), "filler is optional");
        }
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == FILLER));
    }

    #[test]
    fn looks_like_rtp_pcmu() {
        let mut buf = [0u8; DEFAULT_SIZE];
        let pkt = ProbePacket::media(0xaaaa_bbbb_cccc_dddd, 0x1_0005, 0, 20_000_000);
        encode(&pkt, &mut buf).unwrap();
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf[1], 0, "PCMU, no marker after the first packet");
        assert_eq!(buf[2..4], [0, 5]);
        assert_eq!(u32::from_be_bytes(buf[4..8].try_into().unwrap()), 160);
        assert_eq!(buf[8..12], [0xcc, 0xcc, 0xdd, 0xdd]);
        encode(&ProbePacket::media(1, 0, 0, 0), &mut buf).unwrap();
        assert_eq!(buf[1], 0x80, "marker bit on the first packet");
    }

    #[test]
    fn every_truncated_length_is_rejected() {
        let mut buf = [FILLER; DEFAULT_SIZE];
        encode(&sample(), &mut buf).unwrap();
        for len in 0..HEADER_LEN {
            assert_eq!(decode(&buf[..len]), Err(DecodeError::TooShort(len)));
        }
        assert!(decode(&buf[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn short_buffer_is_an_error_not_a_panic() {
        let mut buf = [0u8; HEADER_LEN - 1];
        assert_eq!(
            encode(&sample(), &mut buf),
            Err(BufferTooShort(HEADER_LEN - 1))
        );
    }

    #[test]
    fn wrong_magic_or_version_is_rejected() {
        let mut buf = [FILLER; DEFAULT_SIZE];
        encode(&sample(), &mut buf).unwrap();
        let mut bad = buf;
        bad[OFF_MAGIC] ^= 1;
        assert_eq!(decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = buf;
        bad[OFF_VERSION] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::BadVersion(2)));
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over lengths and contents.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 200];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if x % 3 == 0 {
                buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC);
                buf[OFF_VERSION] = VERSION;
            }
            let len = (x % 200) as usize;
            let _ = decode(&buf[..len]);
        }
    }
}
