//! Failed-login counts in this process only (the embedded default).

use super::{Limits, LoginThrottle, address_key};
use crate::lock::LockError;
use crate::names::AccountName;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Counters beyond this many are pruned of expired windows.
const PRUNE_AT: usize = 100_000;

pub struct MemoryThrottle {
    limits: Limits,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
    /// Last login per account and the interval it blocks.
    logins: Mutex<HashMap<AccountName, (Instant, std::time::Duration)>>,
}

impl MemoryThrottle {
    pub fn new(limits: Limits) -> Self {
        Self { limits, counts: Mutex::new(HashMap::new()), logins: Mutex::new(HashMap::new()) }
    }

    fn keys(account: Option<&AccountName>, addr: IpAddr) -> Vec<(String, bool)> {
        let mut keys = vec![(format!("ip:{}", address_key(addr)), false)];
        if let Some(account) = account {
            keys.push((format!("user:{account}"), true));
        }
        keys
    }
}

#[async_trait]
impl LoginThrottle for MemoryThrottle {
    async fn allowed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<bool, LockError> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        Ok(Self::keys(account, addr).iter().all(|(key, is_account)| {
            let limit = if *is_account { self.limits.per_account } else { self.limits.per_address };
            counts.get(key).is_none_or(|(n, start)| now.duration_since(*start) >= self.limits.window || *n < limit)
        }))
    }

    async fn failed(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<(), LockError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if counts.len() > PRUNE_AT {
            counts.retain(|_, (_, start)| now.duration_since(*start) < self.limits.window);
        }
        for (key, _) in Self::keys(account, addr) {
            let entry = counts.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) >= self.limits.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
        Ok(())
    }

    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, LockError> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if logins.len() > PRUNE_AT {
            logins.retain(|_, (at, interval)| now.duration_since(*at) < *interval);
        }
        if logins.get(account).is_some_and(|(at, _)| now.duration_since(*at) < min_interval) {
            return Ok(false);
        }
        logins.insert(account.clone(), (now, min_interval));
        Ok(true)
    }
}
