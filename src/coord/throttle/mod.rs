//! Failed-login throttling per account and per client address.
//!
//! Counted in fixed windows. With Redis the counts are shared by the whole pool, so an attacker
//! gains nothing by reconnecting to another frontend. IPv6 clients are counted per /64, the
//! block a single subscriber usually holds.
//!
//! Only failures consume a budget. An attempt whose password is still being checked is *in
//! flight*: it is admitted only while the failures so far plus the attempts in flight stay
//! under the budget, in the same atomic step as the check ([`LoginThrottle::admit`]). An
//! attempt beyond that waits ([`Admission::Wait`]) for those in flight to settle, so parallel
//! guessing is bounded by the budget exactly as serial guessing is, while correct logins from
//! one busy address (a NAT, a webmail host) are only queued, never refused as failures.
//! [`LoginThrottle::settle`] ends an attempt: a failure is counted then, a success or an
//! attempt never checked is not. An attempt nobody settles (its frontend died) stops counting
//! as in flight after [`IN_FLIGHT_FOR`].
//!
//! Both calls carry the attempt's id, so a call the Redis client sends twice (a retry after a
//! timeout) counts once.
//!
//! The account side is counted under a [`Subject`]: the login name normalised (trimmed, case
//! folded), or, with a directory, what the directory is asked for (the LDAP filter the login
//! expands to), so the spellings of one directory user share one budget.
//!
//! An address that logged in to an account within [`TRUSTED_FOR`] is *known* for that account:
//! its attempts at that account count against a separate, larger budget
//! ([`Limits::per_known_address`]) shared by the account's known addresses, and not against the
//! address. Guesses from elsewhere can exhaust the account's budget but cannot lock its owner
//! out from their usual address; guesses from behind the owner's NAT are bounded by the larger
//! budget; and nobody can make an address known for an account without its password.

pub mod memory;
pub mod redis;

use crate::coord::CoordError;
use async_trait::async_trait;
use std::net::IpAddr;
use std::time::Duration;

/// Limits applied by every throttle backend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window: Duration,
    /// Failures per account from addresses it does not know.
    pub per_account: u32,
    /// Failures per address (IPv6: per /64).
    pub per_address: u32,
    /// Failures per account from all of its known addresses together.
    pub per_known_address: u32,
}

/// How long a successful login makes its address known for the account.
pub const TRUSTED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long an admitted attempt counts as in flight if nobody settles it.
pub const IN_FLIGHT_FOR: Duration = Duration::from_secs(60);

/// Who an attempt's account-side count is kept for: a normalised login name, or a digest of a
/// longer or unusual one (so keys stay short and safe in a Redis hash tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    /// The subject of a login name: trimmed and case-folded, so `Alice ` and `alice` share a
    /// budget.
    pub fn of_login(login: &str) -> Self {
        Self::of_identity(&login.trim().to_lowercase())
    }

    /// The subject of an identity already normalised by its owner (a directory filter).
    pub fn of_identity(identity: &str) -> Self {
        let plain = identity.len() <= 64
            && !identity.is_empty()
            && identity.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+@=".contains(&b));
        if plain {
            return Self(identity.to_owned());
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.as_bytes());
        let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("#{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attempt's id, unique across the pool (random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub u64);

impl AttemptId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("operating system random source");
        Self(u64::from_le_bytes(bytes))
    }
}

/// An admitted attempt, in flight until settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an admitted attempt must be settled"]
pub struct Attempt {
    pub id: AttemptId,
    /// From an address known for the account: counted against the known addresses' budget
    /// and not against the address.
    pub known: bool,
}

/// The throttle's answer to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted(Attempt),
    /// The budget left is taken by attempts in flight: ask again once they settle.
    Wait,
    /// Too many failures: refused, and nothing is counted.
    Refused,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Succeeded,
    Failed,
    /// The credentials were never checked (the check could not be made, or the client left).
    Unchecked,
}

/// Where failed logins are counted.
#[async_trait]
pub trait LoginThrottle: Send + Sync + 'static {
    /// Admits attempt `id` at `subject` from `addr` as in flight, atomically with the check of
    /// the budgets. Asking again with the same id answers the same without counting twice.
    async fn admit(&self, subject: &Subject, addr: IpAddr, id: AttemptId) -> Result<Admission, CoordError>;

    /// Ends an admitted attempt: no longer in flight; a failure is counted; a success makes
    /// `addr` known for `subject` for [`TRUSTED_FOR`]. Settling twice counts once.
    async fn settle(
        &self,
        subject: &Subject,
        addr: IpAddr,
        attempt: Attempt,
        settlement: Settlement,
    ) -> Result<(), CoordError>;

    /// Records a login of `account` if its previous one is at least `min_interval` ago
    /// (RFC 2449 LOGIN-DELAY); `false` means too soon, and nothing is recorded.
    async fn begin_login(
        &self,
        account: &crate::names::AccountName,
        min_interval: Duration,
    ) -> Result<bool, CoordError>;

    /// Takes back the login [`Self::begin_login`] recorded, when it did not happen after all (the
    /// maildrop could not be listed): the user may try again at once.
    async fn forget_login(&self, account: &crate::names::AccountName) -> Result<(), CoordError>;
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

/// One budget's verdict: refused at `failures >= limit`, wait while failures and attempts in
/// flight fill it, else admit. The one rule both backends apply (Redis in Lua, below).
pub fn verdict(failures: u64, in_flight: u64, limit: u32) -> Verdict {
    let limit = u64::from(limit);
    if failures >= limit {
        Verdict::Refused
    } else if failures + in_flight >= limit {
        Verdict::Wait
    } else {
        Verdict::Admit
    }
}

/// See [`verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    Wait,
    Refused,
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

    #[test]
    fn spellings_of_one_login_share_a_subject() {
        assert_eq!(Subject::of_login("Alice@Example.com "), Subject::of_login("alice@example.com"));
        assert_eq!(Subject::of_login(" alice"), Subject::of_login("ALICE"));
        let odd = Subject::of_login("al{ice}\u{0}");
        assert!(odd.as_str().starts_with('#') && odd.as_str().len() == 33, "{odd}");
        assert_ne!(odd, Subject::of_login("al{ice}"));
    }

    #[test]
    fn in_flight_attempts_wait_and_failures_refuse() {
        assert_eq!(verdict(0, 0, 3), Verdict::Admit);
        assert_eq!(verdict(1, 1, 3), Verdict::Admit);
        assert_eq!(verdict(1, 2, 3), Verdict::Wait);
        assert_eq!(verdict(0, 3, 3), Verdict::Wait);
        assert_eq!(verdict(3, 0, 3), Verdict::Refused);
        assert_eq!(verdict(0, 0, 0), Verdict::Refused);
    }
}
