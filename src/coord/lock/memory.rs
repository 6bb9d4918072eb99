//! In-process maildrop leases for the embedded default (one server process).

use super::{LeaseToken, MaildropLocks};
use crate::coord::CoordError;
use crate::names::AccountName;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Leases in a map guarded by a mutex; expired entries are replaced on acquire.
#[derive(Debug, Default)]
pub struct MemoryLocks {
    leases: Mutex<HashMap<AccountName, (LeaseToken, Instant)>>,
    /// Delivery claims by (maildrop, scope).
    claims: Mutex<HashMap<(AccountName, String), (LeaseToken, Instant)>>,
}

impl MemoryLocks {
    pub fn new() -> Self {
        Self::default()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<AccountName, (LeaseToken, Instant)>> {
        crate::sync::lock(&self.leases)
    }
}

/// Microseconds since the epoch, or one more than the last fence handed out: increasing within
/// the process, and across restarts as long as the clock does not go back.
fn next_fence() -> u64 {
    static LAST: Mutex<u64> = Mutex::new(0);
    let now = crate::clock::unix_micros();
    let mut last = crate::sync::lock(&LAST);
    *last = now.max(*last + 1);
    *last
}

#[async_trait]
impl MaildropLocks for MemoryLocks {
    async fn ping(&self) -> Result<(), CoordError> {
        Ok(())
    }

    async fn claim(
        &self,
        maildrop: &AccountName,
        scope: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseToken>, CoordError> {
        let now = Instant::now();
        let mut claims = crate::sync::lock(&self.claims);
        claims.retain(|_, (_, expiry)| *expiry > now);
        let key = (maildrop.clone(), scope.to_owned());
        if claims.contains_key(&key) {
            return Ok(None);
        }
        let token = LeaseToken::generate();
        claims.insert(key, (token.clone(), now + ttl));
        Ok(Some(token))
    }

    async fn unclaim(&self, maildrop: &AccountName, scope: &str, token: &LeaseToken) -> Result<(), CoordError> {
        let mut claims = crate::sync::lock(&self.claims);
        let key = (maildrop.clone(), scope.to_owned());
        if claims.get(&key).is_some_and(|(held, _)| held == token) {
            claims.remove(&key);
        }
        Ok(())
    }

    async fn acquire(&self, maildrop: &AccountName, ttl: Duration) -> Result<Option<LeaseToken>, CoordError> {
        let now = Instant::now();
        let mut leases = self.leases();
        if leases.get(maildrop).is_some_and(|(_, expiry)| *expiry > now) {
            return Ok(None);
        }
        let token = LeaseToken::fenced(next_fence());
        leases.insert(maildrop.clone(), (token.clone(), now + ttl));
        Ok(Some(token))
    }

    async fn renew(&self, maildrop: &AccountName, token: &LeaseToken, ttl: Duration) -> Result<bool, CoordError> {
        let now = Instant::now();
        match self.leases().get_mut(maildrop) {
            Some((held, expiry)) if held == token && *expiry > now => {
                *expiry = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, maildrop: &AccountName, token: &LeaseToken) -> Result<(), CoordError> {
        let mut leases = self.leases();
        if leases.get(maildrop).is_some_and(|(held, _)| held == token) {
            leases.remove(maildrop);
        }
        Ok(())
    }

    async fn force_release(&self, maildrop: &AccountName) -> Result<bool, CoordError> {
        let now = Instant::now();
        Ok(self.leases().remove(maildrop).is_some_and(|(_, expiry)| expiry > now))
    }
}
