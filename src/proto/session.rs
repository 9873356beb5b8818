//! One established session's crypto state: keys of the current epoch, send counters, and the
//! replay windows. A packet counts as received only when its tag verifies *and* its counter
//! is fresh; only then is the counter committed to the window.

use std::ops::Range;
use std::time::Instant;

use super::keys::{EpochKeys, SessionId, SessionRoot};
use super::replay::{ReplayWindow, Verdict};
use super::wire::{self, RoutingTag, SealedKind, HEADER_LEN, TAG_LEN};
use super::DropReason;

/// A sending counter never reaches this: past it the session must be replaced.
pub const COUNTER_LIMIT: u64 = u64::MAX - (1 << 16);

/// Counters an operator sees in `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub replays: u64,
    pub auth_failures: u64,
}

/// An established session.
#[derive(Debug)]
pub struct Session {
    root: SessionRoot,
    keys: EpochKeys,
    /// Tag the peer puts on packets to us.
    pub local_tag: RoutingTag,
    /// Tag we put on packets to the peer.
    pub remote_tag: RoutingTag,
    data_counter: u64,
    control_counter: u64,
    data_window: ReplayWindow,
    control_window: ReplayWindow,
    pub created: Instant,
    pub last_recv: Instant,
    pub last_send: Instant,
    pub stats: SessionStats,
}

/// An authenticated packet's plaintext and what it was.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub kind: SealedKind,
    /// Plaintext range inside the datagram buffer.
    pub plaintext: Range<usize>,
    pub counter: u64,
    /// The counter is the newest ever accepted in its family.
    pub newest: bool,
    /// It authenticated but its counter was already accepted (only with `allow_duplicate`).
    pub duplicate: bool,
}

impl Session {
    /// Wraps a fresh handshake's root.
    pub fn new(
        root: SessionRoot,
        initiator: bool,
        local_tag: RoutingTag,
        remote_tag: RoutingTag,
        replay_window_bits: usize,
        now: Instant,
    ) -> Self {
        let keys = EpochKeys::derive(&root, 0, initiator);
        Self {
            root,
            keys,
            local_tag,
            remote_tag,
            data_counter: 0,
            control_counter: 0,
            data_window: ReplayWindow::new(replay_window_bits),
            control_window: ReplayWindow::new(replay_window_bits),
            created: now,
            last_recv: now,
            last_send: now,
            stats: SessionStats::default(),
        }
    }

    /// The SessionID.
    pub fn id(&self) -> SessionId {
        self.root.session_id()
    }

    /// Seals `buf[HEADER_LEN..HEADER_LEN + len]` in place as a Data packet and returns the
    /// datagram length. `buf` must have room for the tag. Returns `None` when the counter is
    /// exhausted (the session must be replaced).
    pub fn seal_data(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<usize> {
        let counter = next_counter(&mut self.data_counter)?;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        self.last_send = now;
        Some(seal(
            &self.keys.send.data,
            SealedKind::Data,
            self.remote_tag,
            counter,
            buf,
            len,
        ))
    }

    /// Seals a control message into `buf` (which must hold header + msg + tag).
    pub fn seal_control(&mut self, msg: &[u8], buf: &mut [u8], now: Instant) -> Option<usize> {
        let counter = next_counter(&mut self.control_counter)?;
        buf[HEADER_LEN..HEADER_LEN + msg.len()].copy_from_slice(msg);
        self.last_send = now;
        Some(seal(
            &self.keys.send.control,
            SealedKind::Control,
            self.remote_tag,
            counter,
            buf,
            msg.len(),
        ))
    }

    /// Opens a parsed Data/Control datagram in place. A duplicate is refused unless
    /// `allow_duplicate`: then it is authenticated (to serve as evidence of a race) but not
    /// counted as received, and the caller must not deliver it.
    pub fn open(
        &mut self,
        kind: SealedKind,
        counter: u64,
        datagram: &mut [u8],
        now: Instant,
        allow_duplicate: bool,
    ) -> Result<Opened, DropReason> {
        let (key, window) = match kind {
            SealedKind::Data => (&self.keys.recv.data, &mut self.data_window),
            SealedKind::Control => (&self.keys.recv.control, &mut self.control_window),
        };
        let duplicate = match window.check(counter) {
            Verdict::Fresh => false,
            Verdict::Duplicate if allow_duplicate => true,
            Verdict::Duplicate | Verdict::TooOld => {
                self.stats.replays += 1;
                return Err(DropReason::Replay);
            }
        };
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let n = match key.open(counter, header, body) {
            Ok(n) => n,
            Err(_) => {
                self.stats.auth_failures += 1;
                return Err(DropReason::AuthFailed);
            }
        };
        if duplicate {
            self.stats.replays += 1;
            return Ok(Opened {
                kind,
                plaintext: HEADER_LEN..HEADER_LEN + n,
                counter,
                newest: false,
                duplicate: true,
            });
        }
        let newest = window.commit(counter);
        self.last_recv = now;
        if kind == SealedKind::Data {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += n as u64;
        }
        Ok(Opened {
            kind,
            plaintext: HEADER_LEN..HEADER_LEN + n,
            counter,
            newest,
            duplicate: false,
        })
    }

    /// Data packets sent so far (the next data counter).
    pub fn data_sent(&self) -> u64 {
        self.data_counter
    }
}

fn next_counter(c: &mut u64) -> Option<u64> {
    if *c >= COUNTER_LIMIT {
        return None;
    }
    let v = *c;
    *c += 1;
    Some(v)
}

fn seal(
    key: &super::keys::AeadKey,
    kind: SealedKind,
    tag: RoutingTag,
    counter: u64,
    buf: &mut [u8],
    len: usize,
) -> usize {
    wire::write_sealed_header(buf, kind, tag, counter);
    let (header, body) = buf.split_at_mut(HEADER_LEN);
    key.seal(counter, header, body, len);
    HEADER_LEN + len + TAG_LEN
}
