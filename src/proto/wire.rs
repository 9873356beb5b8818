//! Packet formats. Every datagram is parsed into a borrowed view after one length check; every
//! emitter writes into a caller-owned buffer. Nothing here allocates.
//!
//! All integers are little-endian. Layouts (byte offsets):
//!
//! ```text
//! HandshakeInit  0:type=1 1..4:zero 4..8:sender_tag   8..:noise message 1 (IK, 112 + payload)
//! HandshakeResp  0:type=2 1..4:zero 4..8:sender_tag   8..12:receiver_tag 12..:noise message 2
//! Data           0:type=4 1:epoch 2..4:zero 4..8:receiver_tag 8..16:counter 16..:ciphertext ‖ tag
//! Control        0:type=5 1:epoch 2..4:zero 4..8:receiver_tag 8..16:counter 16..:ciphertext ‖ tag
//! ```
//!
//! The 16-byte header of Data and Control is the AEAD's associated data, so no field that
//! steers processing is unauthenticated. `epoch` is the low byte of the key epoch.

/// Type byte of a handshake initiation.
pub const TYPE_HANDSHAKE_INIT: u8 = 1;
/// Type byte of a handshake response.
pub const TYPE_HANDSHAKE_RESP: u8 = 2;
/// Type byte of a data packet.
pub const TYPE_DATA: u8 = 4;
/// Type byte of a control packet.
pub const TYPE_CONTROL: u8 = 5;

/// Length of the Data / Control header (the associated data).
pub const HEADER_LEN: usize = 16;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes a data packet adds to the inner packet.
pub const DATA_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Payload carried inside the initiation: 12-byte timestamp (u64 seconds, u32 nanoseconds).
pub const INIT_PAYLOAD_LEN: usize = 12;
/// Noise IKpsk2 message 1 length with our payload: e (32) + s (32+16) + payload (12+16).
pub const INIT_NOISE_LEN: usize = 32 + 48 + INIT_PAYLOAD_LEN + TAG_LEN;
/// Full initiation length.
pub const INIT_LEN: usize = 8 + INIT_NOISE_LEN;
/// Noise message 2 length: e (32) + empty payload (16).
pub const RESP_NOISE_LEN: usize = 32 + TAG_LEN;
/// Full response length.
pub const RESP_LEN: usize = 12 + RESP_NOISE_LEN;

/// A routing tag: chosen by the receiver, it finds the session without the source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutingTag(pub u32);

/// A parsed datagram, borrowing from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    HandshakeInit {
        sender: RoutingTag,
        noise: &'a [u8],
    },
    HandshakeResp {
        sender: RoutingTag,
        receiver: RoutingTag,
        noise: &'a [u8],
    },
    /// Data or Control: `kind` is the type byte.
    /// A Data or Control packet; its epoch byte and counter are under header protection
    /// (only the session's keys can read them: `Session::open`).
    Sealed {
        kind: SealedKind,
        receiver: RoutingTag,
    },
}

/// Which key family opens a sealed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedKind {
    Data,
    Control,
}

impl SealedKind {
    fn type_byte(self) -> u8 {
        match self {
            SealedKind::Data => TYPE_DATA,
            SealedKind::Control => TYPE_CONTROL,
        }
    }
}

/// Why a datagram could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    UnknownType,
    BadLength,
    ReservedNotZero,
}

/// Parses a datagram. The sealed body is `bytes[HEADER_LEN..]` and is not touched here.
pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, ParseError> {
    let ty = *bytes.first().ok_or(ParseError::Empty)?;
    let min = match ty {
        TYPE_HANDSHAKE_INIT => INIT_LEN,
        TYPE_HANDSHAKE_RESP => RESP_LEN,
        TYPE_DATA | TYPE_CONTROL => DATA_OVERHEAD,
        _ => return Err(ParseError::UnknownType),
    };
    let exact = matches!(ty, TYPE_HANDSHAKE_INIT | TYPE_HANDSHAKE_RESP);
    if bytes.len() < min || (exact && bytes.len() != min) {
        return Err(ParseError::BadLength);
    }
    // Sealed packets carry their key epoch in byte 1 (authenticated as part of the header).
    let reserved = if exact { &bytes[1..4] } else { &bytes[2..4] };
    if reserved.iter().any(|&b| b != 0) {
        return Err(ParseError::ReservedNotZero);
    }
    let tag_at = |i: usize| {
        RoutingTag(u32::from_le_bytes([
            bytes[i],
            bytes[i + 1],
            bytes[i + 2],
            bytes[i + 3],
        ]))
    };
    Ok(match ty {
        TYPE_HANDSHAKE_INIT => Packet::HandshakeInit {
            sender: tag_at(4),
            noise: &bytes[8..],
        },
        TYPE_HANDSHAKE_RESP => Packet::HandshakeResp {
            sender: tag_at(4),
            receiver: tag_at(8),
            noise: &bytes[12..],
        },
        _ => Packet::Sealed {
            kind: if ty == TYPE_DATA {
                SealedKind::Data
            } else {
                SealedKind::Control
            },
            receiver: tag_at(4),
        },
    })
}

/// Writes a Data/Control header into `out[..HEADER_LEN]`.
pub fn write_sealed_header(
    out: &mut [u8],
    kind: SealedKind,
    epoch: u8,
    receiver: RoutingTag,
    counter: u64,
) {
    out[0] = kind.type_byte();
    out[1] = epoch;
    out[2..4].fill(0);
    out[4..8].copy_from_slice(&receiver.0.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

/// Writes the handshake-initiation header; the caller writes the Noise message at `out[8..]`.
pub fn write_init_header(out: &mut [u8], sender: RoutingTag) {
    out[0] = TYPE_HANDSHAKE_INIT;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&sender.0.to_le_bytes());
}

/// Writes the handshake-response header; the caller writes the Noise message at `out[12..]`.
pub fn write_resp_header(out: &mut [u8], sender: RoutingTag, receiver: RoutingTag) {
    out[0] = TYPE_HANDSHAKE_RESP;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&sender.0.to_le_bytes());
    out[8..12].copy_from_slice(&receiver.0.to_le_bytes());
}

/// The inner IP packet's source and destination, read without copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpEnds {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
}

/// Reads the addresses of an IPv4 or IPv6 packet; `None` if it is neither or too short.
pub fn ip_ends(packet: &[u8]) -> Option<IpEnds> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let a: [u8; 4] = packet[12..16].try_into().ok()?;
            let b: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(IpEnds {
                src: IpAddr::V4(Ipv4Addr::from(a)),
                dst: IpAddr::V4(Ipv4Addr::from(b)),
            })
        }
        6 if packet.len() >= 40 => {
            let a: [u8; 16] = packet[8..24].try_into().ok()?;
            let b: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(IpEnds {
                src: IpAddr::V6(Ipv6Addr::from(a)),
                dst: IpAddr::V6(Ipv6Addr::from(b)),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_header_round_trip() {
        let mut buf = [0u8; DATA_OVERHEAD + 3];
        write_sealed_header(
            &mut buf,
            SealedKind::Control,
            0,
            RoutingTag(0xdead_beef),
            77,
        );
        assert_eq!(
            parse(&buf),
            Ok(Packet::Sealed {
                kind: SealedKind::Control,
                receiver: RoutingTag(0xdead_beef),
            })
        );
    }

    #[test]
    fn every_truncated_length_is_rejected() {
        let mut init = [0u8; INIT_LEN];
        write_init_header(&mut init, RoutingTag(1));
        let mut resp = [0u8; RESP_LEN];
        write_resp_header(&mut resp, RoutingTag(1), RoutingTag(2));
        let mut data = [0u8; DATA_OVERHEAD];
        write_sealed_header(&mut data, SealedKind::Data, 0, RoutingTag(3), 0);
        for full in [&init[..], &resp[..], &data[..]] {
            assert!(parse(full).is_ok());
            for len in 0..full.len() {
                assert!(
                    parse(&full[..len]).is_err(),
                    "len {len} of type {}",
                    full[0]
                );
            }
        }
        // Handshakes have an exact length.
        let mut long = [0u8; INIT_LEN + 1];
        long[..INIT_LEN].copy_from_slice(&init);
        assert_eq!(parse(&long), Err(ParseError::BadLength));
    }

    #[test]
    fn handshake_sizes_match_the_protocol_document() {
        assert_eq!(INIT_LEN, 116);
        assert_eq!(RESP_LEN, 60);
        assert_eq!(DATA_OVERHEAD, 32);
    }

    #[test]
    fn unknown_type_and_reserved_bits() {
        assert_eq!(parse(&[9u8; 40]), Err(ParseError::UnknownType));
        let mut data = [0u8; DATA_OVERHEAD];
        write_sealed_header(&mut data, SealedKind::Data, 0, RoutingTag(3), 0);
        data[2] = 1;
        assert_eq!(parse(&data), Err(ParseError::ReservedNotZero));
        assert_eq!(parse(&[]), Err(ParseError::Empty));
    }

    #[test]
    fn ip_ends_of_v4_and_v6() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let e = ip_ends(&v4).unwrap();
        assert_eq!(e.src.to_string(), "10.0.0.1");
        assert_eq!(e.dst.to_string(), "10.0.0.2");
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[23] = 1;
        v6[39] = 2;
        let e = ip_ends(&v6).unwrap();
        assert_eq!(e.src.to_string(), "::1");
        assert_eq!(e.dst.to_string(), "::2");
        assert!(ip_ends(&v4[..19]).is_none());
        assert!(ip_ends(&v6[..39]).is_none());
        assert!(ip_ends(&[0x10; 40]).is_none());
    }
}
