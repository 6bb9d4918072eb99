//! Password checks remembered across the pool (opt-in: `credential_cache_shared_secs`).
//!
//! The process's own cache ([`super::verified`]) spares a client that logs in again within a
//! minute on the same frontend. Real clients poll every 5 to 30 minutes through a balancer that
//! spreads them over the pool, so nearly every real login would miss it and pay a full
//! argon2id check. Here a successful check is also remembered in Redis for the pool.
//!
//! An entry is a tag, HMAC-SHA256 under the pool's key (`credential_cache_shared_key`, a
//! mounted Secret the same on every frontend) of the account name, the password and the
//! account's current password hash. Redis holds nothing else, and without the key nothing it
//! holds can be checked against a password. The hash in the tag ends every entry of an
//! account when its password changes, through any frontend. Disabled and deleted accounts are
//! refused before any cache is asked, as before. Only successes are remembered.
//!
//! The trade-off, stated in docs/accounts.md: whoever holds both the pool's key and a copy of
//! Redis can test guesses against the remembered entries at the cost of an HMAC, not of an
//! argon2id check, for as long as the entries live. Without the key, a copy of Redis is
//! worthless; without Redis, the key is.

use super::verified::tag;
use crate::coord::verified::VerifiedTags;
use aws_lc_rs::hmac;
use std::sync::Arc;
use std::time::Duration;

/// Domain separation: these tags are for nothing else.
const CONTEXT: &[u8] = b"cloudpop pool-verified credential v1";

/// The pool-wide tier of the verified-credential cache.
pub struct SharedVerified {
    key: hmac::Key,
    ttl: Duration,
    tags: Arc<dyn VerifiedTags>,
}

impl SharedVerified {
    pub fn new(pool_key: &[u8], ttl: Duration, tags: Arc<dyn VerifiedTags>) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, pool_key), ttl, tags }
    }

    fn tag(&self, user: &str, password: &str, phc: &str) -> String {
        let tag = tag(&self.key, &[CONTEXT, user.as_bytes(), password.as_bytes(), phc.as_bytes()]);
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether some frontend verified `password` for `user` while the account's hash was
    /// `phc`, within the TTL. Redis not answering is a miss (a full check), never a refusal.
    pub async fn hit(&self, user: &str, password: &str, phc: &str) -> bool {
        match self.tags.contains(&self.tag(user, password, phc)).await {
            Ok(hit) => hit,
            Err(e) => {
                tracing::debug!(error = %e, "pool-wide credential cache unavailable; checking the password");
                false
            }
        }
    }

    /// Remembers a successful check for the pool.
    pub async fn remember(&self, user: &str, password: &str, phc: &str) {
        if let Err(e) = self.tags.insert(&self.tag(user, password, phc), self.ttl).await {
            tracing::debug!(error = %e, "cannot remember a check for the pool");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::verified::MemoryVerified;

    #[tokio::test]
    async fn a_check_made_anywhere_holds_only_for_the_same_password_hash_and_key() {
        let tags: Arc<dyn VerifiedTags> = Arc::new(MemoryVerified::default());
        let key = [7u8; 32];
        let (one, other) = (
            SharedVerified::new(&key, Duration::from_secs(60), tags.clone()),
            SharedVerified::new(&key, Duration::from_secs(60), tags.clone()),
        );
        one.remember("alice", "pw", "$argon2id$one").await;
        assert!(other.hit("alice", "pw", "$argon2id$one").await, "another frontend with the same key");
        assert!(!other.hit("alice", "pW", "$argon2id$one").await, "another password");
        assert!(!other.hit("alice", "pw", "$argon2id$two").await, "the password was changed since");
        assert!(!other.hit("alicep", "w", "$argon2id$one").await, "the same bytes split differently");
        let stranger = SharedVerified::new(&[8u8; 32], Duration::from_secs(60), tags);
        assert!(!stranger.hit("alice", "pw", "$argon2id$one").await, "a pool with another key");
    }
}
