//! The laptop's rekeys (new epoch keys from a fresh X25519 exchange under the session). The
//! rule: one rekey at a time and at most one per `min_rekey_interval`; a RekeyInit is resent
//! every `rekey::RETRY` up to `rekey::MAX_TRIES`, after which the next is held back for
//! `min_rekey_interval`; keys older than `key_max_age` end the session.

use std::time::{Duration, Instant};

use super::{Client, Earliest};
use crate::proto::control::ControlMessage;
use crate::proto::rekey::{self, Ephemeral, RekeyDenial, RekeyTrigger};
use crate::proto::state::Reason;
use crate::proto::{Event, Timer};

/// The rekey this laptop started, and how soon the next may start.
#[derive(Debug, Default)]
pub(super) struct Rekeying {
    /// Started and not answered by the gateway yet.
    pending: Option<rekey::Pending>,
    /// No rekey before this (after one that got no answer).
    next_allowed: Option<Instant>,
}

impl Rekeying {
    /// Why a rekey may not start now, for keys installed at `installed`.
    pub(super) fn denial(
        &self,
        installed: Instant,
        min_interval: Duration,
        now: Instant,
    ) -> Option<RekeyDenial> {
        if self.pending.is_some() {
            Some(RekeyDenial::InProgress)
        } else if now < installed + min_interval || self.next_allowed.is_some_and(|t| now < t) {
            Some(RekeyDenial::RateLimited)
        } else {
            None
        }
    }
}

impl Client {
    /// Starts the exchange for epoch `epoch` (the caller checked that one may start).
    pub(super) fn send_rekey_init(&mut self, epoch: u32, trigger: RekeyTrigger, now: Instant) {
        let ephemeral = Ephemeral::generate(&mut self.rng);
        let msg = ControlMessage::RekeyInit {
            epoch,
            public: ephemeral.public,
        };
        self.rekey.pending = Some(rekey::Pending {
            epoch,
            ephemeral,
            trigger,
            started: now,
            next_retry: now + rekey::RETRY,
            tries: 1,
        });
        self.send_control(self.paths.active(), msg, now);
    }

    /// Key expiry, rekey thresholds and RekeyInit retransmissions.
    pub(super) fn key_timers(&mut self, now: Instant) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let (session_id, epoch) = (s.id(), s.epoch());
        let limits = self.cfg.proto.keys.clone();
        let age = now.saturating_duration_since(s.key_installed());
        if age >= limits.key_max_age {
            self.out.event(Event::KeyExpired { session_id, epoch });
            self.terminate_current(Reason::KeyExpired, now);
            return;
        }
        let due = age >= limits.rekey_after || s.epoch_packets() >= limits.rekey_after_packets;
        match self.rekey.pending.as_mut() {
            Some(p) if now >= p.next_retry && p.tries >= rekey::MAX_TRIES => {
                let trigger = p.trigger;
                self.rekey.pending = None;
                self.rekey.next_allowed = Some(now + limits.min_rekey_interval);
                self.out.event(Event::RekeyDenied {
                    session_id,
                    trigger,
                    reason: RekeyDenial::NoResponse,
                });
            }
            Some(p) if now >= p.next_retry => {
                p.tries += 1;
                p.next_retry = now + rekey::RETRY;
                let msg = ControlMessage::RekeyInit {
                    epoch: p.epoch,
                    public: p.ephemeral.public,
                };
                self.send_control(self.paths.active(), msg, now);
            }
            Some(_) => {}
            None if due && self.rekey.next_allowed.is_none_or(|t| now >= t) => {
                self.start_rekey(RekeyTrigger::TimeElapsed, now)
            }
            None => {}
        }
    }

    /// Key expiry and the next rekey or RekeyInit resend.
    pub(super) fn rekey_deadlines(&self, next: &mut Earliest) {
        let Some(s) = &self.session else {
            return;
        };
        let k = &self.cfg.proto.keys;
        next.consider(s.key_installed() + k.key_max_age, Timer::Rekey);
        match &self.rekey.pending {
            Some(p) => next.consider(p.next_retry, Timer::Rekey),
            None => next.consider(
                (s.key_installed() + k.rekey_after)
                    .max(self.rekey.next_allowed.unwrap_or(s.created)),
                Timer::Rekey,
            ),
        }
    }

    /// The gateway's RekeyResp: the new epoch's keys are installed.
    pub(super) fn on_rekey_resp(&mut self, epoch: u32, public: &[u8; 32], now: Instant) {
        let Some(p) = self.rekey.pending.take_if(|p| p.epoch == epoch) else {
            // A retransmitted answer for an epoch already installed.
            return;
        };
        let Some(shared) = p.ephemeral.shared(public) else {
            self.bad_control(now);
            return;
        };
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.install_epoch(epoch, &shared, now);
        let session_id = s.id();
        self.out.event(Event::KeyRotated {
            session_id,
            epoch,
            trigger: p.trigger,
        });
    }
}
