//! Failed-login throttling per account and per client address.
//!
//! Counted in fixed windows. With Redis the counts are shared by the whole pool, so an attacker
//! gains nothing by reconnecting to another frontend. IPv6 clients are counted per /64, the
//! block a single subscriber usually holds.

pub mod memory;
pub mod redis;

use crate::lock::LockError;
use crate::names::AccountName;
use async_trait::async_trait;
use std::net::IpAddr;

/// Limits applied by every throttle backend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window: std::time::Duration,
    pub per_account: u32,
    pub per_address: u32,
}

/// Where failed logins are counted.
#[async_trait]
pub trait LoginThrottle: Send + Sync + 'static {
    /// Whether a login attempt may go ahead now.
    async fn allowed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<bool, LockError>;

    /// Counts a failed attempt.
    async fn failed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<(), LockError>;

    /// Records a login of `account` if its previous one is at least `min_interval` ago
    /// (RFC 2449 LOGIN-DELAY); `false` means too soon, and nothing is recorded.
    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, LockError>;
}

/// The key a client address is counted under.
pub fn address_key(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_per_64() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
