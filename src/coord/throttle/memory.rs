//! Failed-login counts in this process only (the embedded default).

use super::{Attempt, Limits, LoginThrottle, TRUSTED_FOR, address_key};
use crate::coord::CoordError;
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
    counts: Mutex<Counts>,
    /// Last login per account and the interval it blocks.
    logins: Mutex<HashMap<AccountName, (Instant, std::time::Duration)>>,
}

#[derive(Default)]
struct Counts {
    /// Failures per key, with the start of their window.
    failures: HashMap<String, (u32, Instant)>,
    /// (account, address key) pairs with a recent successful login, and when it was.
    trusted: HashMap<(AccountName, String), Instant>,
}

impl Counts {
    fn current(&self, key: &str, window: std::time::Duration, now: Instant) -> u32 {
        self.failures.get(key).filter(|(_, start)| now.duration_since(*start) < window).map_or(0, |(n, _)| *n)
    }

    fn add(&mut self, key: String, window: std::time::Duration, now: Instant) {
        let entry = self.failures.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn take_back(&mut self, key: &str) {
        if let Some((n, _)) = self.failures.get_mut(key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl MemoryThrottle {
    pub fn new(limits: Limits) -> Self {
        Self { limits, counts: Mutex::new(Counts::default()), logins: Mutex::new(HashMap::new()) }
    }
}

fn ip_key(addr: IpAddr) -> String {
    format!("ip:{}", address_key(addr))
}

fn user_key(account: &AccountName) -> String {
    format!("user:{account}")
}

#[async_trait]
impl LoginThrottle for MemoryThrottle {
    async fn reserve(&self, account: Option<&AccountName>, addr: IpAddr) -> Result<Option<Attempt>, CoordError> {
        let mut counts = crate::sync::lock(&self.counts);
        let now = Instant::now();
        let window = self.limits.window;
        if counts.failures.len() > PRUNE_AT {
            counts.failures.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
        if counts.trusted.len() > PRUNE_AT {
            counts.trusted.retain(|_, at| now.duration_since(*at) < TRUSTED_FOR);
        }
        let trusted = account.is_some_and(|account| {
            let pair = (account.clone(), address_key(addr));
            counts.trusted.get(&pair).is_some_and(|at| now.duration_since(*at) < TRUSTED_FOR)
        });
        if trusted {
            return Ok(Some(Attempt { counted: false }));
        }
        let ip = ip_key(addr);
        if counts.current(&ip, window, now) >= self.limits.per_address {
            return Ok(None);
        }
        if let Some(account) = account {
            let key = user_key(account);
            if counts.current(&key, window, now) >= self.limits.per_account {
                return Ok(None);
            }
            counts.add(key, window, now);
        }
        counts.add(ip, window, now);
        Ok(Some(Attempt { counted: true }))
    }

    async fn refund(
        &self,
        account: &AccountName,
        addr: IpAddr,
        attempt: Attempt,
        success: bool,
    ) -> Result<(), CoordError> {
        let mut counts = crate::sync::lock(&self.counts);
        if attempt.counted {
            counts.take_back(&ip_key(addr));
            counts.take_back(&user_key(account));
        }
        if success {
            counts.trusted.insert((account.clone(), address_key(addr)), Instant::now());
        }
        Ok(())
    }

    async fn begin_login(&self, account: &AccountName, min_interval: std::time::Duration) -> Result<bool, CoordError> {
        let mut logins = crate::sync::lock(&self.logins);
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
