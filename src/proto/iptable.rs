//! Longest-prefix match from inner IP addresses to peers (`allowed_ips` / `routes`).
//! Lookup costs one ordered-map probe per distinct prefix length in use.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A prefix table mapping networks to values.
#[derive(Clone, Debug)]
pub struct IpTable<T> {
    /// (is_v6, prefix_len, network bits) → value.
    map: BTreeMap<(bool, u8, u128), T>,
    /// Distinct prefix lengths per family, longest first.
    lens_v4: Vec<u8>,
    lens_v6: Vec<u8>,
}

impl<T> Default for IpTable<T> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            lens_v4: Vec::new(),
            lens_v6: Vec::new(),
        }
    }
}

impl<T: Clone> IpTable<T> {
    /// Inserts a network (host bits are ignored); a later insert of the same network wins.
    pub fn insert(&mut self, net: IpNet, value: T) {
        let len = net.prefix_len();
        let (v6, bits) = key_bits(net.network(), len);
        self.map.insert((v6, len, bits), value);
        let lens = if v6 {
            &mut self.lens_v6
        } else {
            &mut self.lens_v4
        };
        if !lens.contains(&len) {
            lens.push(len);
            lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let lens = match addr {
            IpAddr::V4(_) => &self.lens_v4,
            IpAddr::V6(_) => &self.lens_v6,
        };
        lens.iter().find_map(|&len| {
            let (v6, bits) = key_bits(addr, len);
            self.map.get(&(v6, len, bits))
        })
    }

    /// Whether no network is present.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn key_bits(addr: IpAddr, len: u8) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => {
            let v = u32::from(a);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (false, u128::from(v & mask))
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (true, v & mask)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = IpTable::default();
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        t.insert("10.1.0.0/16".parse().unwrap(), 2);
        t.insert("10.1.2.3/32".parse().unwrap(), 3);
        t.insert("0.0.0.0/0".parse().unwrap(), 0);
        t.insert("fd00::/8".parse().unwrap(), 6);
        let l = |s: &str| t.lookup(s.parse().unwrap()).copied();
        assert_eq!(l("10.1.2.3"), Some(3));
        assert_eq!(l("10.1.2.4"), Some(2));
        assert_eq!(l("10.2.0.1"), Some(1));
        assert_eq!(l("192.0.2.1"), Some(0));
        assert_eq!(l("fd77::2"), Some(6));
        assert_eq!(l("2001:db8::1"), None);
    }
}
