//! One established session's crypto state: keys per epoch, send counters, replay windows and
//! the rekey bookkeeping. A packet counts as received only when its tag verifies *and* its
//! counter is fresh; only then is the counter committed to the window.
//!
//! Rekey (S6): the header's epoch byte names the key epoch a packet is sealed under. Besides the
//! current epoch a receiver keeps the previous one for a bounded grace (in-flight packets are
//! not lost) and, on the responder, the next one from the moment it answered a rekey; the first
//! packet under the next epoch promotes it. The SessionID never changes.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::keys::{EpochKeys, HeaderKey, SessionId, SessionRoot};
use super::path_tags::PathTags;
use super::replay::{ReplayWindow, Verdict};
use super::wire::{self, RoutingTag, SealedKind, HEADER_LEN, TAG_LEN};
use super::DropReason;

/// A sending counter never reaches this: past it the epoch must be replaced.
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

/// The keys, counters and windows of one key epoch.
#[derive(Debug)]
struct Epoch {
    number: u32,
    keys: EpochKeys,
    data_counter: u64,
    control_counter: u64,
    data_window: ReplayWindow,
    control_window: ReplayWindow,
    installed: Instant,
}

impl Epoch {
    fn new(root: &SessionRoot, number: u32, initiator: bool, bits: usize, now: Instant) -> Self {
        Self {
            number,
            keys: EpochKeys::derive(root, number, initiator),
            data_counter: 0,
            control_counter: 0,
            data_window: ReplayWindow::new(bits),
            control_window: ReplayWindow::new(bits),
            installed: now,
        }
    }

    fn tag_byte(&self) -> u8 {
        (self.number & 0xff) as u8
    }
}

/// An established session.
#[derive(Debug)]
pub struct Session {
    root: SessionRoot,
    initiator: bool,
    window_bits: usize,
    current: Epoch,
    previous: Option<(Epoch, Instant)>,
    next: Option<(Epoch, SessionRoot)>,
    /// How long a replaced epoch still opens packets.
    grace: Duration,
    /// The tags of each path, and the path data is sent on.
    path_tags: PathTags,
    /// Header protection: (send, receive).
    header_keys: (HeaderKey, HeaderKey),
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
    /// The counter is the newest ever accepted in its family (in the current epoch).
    pub newest: bool,
    /// It authenticated but its counter was already accepted (only with `allow_duplicate`).
    pub duplicate: bool,
    /// It was the first packet under the next epoch, which is now current.
    pub promoted: Option<u32>,
}

impl Session {
    /// Wraps a fresh handshake's root (epoch 0); the handshake's tags are path 0's.
    pub fn new(
        root: SessionRoot,
        initiator: bool,
        local_tag: RoutingTag,
        remote_tag: RoutingTag,
        replay_window_bits: usize,
        now: Instant,
    ) -> Self {
        let current = Epoch::new(&root, 0, initiator, replay_window_bits, now);
        let path_tags = PathTags::new(root.path_tag_key(), initiator, (local_tag, remote_tag));
        let header_keys = root.header_keys(initiator);
        Self {
            header_keys,
            path_tags,
            root,
            initiator,
            window_bits: replay_window_bits,
            current,
            previous: None,
            next: None,
            grace: Duration::from_secs(5),
            created: now,
            last_recv: now,
            last_send: now,
            stats: SessionStats::default(),
        }
    }

    /// The routing tags of the session's paths (J11): each path (a bearer, or a new source
    /// port) uses its own pair, so captures of two paths share no tag.
    pub fn path_tags(&self) -> &PathTags {
        &self.path_tags
    }

    /// The path tags, to issue a path or choose the one data goes on.
    pub fn path_tags_mut(&mut self) -> &mut PathTags {
        &mut self.path_tags
    }

    /// The (epoch byte, counter) of a datagram this session sealed, with the header
    /// protection removed (diagnostics and tests; `datagram` is not changed).
    pub fn sent_header(&self, datagram: &[u8]) -> Option<(u8, u64)> {
        if datagram.len() < HEADER_LEN + TAG_LEN || !matches!(datagram[0], 4 | 5) {
            return None;
        }
        let mut copy = datagram.to_vec();
        self.header_keys.0.apply(&mut copy);
        Some((
            copy[1],
            u64::from_le_bytes(copy[8..16].try_into().expect("8 bytes")),
        ))
    }

    /// Sets how long a replaced epoch still opens packets.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// The SessionID.
    pub fn id(&self) -> SessionId {
        self.root.session_id()
    }

    /// The current key epoch.
    pub fn epoch(&self) -> u32 {
        self.current.number
    }

    /// When the current epoch's keys were installed.
    pub fn key_installed(&self) -> Instant {
        self.current.installed
    }

    /// Packets (data and control) sent under the current epoch.
    pub fn epoch_packets(&self) -> u64 {
        self.current.data_counter + self.current.control_counter
    }

    /// Seals `buf[HEADER_LEN..HEADER_LEN + len]` in place as a Data packet on the chosen path
    /// ([`PathTags::choose`]) and returns the datagram length. `buf` must have room for the tag. Returns `None` when the counter is
    /// exhausted (the session must be replaced).
    pub fn seal_data(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<usize> {
        self.seal_data_to(self.path_tags.send_tag(), buf, len, now)
    }

    fn seal_data_to(
        &mut self,
        tag: RoutingTag,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Option<usize> {
        let e = &mut self.current;
        let counter = next_counter(&mut e.data_counter)?;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        self.last_send = now;
        Some(seal(
            &self.header_keys.0,
            &e.keys.send.data,
            SealedKind::Data,
            e.tag_byte(),
            tag,
            counter,
            buf,
            len,
        ))
    }

    /// Seals a control message into `buf` (which must hold header + msg + tag), for the path
    /// whose receiving tag is `tag`.
    fn seal_control(
        &mut self,
        tag: RoutingTag,
        msg: &[u8],
        buf: &mut [u8],
        now: Instant,
    ) -> Option<usize> {
        let e = &mut self.current;
        let counter = next_counter(&mut e.control_counter)?;
        buf[HEADER_LEN..HEADER_LEN + msg.len()].copy_from_slice(msg);
        self.last_send = now;
        Some(seal(
            &self.header_keys.0,
            &e.keys.send.control,
            SealedKind::Control,
            e.tag_byte(),
            tag,
            counter,
            buf,
            msg.len(),
        ))
    }

    /// An owned, sealed Control datagram carrying `msg` (off the hot path) for the path whose
    /// receiving tag is `tag`. `None` when the control counter is exhausted.
    pub fn control_packet(
        &mut self,
        msg: super::control::ControlMessage,
        tag: RoutingTag,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let mut body = [0u8; super::control::REATTACH_LEN];
        let len = msg.encode(&mut body);
        let mut buf = vec![0u8; HEADER_LEN + len + TAG_LEN];
        let n = self.seal_control(tag, &body[..len], &mut buf, now)?;
        buf.truncate(n);
        Some(buf)
    }

    /// An owned, sealed Control datagram carrying the plaintext `plain` (variable-length
    /// messages such as an AuditRecord). `None` when the control counter is exhausted.
    pub fn control_packet_bytes(
        &mut self,
        plain: &[u8],
        tag: RoutingTag,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN + plain.len() + TAG_LEN];
        let n = self.seal_control(tag, plain, &mut buf, now)?;
        buf.truncate(n);
        Some(buf)
    }

    /// An owned, sealed empty Data datagram (a keepalive) for the path whose receiving tag is
    /// `tag`.
    pub fn keepalive_packet(&mut self, tag: RoutingTag, now: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN + TAG_LEN];
        let n = self.seal_data_to(tag, &mut buf, 0, now)?;
        buf.truncate(n);
        Some(buf)
    }

    /// Opens a parsed Data/Control datagram in place. A duplicate is refused unless
    /// `allow_duplicate`: then it is authenticated (to serve as evidence of a race) but not
    /// counted as received, and the caller must not deliver it.
    /// The header protection is removed first (in place): the epoch byte and counter are then
    /// the sender's.
    pub fn open(
        &mut self,
        kind: SealedKind,
        datagram: &mut [u8],
        now: Instant,
        allow_duplicate: bool,
    ) -> Result<Opened, DropReason> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        self.header_keys.1.apply(datagram);
        let counter = u64::from_le_bytes(datagram[8..16].try_into().expect("8 bytes"));
        let tag = datagram[1];
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.previous = None;
        }
        let Session {
            current,
            previous,
            next,
            stats,
            last_recv,
            ..
        } = self;
        let (e, which) = if tag == current.tag_byte() {
            (current, EpochRole::Current)
        } else if let Some((e, _)) = previous.as_mut().filter(|(e, _)| e.tag_byte() == tag) {
            (e, EpochRole::Previous)
        } else if let Some((e, _)) = next.as_mut().filter(|(e, _)| e.tag_byte() == tag) {
            (e, EpochRole::Next)
        } else {
            stats.auth_failures += 1;
            return Err(DropReason::AuthFailed);
        };
        let mut o = open_in(
            e,
            stats,
            last_recv,
            kind,
            counter,
            datagram,
            now,
            allow_duplicate,
        )?;
        match which {
            // The newest counter of a replaced epoch never moves anything.
            EpochRole::Previous => o.newest = false,
            // The peer's first packet under the prepared epoch makes it current.
            EpochRole::Next if !o.duplicate => {
                self.promote(now);
                o.promoted = Some(self.current.number);
            }
            _ => {}
        }
        Ok(o)
    }

    /// Initiator: installs epoch `number` derived with `dh` and sends under it at once; the old
    /// epoch still opens packets for the grace period.
    pub fn install_epoch(&mut self, number: u32, dh: &[u8; 32], now: Instant) {
        let root = self.root.rekey(dh, number);
        let epoch = Epoch::new(&root, number, self.initiator, self.window_bits, now);
        let old = std::mem::replace(&mut self.current, epoch);
        self.previous = Some((old, now + self.grace));
        self.root = root;
        self.next = None;
    }

    /// Responder: prepares epoch `number` to open packets; it becomes current (and is used for
    /// sending) when the first packet under it arrives.
    pub fn prepare_epoch(&mut self, number: u32, dh: &[u8; 32], now: Instant) {
        let root = self.root.rekey(dh, number);
        let epoch = Epoch::new(&root, number, self.initiator, self.window_bits, now);
        self.next = Some((epoch, root));
    }

    /// The epoch prepared by `prepare_epoch` and not yet in use, if any.
    pub fn prepared_epoch(&self) -> Option<u32> {
        self.next.as_ref().map(|(e, _)| e.number)
    }

    fn promote(&mut self, now: Instant) {
        let Some((epoch, root)) = self.next.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.current, epoch);
        self.previous = Some((old, now + self.grace));
        self.root = root;
    }

    /// Data packets sent so far in the current epoch (the next data counter).
    pub fn data_sent(&self) -> u64 {
        self.current.data_counter
    }
}

/// Which of a session's epochs a packet's epoch byte names.
#[derive(Clone, Copy)]
enum EpochRole {
    Current,
    Previous,
    Next,
}

#[allow(clippy::too_many_arguments)]
fn open_in(
    e: &mut Epoch,
    stats: &mut SessionStats,
    last_recv: &mut Instant,
    kind: SealedKind,
    counter: u64,
    datagram: &mut [u8],
    now: Instant,
    allow_duplicate: bool,
) -> Result<Opened, DropReason> {
    let (key, window) = match kind {
        SealedKind::Data => (&e.keys.recv.data, &mut e.data_window),
        SealedKind::Control => (&e.keys.recv.control, &mut e.control_window),
    };
    let duplicate = match window.check(counter) {
        Verdict::Fresh => false,
        Verdict::Duplicate if allow_duplicate => true,
        Verdict::Duplicate | Verdict::TooOld => {
            stats.replays += 1;
            return Err(DropReason::Replay);
        }
    };
    let (header, body) = datagram.split_at_mut(HEADER_LEN);
    let n = match key.open(counter, header, body) {
        Ok(n) => n,
        Err(_) => {
            stats.auth_failures += 1;
            return Err(DropReason::AuthFailed);
        }
    };
    let plaintext = HEADER_LEN..HEADER_LEN + n;
    if duplicate {
        stats.replays += 1;
        return Ok(Opened {
            kind,
            plaintext,
            counter,
            newest: false,
            duplicate: true,
            promoted: None,
        });
    }
    let newest = window.commit(counter);
    *last_recv = now;
    if kind == SealedKind::Data {
        stats.rx_packets += 1;
        stats.rx_bytes += n as u64;
    }
    Ok(Opened {
        kind,
        plaintext,
        counter,
        newest,
        duplicate: false,
        promoted: None,
    })
}

fn next_counter(c: &mut u64) -> Option<u64> {
    if *c >= COUNTER_LIMIT {
        return None;
    }
    let v = *c;
    *c += 1;
    Some(v)
}

#[allow(clippy::too_many_arguments)]
fn seal(
    hp: &HeaderKey,
    key: &super::keys::AeadKey,
    kind: SealedKind,
    epoch: u8,
    tag: RoutingTag,
    counter: u64,
    buf: &mut [u8],
    len: usize,
) -> usize {
    wire::write_sealed_header(buf, kind, epoch, tag, counter);
    let (header, body) = buf.split_at_mut(HEADER_LEN);
    key.seal(counter, header, body, len);
    let n = HEADER_LEN + len + TAG_LEN;
    hp.apply(&mut buf[..n]);
    n
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() is a test's epoch, nothing more.
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Session, Session) {
        let root = || SessionRoot::new(&[7; 32], (&[1; 32], &[2; 32]));
        let laptop = Session::new(root(), true, RoutingTag(10), RoutingTag(20), 2048, now);
        let gateway = Session::new(root(), false, RoutingTag(20), RoutingTag(10), 2048, now);
        (laptop, gateway)
    }

    #[test]
    fn header_protection_hides_epoch_and_counter_and_the_keys_read_them() {
        let now = Instant::now();
        let (mut laptop, mut gateway) = pair(now);
        let mut clear = Vec::new();
        for i in 0..64u64 {
            let mut buf = vec![0u8; HEADER_LEN + 5 + TAG_LEN];
            let n = laptop.seal_data(&mut buf, 5, now).unwrap();
            buf.truncate(n);
            assert_eq!(laptop.sent_header(&buf), Some((0, i)), "packet {i}");
            clear.push(u64::from_le_bytes(buf[8..16].try_into().unwrap()));
            let o = gateway
                .open(SealedKind::Data, &mut buf, now, false)
                .unwrap();
            assert_eq!(o.counter, i);
        }
        assert!(clear.windows(2).all(|w| w[1] != w[0] + 1), "{clear:?}");
    }

    #[test]
    fn data_is_sealed_under_the_chosen_paths_tag() {
        let now = Instant::now();
        let (mut laptop, _) = pair(now);
        let mut buf = vec![0u8; HEADER_LEN + 5 + TAG_LEN];
        let tag_of = |buf: &[u8]| RoutingTag(u32::from_le_bytes(buf[4..8].try_into().unwrap()));
        laptop.seal_data(&mut buf, 5, now).unwrap();
        assert_eq!(tag_of(&buf), RoutingTag(20), "the handshake path");
        laptop.path_tags_mut().choose(2);
        laptop.seal_data(&mut buf, 5, now).unwrap();
        assert_eq!(tag_of(&buf), laptop.path_tags().pair(2).1);
    }
}
