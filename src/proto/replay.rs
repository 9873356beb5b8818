//! Sliding anti-replay window in the manner of RFC 6479: a ring of 64-bit words, O(1) per
//! check, memory fixed at construction. A counter is accepted once, and only if it is newer
//! than `newest - (size - 64)`; the last word of the ring is kept free so that advancing the
//! window clears whole words without touching live bits.
//!
//! The check is split in two so that a packet's counter is committed only after its AEAD tag
//! verifies: `check` says whether it would be accepted, `commit` records it.

/// Outcome of checking a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen and inside or ahead of the window.
    Fresh,
    /// Already accepted once.
    Duplicate,
    /// Older than the window can remember.
    TooOld,
}

/// The window. `size_bits` is a multiple of 64, at least 128.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    bitmap: Box<[u64]>,
    /// Highest accepted counter + 1 (0 = nothing accepted yet).
    next: u64,
}

impl ReplayWindow {
    /// A window remembering `size_bits - 64` counters below the newest.
    pub fn new(size_bits: usize) -> Self {
        assert!(
            size_bits >= 128 && size_bits % 64 == 0,
            "replay window size is validated by policy"
        );
        Self {
            bitmap: vec![0u64; size_bits / 64].into_boxed_slice(),
            next: 0,
        }
    }

    /// How many counters below the newest are remembered.
    pub fn span(&self) -> u64 {
        (self.bitmap.len() as u64 - 1) * 64
    }

    /// Whether `counter` would be accepted; changes nothing.
    pub fn check(&self, counter: u64) -> Verdict {
        if counter >= self.next {
            return Verdict::Fresh;
        }
        if self.next - counter > self.span() {
            return Verdict::TooOld;
        }
        let (word, bit) = self.position(counter);
        if self.bitmap[word] & (1 << bit) != 0 {
            Verdict::Duplicate
        } else {
            Verdict::Fresh
        }
    }

    /// Records `counter` as accepted. Call only after `check` said `Fresh` and the packet
    /// authenticated. Returns true when it advanced the newest counter.
    pub fn commit(&mut self, counter: u64) -> bool {
        let words = self.bitmap.len() as u64;
        let mut advanced = false;
        if counter >= self.next {
            let current_word = self.next.saturating_sub(1) / 64;
            let new_word = counter / 64;
            let to_clear = (new_word - current_word).min(words);
            for i in 1..=to_clear {
                let w = ((current_word + i) % words) as usize;
                self.bitmap[w] = 0;
            }
            if self.next == 0 {
                self.bitmap[(new_word % words) as usize] = 0;
            }
            self.next = counter + 1;
            advanced = true;
        }
        let (word, bit) = self.position(counter);
        self.bitmap[word] |= 1 << bit;
        advanced
    }

    /// Convenience: check and commit in one step.
    pub fn accept(&mut self, counter: u64) -> Verdict {
        let v = self.check(counter);
        if v == Verdict::Fresh {
            self.commit(counter);
        }
        v
    }

    /// The highest accepted counter, if any.
    pub fn newest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    fn position(&self, counter: u64) -> (usize, u32) {
        let words = self.bitmap.len() as u64;
        (((counter / 64) % words) as usize, (counter % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_once_and_rejects_duplicates() {
        let mut w = ReplayWindow::new(2048);
        assert_eq!(w.accept(0), Verdict::Fresh);
        assert_eq!(w.accept(0), Verdict::Duplicate);
        assert_eq!(w.accept(5), Verdict::Fresh);
        assert_eq!(w.accept(3), Verdict::Fresh);
        assert_eq!(w.accept(3), Verdict::Duplicate);
        assert_eq!(w.newest(), Some(5));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new(2048);
        let span = w.span();
        assert_eq!(span, 1984);
        assert_eq!(w.accept(10_000), Verdict::Fresh);
        // Exactly at the edge is remembered; one beyond is too old.
        assert_eq!(w.check(10_000 + 1 - span), Verdict::Fresh);
        assert_eq!(w.check(10_000 - span), Verdict::TooOld);
        assert_eq!(w.accept(10_001 - span), Verdict::Fresh);
        assert_eq!(w.accept(10_001 - span), Verdict::Duplicate);
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::new(256);
        for c in 0..150 {
            assert_eq!(w.accept(c), Verdict::Fresh);
        }
        assert_eq!(w.accept(1_000_000), Verdict::Fresh);
        // Counters that shared bit positions with old ones must not look like duplicates.
        for c in (1_000_000 - w.span() + 1)..1_000_000 {
            assert_eq!(w.check(c), Verdict::Fresh, "counter {c}");
        }
    }

    #[test]
    fn check_does_not_commit() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.check(7), Verdict::Fresh);
        assert_eq!(w.check(7), Verdict::Fresh);
        w.commit(7);
        assert_eq!(w.check(7), Verdict::Duplicate);
    }

    #[test]
    fn matches_a_reference_model() {
        // Against a set model with random-ish out-of-order counters.
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::new(2048);
        let mut seen = BTreeSet::new();
        let mut newest: Option<u64> = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (i + (x % 3000)).saturating_sub(1500);
            let expect = match newest {
                Some(n) if c + w.span() <= n => Verdict::TooOld,
                _ if seen.contains(&c) => Verdict::Duplicate,
                _ => Verdict::Fresh,
            };
            assert_eq!(w.accept(c), expect, "counter {c} newest {newest:?}");
            if expect == Verdict::Fresh {
                seen.insert(c);
                newest = Some(newest.map_or(c, |n| n.max(c)));
            }
        }
    }
}
