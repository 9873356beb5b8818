//! The TUN device: created with tun-rs, configured (addresses, routes, link up) over netlink.

use std::io;

use ipnet::IpNet;

use super::netlink::{NetlinkError, Rtnl};

/// Errors creating or configuring the TUN device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("failed to create TUN device {name}: {error}{hint}")]
    Create {
        name: String,
        error: io::Error,
        hint: &'static str,
    },
    #[error("failed to configure TUN device {name}: {error}")]
    Configure { name: String, error: NetlinkError },
}

/// A configured TUN device.
pub struct Tun {
    /// Non-blocking; the packet loop waits for it with `poll(2)`, outside the async runtime.
    pub device: tun_rs::SyncDevice,
    pub name: String,
    pub index: u32,
}

impl Tun {
    /// Creates `name` with `mtu`, assigns `addresses`, routes `routes` through it, sets it up.
    pub fn create(
        name: &str,
        mtu: u16,
        addresses: &[IpNet],
        routes: &[IpNet],
    ) -> Result<Self, TunError> {
        let device = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .build_sync()
            .and_then(|d| d.set_nonblocking(true).map(|()| d))
            .map_err(|error| TunError::Create {
                name: name.to_owned(),
                hint: hint(&error),
                error,
            })?;
        let index = device.if_index().map_err(|error| TunError::Create {
            name: name.to_owned(),
            hint: "",
            error,
        })?;
        let configure = |error| TunError::Configure {
            name: name.to_owned(),
            error,
        };
        let mut rtnl = Rtnl::open().map_err(configure)?;
        for a in addresses {
            rtnl.add_address(index, *a).map_err(configure)?;
        }
        rtnl.set_link_up(index).map_err(configure)?;
        for r in routes {
            rtnl.add_route(index, *r).map_err(configure)?;
        }
        Ok(Self {
            device,
            name: name.to_owned(),
            index,
        })
    }
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (creating a TUN device needs CAP_NET_ADMIN: run as root or `setcap cap_net_admin+ep` the binary)"
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) => " (is /dev/net/tun present? try `modprobe tun`)",
        Some(libc::EBUSY) => " (a device with this name exists and is in use; pick another [tunnel] name)",
        _ => "",
    }
}
