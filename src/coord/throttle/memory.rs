//! Failed-login counts in this process only (the embedded default).

use super::{
    Admission, Attempt, AttemptId, IN_FLIGHT_FOR, Limits, LoginThrottle, Settlement, Subject, TRUSTED_FOR, Verdict,
    address_key, verdict,
};
use crate::coord::CoordError;
use crate::names::AccountName;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Budgets beyond this many are pruned of spent ones.
const PRUNE_AT: usize = 100_000;

pub struct MemoryThrottle {
    limits: Limits,
    counts: Mutex<Counts>,
    /// Last login per account and the interval it blocks.
    logins: Mutex<HashMap<AccountName, (Instant, Duration)>>,
}

/// One budget: failures in the current window, and the attempts in flight with when each
/// stops counting.
#[derive(Default)]
struct Budget {
    failures: u32,
    window_start: Option<Instant>,
    in_flight: HashMap<AttemptId, Instant>,
}

impl Budget {
    fn refresh(&mut self, window: Duration, now: Instant) {
        if self.window_start.is_some_and(|start| now.duration_since(start) >= window) {
            self.failures = 0;
            self.window_start = None;
        }
        self.in_flight.retain(|_, until| *until > now);
    }

    fn verdict(&self, limit: u32) -> Verdict {
        verdict(u64::from(self.failures), self.in_flight.len() as u64, limit)
    }

    fn spent(&self, window: Duration, now: Instant) -> bool {
        self.in_flight.is_empty() && self.window_start.is_none_or(|start| now.duration_since(start) >= window)
    }

    /// Ends an attempt; `fail` counts it if it was still in flight (so settling twice counts once).
    fn settle(&mut self, id: AttemptId, fail: bool, now: Instant) {
        if self.in_flight.remove(&id).is_some() && fail {
            self.window_start.get_or_insert(now);
            self.failures += 1;
        }
    }
}

#[derive(Default)]
struct Counts {
    budgets: HashMap<String, Budget>,
    /// (subject, address key) pairs with a recent successful login, and when it was.
    known: HashMap<(Subject, String), Instant>,
}

impl Counts {
    fn budget(&mut self, key: String, window: Duration, now: Instant) -> &mut Budget {
        let budget = self.budgets.entry(key).or_default();
        budget.refresh(window, now);
        budget
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

fn account_key(subject: &Subject, known: bool) -> String {
    format!("{}:{subject}", if known { "known" } else { "user" })
}

#[async_trait]
impl LoginThrottle for MemoryThrottle {
    async fn admit(&self, subject: &Subject, addr: IpAddr, id: AttemptId) -> Result<Admission, CoordError> {
        let mut counts = crate::sync::lock(&self.counts);
        let now = Instant::now();
        let window = self.limits.window;
        if counts.budgets.len() > PRUNE_AT {
            counts.budgets.retain(|_, budget| !budget.spent(window, now));
        }
        if counts.known.len() > PRUNE_AT {
            counts.known.retain(|_, at| now.duration_since(*at) < TRUSTED_FOR);
        }
        let known = counts
            .known
            .get(&(subject.clone(), address_key(addr)))
            .is_some_and(|at| now.duration_since(*at) < TRUSTED_FOR);
        let mut keys = vec![(account_key(subject, known), self.limit(known))];
        if !known {
            keys.push((ip_key(addr), self.limits.per_address));
        }
        let mut worst = Verdict::Admit;
        for (key, limit) in &keys {
            let budget = counts.budget(key.clone(), window, now);
            if budget.in_flight.contains_key(&id) {
                continue;
            }
            worst = match (worst, budget.verdict(*limit)) {
                (Verdict::Refused, _) | (_, Verdict::Refused) => Verdict::Refused,
                (Verdict::Wait, _) | (_, Verdict::Wait) => Verdict::Wait,
                _ => Verdict::Admit,
            };
        }
        Ok(match worst {
            Verdict::Refused => Admission::Refused,
            Verdict::Wait => Admission::Wait,
            Verdict::Admit => {
                for (key, _) in keys {
                    counts.budget(key, window, now).in_flight.insert(id, now + IN_FLIGHT_FOR);
                }
                Admission::Admitted(Attempt { id, known })
            }
        })
    }

    async fn settle(
        &self,
        subject: &Subject,
        addr: IpAddr,
        attempt: Attempt,
        settlement: Settlement,
    ) -> Result<(), CoordError> {
        let mut counts = crate::sync::lock(&self.counts);
        let now = Instant::now();
        let fail = settlement == Settlement::Failed;
        let mut keys = vec![account_key(subject, attempt.known)];
        if !attempt.known {
            keys.push(ip_key(addr));
        }
        for key in keys {
            if let Some(budget) = counts.budgets.get_mut(&key) {
                budget.refresh(self.limits.window, now);
                budget.settle(attempt.id, fail, now);
            }
        }
        if settlement == Settlement::Succeeded {
            counts.known.insert((subject.clone(), address_key(addr)), now);
        }
        Ok(())
    }

    async fn begin_login(&self, account: &AccountName, min_interval: Duration) -> Result<bool, CoordError> {
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

    async fn forget_login(&self, account: &AccountName) -> Result<(), CoordError> {
        crate::sync::lock(&self.logins).remove(account);
        Ok(())
    }
}

impl MemoryThrottle {
    fn limit(&self, known: bool) -> u32 {
        if known { self.limits.per_known_address } else { self.limits.per_account }
    }
}
