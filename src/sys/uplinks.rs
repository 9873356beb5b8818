//! Bearer watching (J1, J2): netlink change notifications are only triggers; on each one the
//! watcher re-reads links, addresses and the route to the gateway through every link, builds a
//! sorted snapshot of usable uplinks, and reports it only if it differs from the last one.
//! (An address delete or a link down can remove IPv4 routes without a route-delete message;
//! re-reading everything covers that.)

use std::io;
use std::net::IpAddr;

use super::netlink::{NetlinkError, Rtnl, Watcher};
use crate::policy::BearerPolicy;
use crate::proto::path::Uplink;
use crate::proto::UplinkId;

/// Watches the system's bearers for one gateway endpoint.
pub struct UplinkWatch {
    watcher: Watcher,
    rtnl: Rtnl,
    gateway: IpAddr,
    /// Our own TUN device, never an uplink.
    exclude: u32,
    bearers: BearerPolicy,
    last: Option<Vec<Uplink>>,
}

impl UplinkWatch {
    /// Subscribes to changes. Call inside the runtime.
    pub fn open(
        gateway: IpAddr,
        exclude: u32,
        bearers: BearerPolicy,
    ) -> Result<Self, NetlinkError> {
        Ok(Self {
            watcher: Watcher::open()?,
            rtnl: Rtnl::open()?,
            gateway,
            exclude,
            bearers,
            last: None,
        })
    }

    /// The current snapshot (and remembers it as the last one reported).
    pub fn snapshot(&mut self) -> Result<Vec<Uplink>, NetlinkError> {
        let links = self.rtnl.links()?;
        let addrs = self.rtnl.addresses()?;
        let family_v4 = self.gateway.is_ipv4();
        let mut out = Vec::new();
        for l in links
            .into_iter()
            .filter(|l| l.up && !l.loopback && l.index != self.exclude)
        {
            let has_addr = addrs
                .iter()
                .any(|(i, a)| *i == l.index && a.is_ipv4() == family_v4);
            if !has_addr || !self.rtnl.has_route_via(self.gateway, l.index) {
                continue;
            }
            let class = self.bearers.classify(&l.name);
            out.push(Uplink {
                id: UplinkId(l.index),
                rank: self.bearers.rank(class),
                class,
                name: l.name,
            });
        }
        out.sort();
        self.last = Some(out.clone());
        Ok(out)
    }

    /// Waits until the usable uplinks differ from the last snapshot, and returns the new one.
    pub async fn next_change(&mut self) -> io::Result<Vec<Uplink>> {
        loop {
            self.watcher.changed().await?;
            let previous = self.last.clone();
            match self.snapshot() {
                Ok(now) if Some(&now) != previous.as_ref() => return Ok(now),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "re-reading uplinks failed; waiting for the next change")
                }
            }
        }
    }
}
