//! Bearer classes: the kind of network an uplink belongs to (wired, Wi-Fi, cellular, unknown).
//!
//! The core decides with them (standby probe cadence, switch reasons, events, audit records),
//! so the type lives here and the core imports nothing from `policy`; the policy classifies
//! interfaces into them and re-exports the type as `policy::BearerClass`.

use std::fmt;
use std::str::FromStr;

/// A kind of bearer an interface belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BearerClass {
    /// Ethernet and the like (`en*`, `eth*`).
    Wired,
    /// Wi-Fi (`wl*`).
    Wifi,
    /// Mobile data (`ww*`, `rmnet*`).
    Cellular,
    /// Anything no rule matched: usable, least preferred by default.
    Unknown,
}

impl BearerClass {
    /// Every class, in the default preference order.
    pub const ALL: [BearerClass; 4] = [
        BearerClass::Wired,
        BearerClass::Wifi,
        BearerClass::Cellular,
        BearerClass::Unknown,
    ];

    /// The lower-case name used in policy files and events.
    pub fn as_str(self) -> &'static str {
        match self {
            BearerClass::Wired => "wired",
            BearerClass::Wifi => "wifi",
            BearerClass::Cellular => "cellular",
            BearerClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for BearerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BearerClass {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        BearerClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}
