//! Inner packets, the IP packets the TUN device reads and writes. The rule both cores enforce:
//! a TUN packet is sealed only if it is IP and fits a datagram in place, and an opened packet
//! reaches the TUN device only if it is IP from a source the peer may use. Both checks work on
//! the caller's buffer and allocate nothing (the hot path).

use std::net::IpAddr;
use std::ops::Range;

use super::wire::{self, IpEnds, HEADER_LEN, TAG_LEN};
use super::{DropCounters, DropReason, Received};

/// The addresses of the TUN packet at `buf[HEADER_LEN..HEADER_LEN + len]` if it may be sealed
/// in place: it leaves room for the header and the tag, and it is IP. A refusal is counted.
pub(crate) fn to_seal(buf: &[u8], len: usize, drops: &mut DropCounters) -> Option<IpEnds> {
    if HEADER_LEN + len + TAG_LEN > buf.len() {
        drops.count(DropReason::TooLarge);
        return None;
    }
    let ends = wire::ip_ends(&buf[HEADER_LEN..HEADER_LEN + len]);
    if ends.is_none() {
        drops.count(DropReason::NotIp);
    }
    ends
}

/// Where the opened inner packet `inner` (at `range` of the datagram) goes: to the TUN device
/// if it is IP and `allowed` admits its source; otherwise nowhere, counted.
pub(crate) fn deliver(
    inner: &[u8],
    range: Range<usize>,
    allowed: impl FnOnce(IpAddr) -> bool,
    drops: &mut DropCounters,
) -> Received {
    match wire::ip_ends(inner) {
        Some(ends) if allowed(ends.src) => Received::Tun(range),
        Some(_) => {
            drops.count(DropReason::DisallowedSource);
            Received::Nothing
        }
        None => {
            drops.count(DropReason::NotIp);
            Received::Nothing
        }
    }
}
