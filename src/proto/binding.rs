//! The gateway's view of where one session lives: its binding to a remote address.
//!
//! Rules this module enforces (J4, RFC 9000 §9):
//! - only an authenticated, replay-checked packet carrying the newest counter of its family may
//!   move the binding, and probing messages never do;
//! - a new address is challenged; until it answers, at most 3× the bytes received from it are
//!   sent to it; if it does not answer within the validation timeout the binding returns to
//!   the last validated address;
//! - when a data packet moves the binding, the old address is challenged too: if it still
//!   answers, the move was a raced copy, so the binding goes back and the new address becomes
//!   a *suspect* that data alone can no longer move the binding to;
//! - an authenticated duplicate arriving from another address while the binding is tentative
//!   is evidence of a race: that address is challenged as a competitor, and if it answers it
//!   gets the binding;
//! - an address left by an explicit reattach is *superseded*: packets from it are still
//!   accepted (in-flight data arrives) but never move the binding back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REMEMBERED: usize = 8;
const AMPLIFICATION: u64 = 3;
const MAX_CHALLENGES: usize = 4;

/// Why an address is being challenged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The binding moved here tentatively.
    Tentative,
    /// A make-before-break reattach: move here only when it answers.
    MakeBeforeBreak,
    /// The address the binding left for a tentative one: does it still answer?
    OldPath,
    /// An address that sent an authenticated duplicate during a tentative move.
    Competitor,
}

/// An outstanding path challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub addr: SocketAddr,
    pub token: [u8; 8],
    pub purpose: Purpose,
    pub started: Instant,
    pub next_resend: Instant,
    /// The reattach to acknowledge when this address validates.
    pub reattach_seq: Option<u32>,
}

/// What a challenge's answer or expiry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The binding is now at a validated address; `moved` if that changed where it is.
    Validated {
        reattach_seq: Option<u32>,
        moved: bool,
    },
    /// The binding went back to the last validated address.
    Reverted { reattach_seq: Option<u32> },
    /// A make-before-break or competitor address never answered; nothing moved.
    Abandoned { reattach_seq: Option<u32> },
}

/// Where a session is bound.
#[derive(Clone, Debug)]
pub struct Binding {
    current: SocketAddr,
    validated: bool,
    /// The last address that answered a challenge (or the handshake).
    last_validated: SocketAddr,
    fallback: Option<SocketAddr>,
    superseded: VecDeque<SocketAddr>,
    suspects: VecDeque<SocketAddr>,
    challenges: Vec<Challenge>,
    received_unvalidated: u64,
    sent_unvalidated: u64,
    /// How long a challenge may go unanswered.
    timeout: Duration,
}

impl Binding {
    /// A binding learned from the handshake (validated: the handshake round trip proved it).
    /// Challenges are resent every quarter of `timeout` and expire after it.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            timeout,
            current: addr,
            validated: true,
            last_validated: addr,
            fallback: None,
            superseded: VecDeque::new(),
            suspects: VecDeque::new(),
            challenges: Vec::new(),
            received_unvalidated: 0,
            sent_unvalidated: 0,
        }
    }

    /// Where to send now.
    pub fn current(&self) -> SocketAddr {
        self.current
    }

    /// Whether the current address has proven it receives.
    pub fn validated(&self) -> bool {
        self.validated
    }

    /// Whether no challenge is outstanding.
    pub fn settled(&self) -> bool {
        self.challenges.is_empty()
    }

    /// Counts `len` bytes received from `from` (for the amplification budget).
    pub fn on_received(&mut self, from: SocketAddr, len: usize) {
        if from == self.current && !self.validated {
            self.received_unvalidated += len as u64;
        }
    }

    /// Whether `len` more bytes may be sent to the current address; counts them if so.
    pub fn may_send(&mut self, len: usize) -> bool {
        if self.validated {
            return true;
        }
        let after = self.sent_unvalidated + len as u64;
        if after > AMPLIFICATION * self.received_unvalidated {
            return false;
        }
        self.sent_unvalidated = after;
        true
    }

    /// A non-probing packet with the newest counter came from `from`. Returns the challenges
    /// to send (address, token).
    pub fn on_newest(
        &mut self,
        from: SocketAddr,
        len: usize,
        tokens: [[u8; 8]; 2],
        now: Instant,
    ) -> Vec<(SocketAddr, [u8; 8])> {
        if from == self.current || self.superseded.contains(&from) || self.suspects.contains(&from)
        {
            return Vec::new();
        }
        if Some(from) == self.fallback {
            // Back to the last validated address: no challenge needed.
            self.current = from;
            self.validated = true;
            self.fallback = None;
            self.challenges
                .retain(|c| c.purpose == Purpose::MakeBeforeBreak);
            return Vec::new();
        }
        if self
            .challenges
            .iter()
            .any(|c| c.addr == from && c.purpose == Purpose::MakeBeforeBreak)
        {
            return Vec::new();
        }
        let old = self.current;
        let was_validated = self.validated;
        self.move_tentatively(from, len, tokens[0], None, now);
        let mut out = vec![(from, tokens[0])];
        if was_validated {
            self.add(old, tokens[1], Purpose::OldPath, None, now);
            out.push((old, tokens[1]));
        }
        out
    }

    /// An authenticated duplicate came from `from`: during a tentative move, challenge it as a
    /// competitor. Returns the challenge to send.
    pub fn on_duplicate(
        &mut self,
        from: SocketAddr,
        reattach_seq: Option<u32>,
        token: [u8; 8],
        now: Instant,
    ) -> Option<(SocketAddr, [u8; 8])> {
        if self.validated || from == self.current || self.challenges.iter().any(|c| c.addr == from)
        {
            return None;
        }
        self.add(from, token, Purpose::Competitor, reattach_seq, now)
            .then_some((from, token))
    }

    /// An authenticated reattach from `from`. With the old path alive the binding stays until
    /// `from` answers; otherwise it moves at once, tentatively. Returns the challenge to send.
    pub fn on_reattach(
        &mut self,
        from: SocketAddr,
        len: usize,
        old_path_alive: bool,
        seq: u32,
        token: [u8; 8],
        now: Instant,
    ) -> (SocketAddr, [u8; 8]) {
        self.suspects.retain(|a| *a != from);
        if let Some(c) = self
            .challenges
            .iter()
            .find(|c| c.addr == from && c.purpose != Purpose::OldPath)
        {
            // A resent reattach: the challenge under way keeps its deadline (so a path that
            // never answers is given up within one validation timeout of the first request).
            return (c.addr, c.token);
        }
        if old_path_alive || from == self.current {
            let purpose = if from == self.current {
                Purpose::Tentative
            } else {
                Purpose::MakeBeforeBreak
            };
            self.challenges.retain(|c| c.addr != from);
            self.add(from, token, purpose, Some(seq), now);
        } else {
            let old = self.current;
            self.supersede(old);
            self.move_tentatively(from, len, token, Some(seq), now);
        }
        (from, token)
    }

    /// A path response with `token` arrived from `from`.
    pub fn on_response(&mut self, from: SocketAddr, token: [u8; 8]) -> Option<Validation> {
        let i = self
            .challenges
            .iter()
            .position(|c| c.addr == from && c.token == token)?;
        let c = self.challenges.remove(i);
        match c.purpose {
            Purpose::OldPath => {
                // The old address still answers: the move was a raced copy.
                let suspect = self.current;
                self.suspect(suspect);
                self.current = from;
                self.validated = true;
                self.fallback = None;
                let seq = self.take_all();
                Some(Validation::Reverted { reattach_seq: seq })
            }
            Purpose::Tentative | Purpose::MakeBeforeBreak | Purpose::Competitor => {
                let moved = self.last_validated != from || c.reattach_seq.is_some();
                self.last_validated = from;
                if self.current != from {
                    let old = self.current;
                    if c.purpose == Purpose::Competitor {
                        self.suspect(old);
                    } else {
                        self.supersede(old);
                    }
                }
                self.current = from;
                self.validated = true;
                self.fallback = None;
                let seq = c.reattach_seq.or(self.take_all());
                self.challenges.clear();
                Some(Validation::Validated {
                    reattach_seq: seq,
                    moved,
                })
            }
        }
    }

    /// Expires or resends challenges: returns the ones to resend and the outcomes of expiry.
    pub fn on_timeout(&mut self, now: Instant) -> (Vec<(SocketAddr, [u8; 8])>, Vec<Validation>) {
        let timeout = self.timeout;
        let mut resend = Vec::new();
        let mut outcomes = Vec::new();
        let mut i = 0;
        while i < self.challenges.len() {
            let c = &mut self.challenges[i];
            if now >= c.started + timeout {
                let c = self.challenges.remove(i);
                if c.purpose == Purpose::Tentative && self.current == c.addr && !self.validated {
                    if let Some(back) = self.fallback.take() {
                        self.suspect(c.addr);
                        self.current = back;
                        self.validated = true;
                        self.challenges
                            .retain(|o| o.purpose == Purpose::MakeBeforeBreak);
                    }
                    outcomes.push(Validation::Reverted {
                        reattach_seq: c.reattach_seq,
                    });
                } else if c.purpose != Purpose::OldPath {
                    outcomes.push(Validation::Abandoned {
                        reattach_seq: c.reattach_seq,
                    });
                }
                continue;
            }
            if now >= c.next_resend {
                c.next_resend = now + timeout / 4;
                resend.push((c.addr, c.token));
            }
            i += 1;
        }
        (resend, outcomes)
    }

    /// When the challenges need attention next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.challenges
            .iter()
            .map(|c| c.next_resend.min(c.started + self.timeout))
            .min()
    }

    fn move_tentatively(
        &mut self,
        to: SocketAddr,
        len: usize,
        token: [u8; 8],
        seq: Option<u32>,
        now: Instant,
    ) {
        if self.validated {
            self.fallback = Some(self.current);
        }
        self.current = to;
        self.validated = false;
        self.sent_unvalidated = 0;
        self.received_unvalidated = len as u64;
        self.challenges
            .retain(|c| c.purpose == Purpose::MakeBeforeBreak && c.addr != to);
        self.add(to, token, Purpose::Tentative, seq, now);
    }

    fn add(
        &mut self,
        addr: SocketAddr,
        token: [u8; 8],
        purpose: Purpose,
        reattach_seq: Option<u32>,
        now: Instant,
    ) -> bool {
        if self.challenges.len() >= MAX_CHALLENGES {
            return false;
        }
        self.challenges.push(Challenge {
            addr,
            token,
            purpose,
            started: now,
            // The caller sends the first one now; resends follow every quarter timeout.
            next_resend: now + self.timeout / 4,
            reattach_seq,
        });
        true
    }

    /// Drops every challenge, returning a reattach sequence number one of them carried.
    fn take_all(&mut self) -> Option<u32> {
        let seq = self.challenges.iter().find_map(|c| c.reattach_seq);
        self.challenges.clear();
        seq
    }

    fn supersede(&mut self, addr: SocketAddr) {
        push_bounded(&mut self.superseded, addr);
    }

    fn suspect(&mut self, addr: SocketAddr) {
        push_bounded(&mut self.suspects, addr);
    }
}

fn push_bounded(q: &mut VecDeque<SocketAddr>, addr: SocketAddr) {
    q.retain(|a| *a != addr);
    q.push_back(addr);
    while q.len() > REMEMBERED {
        q.pop_front();
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() is a test's epoch, nothing more.
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn nat_rebinding_moves_tentatively_and_validates() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        let out = b.on_newest(a("192.0.2.1:2000"), 100, [[1; 8], [2; 8]], now);
        assert_eq!(
            out,
            vec![(a("192.0.2.1:2000"), [1; 8]), (a("192.0.2.1:1000"), [2; 8])]
        );
        assert_eq!(b.current(), a("192.0.2.1:2000"));
        // 3× budget of the 100 bytes received.
        assert!(b.may_send(300));
        assert!(!b.may_send(1));
        let v = b.on_response(a("192.0.2.1:2000"), [1; 8]);
        assert_eq!(
            v,
            Some(Validation::Validated {
                reattach_seq: None,
                moved: true
            })
        );
        assert!(b.validated() && b.settled());
        assert!(b.may_send(10_000));
    }

    #[test]
    fn an_unanswered_challenge_reverts_to_the_validated_address() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        b.on_newest(a("203.0.113.9:9"), 100, [[2; 8], [3; 8]], now);
        let (_, v) = b.on_timeout(now + 2 * T);
        assert_eq!(v, vec![Validation::Reverted { reattach_seq: None }]);
        assert_eq!(b.current(), a("192.0.2.1:1000"));
        assert!(b.validated());
    }

    #[test]
    fn an_old_path_that_still_answers_exposes_a_raced_copy() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        b.on_newest(a("203.0.113.9:9"), 100, [[2; 8], [3; 8]], now);
        let v = b.on_response(a("192.0.2.1:1000"), [3; 8]);
        assert_eq!(v, Some(Validation::Reverted { reattach_seq: None }));
        assert_eq!(b.current(), a("192.0.2.1:1000"));
        // The racer is a suspect now: its copies no longer move the binding.
        assert!(b
            .on_newest(a("203.0.113.9:9"), 100, [[4; 8], [5; 8]], now)
            .is_empty());
        assert_eq!(b.current(), a("192.0.2.1:1000"));
    }

    #[test]
    fn a_competitor_that_answers_takes_the_binding_from_a_racer() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        // Break-before-make reattach raced by an attacker: the copy arrives first.
        b.on_reattach(a("203.0.113.9:9"), 300, false, 7, [1; 8], now);
        // The laptop's own reattach is a duplicate from its new address.
        let c = b.on_duplicate(a("198.51.100.7:5"), Some(7), [2; 8], now);
        assert_eq!(c, Some((a("198.51.100.7:5"), [2; 8])));
        let v = b.on_response(a("198.51.100.7:5"), [2; 8]);
        assert_eq!(
            v,
            Some(Validation::Validated {
                reattach_seq: Some(7),
                moved: true
            })
        );
        assert_eq!(b.current(), a("198.51.100.7:5"));
        assert!(b
            .on_newest(a("203.0.113.9:9"), 100, [[3; 8], [4; 8]], now)
            .is_empty());
    }

    #[test]
    fn make_before_break_moves_only_on_the_answer_and_supersedes_the_old_path() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        b.on_reattach(a("198.51.100.7:5"), 300, true, 9, [4; 8], now);
        assert_eq!(b.current(), a("192.0.2.1:1000"));
        let v = b.on_response(a("198.51.100.7:5"), [4; 8]);
        assert_eq!(
            v,
            Some(Validation::Validated {
                reattach_seq: Some(9),
                moved: true
            })
        );
        assert_eq!(b.current(), a("198.51.100.7:5"));
        // Late data from the old path does not move it back.
        assert!(b
            .on_newest(a("192.0.2.1:1000"), 100, [[5; 8], [6; 8]], now)
            .is_empty());
        assert_eq!(b.current(), a("198.51.100.7:5"));
    }

    #[test]
    fn a_response_from_the_wrong_address_or_token_does_nothing() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"), T);
        b.on_reattach(a("198.51.100.7:5"), 300, false, 1, [4; 8], now);
        assert_eq!(b.on_response(a("203.0.113.9:9"), [4; 8]), None);
        assert_eq!(b.on_response(a("198.51.100.7:5"), [5; 8]), None);
        assert!(!b.validated());
    }
}
