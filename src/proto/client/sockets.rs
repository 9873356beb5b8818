//! The laptop's sockets, owned by the core: one per uplink of the last bearer snapshot, plus
//! the moving target's generations (J10). The rule: the driver opens or closes a socket only
//! on a [`SocketChange`] queued here, and this set is the one record of which sockets are
//! open, so each is opened once and closed once. The unbound default socket is not in it:
//! the driver opens that one at start, on both nodes.

use std::collections::{BTreeSet, VecDeque};

use crate::proto::path::Uplink;
use crate::proto::{SocketChange, UplinkId};

/// The sockets the core asked for and not closed since, and the changes not polled yet.
#[derive(Debug, Default)]
pub(super) struct OpenSockets {
    open: BTreeSet<UplinkId>,
    changes: VecDeque<SocketChange>,
}

impl OpenSockets {
    /// Follows a bearer snapshot: every socket (any generation) of an uplink that left it is
    /// closed, and an uplink without a socket gets generation 0. An uplink keeps whichever
    /// generation the moving target moved it to.
    pub(super) fn follow(&mut self, snapshot: &[Uplink]) {
        let gone: Vec<UplinkId> = self
            .open
            .iter()
            .copied()
            .filter(|id| !snapshot.iter().any(|u| u.id == id.interface()))
            .collect();
        for id in gone {
            self.close(id);
        }
        for u in snapshot {
            if !self.open.iter().any(|id| id.interface() == u.id) {
                self.open(u.id, &u.name);
            }
        }
    }

    /// Asks for socket `id` on interface `device` (nothing if it is open).
    pub(super) fn open(&mut self, id: UplinkId, device: &str) {
        if self.open.insert(id) {
            self.changes.push_back(SocketChange::Open {
                id,
                device: device.to_string(),
            });
        }
    }

    /// Asks to close socket `id` (nothing if it is not open).
    pub(super) fn close(&mut self, id: UplinkId) {
        if self.open.remove(&id) {
            self.changes.push_back(SocketChange::Close(id));
        }
    }

    /// The next change for the driver.
    pub(super) fn poll(&mut self) -> Option<SocketChange> {
        self.changes.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bearer::BearerClass;

    fn uplink(id: u32, name: &str) -> Uplink {
        Uplink {
            id: UplinkId(id),
            name: name.into(),
            class: BearerClass::Wifi,
            rank: 1,
        }
    }

    fn drain(s: &mut OpenSockets) -> Vec<SocketChange> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    #[test]
    fn a_snapshot_opens_new_uplinks_once_and_closes_every_generation_of_gone_ones() {
        let mut s = OpenSockets::default();
        s.follow(&[uplink(2, "wlan0")]);
        let open = |id: UplinkId, device: &str| SocketChange::Open {
            id,
            device: device.into(),
        };
        assert_eq!(drain(&mut s), [open(UplinkId(2), "wlan0")]);
        let moved = UplinkId(2).next_generation();
        s.open(moved, "wlan0");
        s.close(UplinkId(2));
        drain(&mut s);
        s.follow(&[uplink(2, "wlan0"), uplink(3, "wwan0")]);
        assert_eq!(drain(&mut s), [open(UplinkId(3), "wwan0")]);
        s.open(moved.next_generation(), "wlan0");
        drain(&mut s);
        s.follow(&[uplink(3, "wwan0")]);
        assert_eq!(
            drain(&mut s),
            [
                SocketChange::Close(moved),
                SocketChange::Close(moved.next_generation())
            ]
        );
        s.close(moved);
        assert_eq!(drain(&mut s), []);
    }
}
