//! Per-client connection slots: no single address (an IPv6 client's whole /64, which one host
//! can fill with addresses) may hold more than its share of the process's connections.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Open connections per client network, bounded.
#[derive(Debug)]
pub struct AddressSlots {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection's slot; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: IpAddr,
}

impl AddressSlots {
    /// At most `max` connections per client network.
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for a connection from `addr`, or `None` when its network has `max` open.
    pub fn try_acquire(self: &Arc<Self>, addr: IpAddr) -> Option<AddressSlot> {
        let key = network_of(addr);
        let mut open = crate::sync::lock(&self.open);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { slots: self.clone(), key })
    }

    /// Client networks with at least one open connection.
    pub fn networks(&self) -> usize {
        crate::sync::lock(&self.open).len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.slots.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection's address slot, held until the client logs in: the per-address limit bounds
/// unauthenticated connections, so the users behind one large NAT are not limited in how many
/// of them read mail at once (each is bounded by its own maildrop lock).
#[derive(Debug, Default)]
pub struct UntilLogin(Mutex<Option<AddressSlot>>);

impl UntilLogin {
    pub fn new(slot: Option<AddressSlot>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(slot)))
    }

    /// Gives the slot back (at login).
    pub fn release(&self) {
        crate::sync::lock(&self.0).take();
    }
}

/// The unit a client is counted by: an IPv4 address, or the /64 of an IPv6 address (IPv4-mapped
/// IPv6 addresses count as the IPv4 address).
pub fn network_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_per_ipv6_slash_64() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = slots.try_acquire(a).unwrap();
        let _second = slots.try_acquire("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert!(slots.try_acquire(a).is_none(), "a third from the same address");
        assert!(slots.try_acquire("192.0.2.2".parse().unwrap()).is_some(), "another address is not affected");
        drop(first);
        let _third = slots.try_acquire(a).unwrap();

        let _x = slots.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _y = slots.try_acquire("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap()).unwrap();
        assert!(slots.try_acquire("2001:db8:1:2:abcd::9".parse().unwrap()).is_none(), "same /64");
        assert!(slots.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_some(), "the next /64");
    }

    #[test]
    fn a_slot_held_until_login_is_given_back_at_login() {
        let slots = AddressSlots::new(1);
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        let held = UntilLogin::new(slots.try_acquire(a));
        assert!(slots.try_acquire(a).is_none());
        held.release();
        assert!(slots.try_acquire(a).is_some(), "the slot was kept after login");
    }

    #[test]
    fn the_table_forgets_networks_with_no_connection() {
        let slots = AddressSlots::new(1);
        let slot = slots.try_acquire("198.51.100.7".parse().unwrap()).unwrap();
        assert_eq!(slots.networks(), 1);
        drop(slot);
        assert_eq!(slots.networks(), 0);
    }
}
