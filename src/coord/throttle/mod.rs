//! Failed-login throttling per account and per client address.
//!
//! Counted in fixed windows. With Redis the counts are shared by the whole pool, so an attacker
//! gains nothing by reconnecting to another frontend. IPv6 clients are counted per /64, the
//! block a single subscriber usually holds.
//!
//! Every attempt is counted as a failure *before* its password is checked, in the same atomic
//! step as the check of the limits ([`LoginThrottle::reserve`]); a success takes its count back.
//! So parallel connections cannot all pass the check before any failure is counted: a window
//! allows `per_account` guesses at an account, not `max_connections`.
//!
//! An address that logged in to an account within [`TRUSTED_FOR`] is trusted for that account:
//! its attempts at that account are neither counted nor limited. Guesses from elsewhere can
//! exhaust the account's budget, but cannot lock its owner out from their usual address; and
//! nobody can earn that trust for an account without its password. Attempts from an untrusted
//! address count against the address and the account until answered.

pub mod memory;
pub mod redis;

use crate::coord::CoordError;
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

/// How long a successful login makes its address exempt from the account's failure limit.
pub const TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A login attempt admitted and counted as a failure until [`LoginThrottle::refund`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a successful or unchecked attempt must be refunded"]
pub struct Attempt {
    /// Whether the attempt was counted (false from an address trusted for the account).
    pub counted: bool,
}

/// Where failed logins are counted.
#[async_trait]
pub trait LoginThrottle: Send + Sync + 'static {
    /// Admits a login attempt and counts it as a failure, atomically with the check of the
    /// limits; `None` when a limit is reached (then nothing is counted).
    async fn reserve(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<Option<Attempt>, CoordError>;

    /// Takes back the count of an attempt that succeeded, or whose password was never checked.
    /// With `success`, `addr` becomes trusted for `account` for [`TRUSTED_FOR`].
    async fn refund(
        &self,
        account: &AccountName,
        addr: IpAddr,
        attempt: Attempt,
        success: bool,
    ) -> Result<(), CoordError>;

    /// Records a login of `account` if its previous one is at least `min_interval` ago
    /// (RFC 2449 LOGIN-DELAY); `false` means too soon, and nothing is recorded.
    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, CoordError>;
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
