//! The gateway's view of where one session lives: its binding to a remote address.
//!
//! Rules this module enforces (J4, RFC 9000 §9):
//! - only an authenticated, replay-checked packet carrying the newest counter of its family may
//!   move the binding, and probing messages never do;
//! - a new address is challenged; until it answers, at most 3× the bytes received from it are
//!   sent to it, and if it does not answer within the validation timeout the binding returns to
//!   the last validated address;
//! - an address left by an explicit reattach is *superseded*: packets from it are still
//!   accepted (in-flight data arrives) but never move the binding back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

const SUPERSEDED_KEPT: usize = 4;
const AMPLIFICATION: u64 = 3;

/// An outstanding path challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub addr: SocketAddr,
    pub token: [u8; 8],
    pub started: Instant,
    pub next_resend: Instant,
    /// Move the binding only when the challenge is answered (make-before-break reattach).
    pub move_on_success: bool,
    /// The reattach to acknowledge on success.
    pub reattach_seq: Option<u32>,
}

/// What happened when a challenge was answered or expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The address answered; the binding is now there, validated.
    Validated {
        reattach_seq: Option<u32>,
        moved: bool,
    },
    /// The address never answered; the binding went back to the last validated address.
    Reverted,
    /// The address never answered; the binding never moved (make-before-break).
    Abandoned { reattach_seq: Option<u32> },
}

/// Where a session is bound.
#[derive(Clone, Debug)]
pub struct Binding {
    current: SocketAddr,
    validated: bool,
    fallback: Option<SocketAddr>,
    superseded: VecDeque<SocketAddr>,
    challenge: Option<Challenge>,
    received_unvalidated: u64,
    sent_unvalidated: u64,
    /// Bumped by one on every move that was validated (the gateway's `state_version`).
    pub state_version: u64,
}

impl Binding {
    /// A binding learned from the handshake (validated: the handshake round trip proved it).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            current: addr,
            validated: true,
            fallback: None,
            superseded: VecDeque::new(),
            challenge: None,
            received_unvalidated: 0,
            sent_unvalidated: 0,
            state_version: 0,
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

    /// The outstanding challenge, if any.
    pub fn challenge(&self) -> Option<&Challenge> {
        self.challenge.as_ref()
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

    /// A non-probing packet with the newest counter came from `from`. Returns a challenge to
    /// send when the binding moved tentatively.
    pub fn on_newest(
        &mut self,
        from: SocketAddr,
        len: usize,
        token: [u8; 8],
        now: Instant,
    ) -> Option<[u8; 8]> {
        if from == self.current || self.superseded.contains(&from) {
            return None;
        }
        if Some(from) == self.fallback {
            // Back to the last validated address: no challenge needed.
            self.current = from;
            self.validated = true;
            self.fallback = None;
            self.challenge = None;
            return None;
        }
        if self
            .challenge
            .as_ref()
            .is_some_and(|c| c.move_on_success && c.addr == from)
        {
            // A make-before-break validation is already under way for this address.
            return None;
        }
        self.move_tentatively(from, now, token, None);
        self.received_unvalidated = len as u64;
        Some(token)
    }

    /// An authenticated reattach from `from`. With the old path alive the binding stays until
    /// `from` answers the challenge; otherwise it moves at once, tentatively.
    pub fn on_reattach(
        &mut self,
        from: SocketAddr,
        len: usize,
        old_path_alive: bool,
        seq: u32,
        token: [u8; 8],
        now: Instant,
    ) -> [u8; 8] {
        if old_path_alive {
            self.challenge = Some(Challenge {
                addr: from,
                token,
                started: now,
                next_resend: now,
                move_on_success: true,
                reattach_seq: Some(seq),
            });
        } else {
            let old = self.current;
            if old != from {
                self.supersede(old);
                self.move_tentatively(from, now, token, Some(seq));
                self.received_unvalidated = len as u64;
            } else {
                self.challenge = Some(Challenge {
                    addr: from,
                    token,
                    started: now,
                    next_resend: now,
                    move_on_success: false,
                    reattach_seq: Some(seq),
                });
            }
        }
        token
    }

    /// A path response with `token` arrived from `from`.
    pub fn on_response(&mut self, from: SocketAddr, token: [u8; 8]) -> Option<Validation> {
        let c = self.challenge.as_ref()?;
        if c.addr != from || c.token != token {
            return None;
        }
        let c = self.challenge.take().expect("checked above");
        let moved = c.move_on_success && self.current != from;
        if moved {
            let old = self.current;
            self.supersede(old);
            self.current = from;
        }
        if self.current == from {
            self.validated = true;
            self.fallback = None;
        }
        if moved || c.reattach_seq.is_some() {
            self.state_version += 1;
        }
        Some(Validation::Validated {
            reattach_seq: c.reattach_seq,
            moved: moved || c.reattach_seq.is_some(),
        })
    }

    /// Expires or resends the challenge. Returns a token to resend, or the outcome of expiry.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        timeout: std::time::Duration,
    ) -> (Option<(SocketAddr, [u8; 8])>, Option<Validation>) {
        let Some(c) = self.challenge.as_mut() else {
            return (None, None);
        };
        if now >= c.started + timeout {
            let c = self.challenge.take().expect("checked above");
            if c.move_on_success || self.current != c.addr {
                return (
                    None,
                    Some(Validation::Abandoned {
                        reattach_seq: c.reattach_seq,
                    }),
                );
            }
            if let Some(back) = self.fallback.take() {
                self.superseded.retain(|a| *a != back);
                self.current = back;
                self.validated = true;
            }
            return (None, Some(Validation::Reverted));
        }
        if now >= c.next_resend {
            c.next_resend = now + timeout / 4;
            return (Some((c.addr, c.token)), None);
        }
        (None, None)
    }

    /// When the challenge needs attention next.
    pub fn next_deadline(&self, timeout: std::time::Duration) -> Option<Instant> {
        self.challenge
            .as_ref()
            .map(|c| c.next_resend.min(c.started + timeout))
    }

    fn move_tentatively(&mut self, to: SocketAddr, now: Instant, token: [u8; 8], seq: Option<u32>) {
        if self.validated {
            self.fallback = Some(self.current);
        }
        self.current = to;
        self.validated = false;
        self.sent_unvalidated = 0;
        self.challenge = Some(Challenge {
            addr: to,
            token,
            started: now,
            next_resend: now,
            move_on_success: false,
            reattach_seq: seq,
        });
    }

    fn supersede(&mut self, addr: SocketAddr) {
        self.superseded.retain(|a| *a != addr);
        self.superseded.push_back(addr);
        while self.superseded.len() > SUPERSEDED_KEPT {
            self.superseded.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nat_rebinding_moves_tentatively_and_validates() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"));
        let t = b.on_newest(a("192.0.2.1:2000"), 100, [1; 8], now);
        assert_eq!(t, Some([1; 8]));
        assert_eq!(b.current(), a("192.0.2.1:2000"));
        assert!(!b.validated());
        // 3× budget of the 100 bytes received.
        assert!(b.may_send(300));
        assert!(!b.may_send(1));
        let v = b.on_response(a("192.0.2.1:2000"), [1; 8]);
        assert_eq!(
            v,
            Some(Validation::Validated {
                reattach_seq: None,
                moved: false
            })
        );
        assert!(b.may_send(10_000));
    }

    #[test]
    fn an_unanswered_challenge_reverts_to_the_validated_address() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"));
        b.on_newest(a("203.0.113.9:9"), 100, [2; 8], now);
        let (_, v) = b.on_timeout(now + Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(v, Some(Validation::Reverted));
        assert_eq!(b.current(), a("192.0.2.1:1000"));
        assert!(b.validated());
    }

    #[test]
    fn the_real_address_takes_the_binding_back_at_once() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"));
        b.on_newest(a("203.0.113.9:9"), 100, [2; 8], now);
        assert_eq!(b.on_newest(a("192.0.2.1:1000"), 100, [3; 8], now), None);
        assert_eq!(b.current(), a("192.0.2.1:1000"));
        assert!(b.validated());
    }

    #[test]
    fn make_before_break_moves_only_on_the_answer_and_supersedes_the_old_path() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"));
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
        assert_eq!(b.state_version, 1);
        // Late data from the old path does not move it back.
        assert_eq!(b.on_newest(a("192.0.2.1:1000"), 100, [5; 8], now), None);
        assert_eq!(b.current(), a("198.51.100.7:5"));
    }

    #[test]
    fn a_response_from_the_wrong_address_or_token_does_nothing() {
        let now = Instant::now();
        let mut b = Binding::new(a("192.0.2.1:1000"));
        b.on_reattach(a("198.51.100.7:5"), 300, false, 1, [4; 8], now);
        assert_eq!(b.on_response(a("203.0.113.9:9"), [4; 8]), None);
        assert_eq!(b.on_response(a("198.51.100.7:5"), [5; 8]), None);
        assert!(!b.validated());
    }
}
