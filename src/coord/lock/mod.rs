//! Maildrop locks as leases (RFC 1939 exclusive access), in domain terms.
//!
//! A lease has an owner token and an expiry. The holder renews it while its session lives and
//! releases it with compare-and-delete, so a crashed holder's lease frees itself in time and a
//! holder that lost its lease can never release someone else's.
//!
//! Every maildrop lease also carries a fencing number: larger for each later holder of the same
//! maildrop, pool-wide. What a holder writes for others to read later (the S3 backend's maildrop
//! index) is stamped with it, so a holder that lost its lease without noticing can never pass
//! off an older view as the newest.

pub mod held;
pub mod memory;
pub mod redis;

use super::CoordError;
use crate::names::AccountName;
use async_trait::async_trait;
use std::time::Duration;

/// Proof of holding a maildrop lock; opaque to everyone but the backend that issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseToken(pub String);

impl std::fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self(random_hex())
    }

    /// A fresh random token carrying `fence`.
    pub fn fenced(fence: u64) -> Self {
        Self(format!("{fence}.{}", random_hex()))
    }

    /// The fencing number of a maildrop lease (0 for a token that carries none, such as a
    /// delivery claim).
    pub fn fence(&self) -> u64 {
        self.0.split_once('.').and_then(|(fence, _)| fence.parse().ok()).unwrap_or(0)
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("operating system random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cluster-wide (or process-wide) exclusive access to maildrops.
#[async_trait]
pub trait MaildropLocks: Send + Sync + 'static {
    /// Takes the lock for `ttl` if nobody holds it; `None` if it is held. The token's
    /// [`LeaseToken::fence`] is larger than that of every earlier lease on the maildrop.
    async fn acquire(&self, maildrop: &AccountName, ttl: Duration) -> Result<Option<LeaseToken>, CoordError>;

    /// Extends a lease we hold; `false` if it is no longer ours (expired and maybe taken).
    async fn renew(&self, maildrop: &AccountName, token: &LeaseToken, ttl: Duration) -> Result<bool, CoordError>;

    /// Releases a lease if it is still ours.
    async fn release(&self, maildrop: &AccountName, token: &LeaseToken) -> Result<(), CoordError>;

    /// Removes whatever lease is held (an operator freeing a stuck maildrop); whether one was.
    /// The session that held it notices at its next renewal and ends without changes.
    async fn force_release(&self, maildrop: &AccountName) -> Result<bool, CoordError>;

    /// The cheapest request that proves the lock service answers (a readiness probe).
    async fn ping(&self) -> Result<(), CoordError>;

    /// Takes a short exclusive claim on `scope` within a maildrop (a delivery's idempotency key
    /// or kept UIDL) for `ttl`, so that two attempts of one delivery cannot both check and then
    /// both store; `None` while another attempt holds it. Independent of the maildrop's lock.
    async fn claim(&self, maildrop: &AccountName, scope: &str, ttl: Duration)
    -> Result<Option<LeaseToken>, CoordError>;

    /// Gives up a claim if it is still ours.
    async fn unclaim(&self, maildrop: &AccountName, scope: &str, token: &LeaseToken) -> Result<(), CoordError>;
}
