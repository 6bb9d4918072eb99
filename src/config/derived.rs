//! Values derived from the settings: durations, paths, pool sizes, and advice about settings
//! that are valid but weaken a guarantee.

use super::{Config, StoreKind};
use std::path::PathBuf;
use std::time::Duration;

impl Config {
    /// Settings that are valid but weaken a guarantee, each as a sentence for the log.
    pub fn advice(&self) -> Vec<String> {
        let mut advice = Vec::new();
        let s3_worst = self.s3_timeout_secs * u64::from(self.s3_max_attempts) + 2;
        if self.store == StoreKind::S3 && self.lock_lease_secs <= s3_worst {
            advice.push(format!(
                "lock_lease_secs ({}) is not above s3_timeout_secs x s3_max_attempts ({s3_worst} s with the final \
                 margin): a maildrop index written by a holder whose lease then lapsed could land after the next \
                 holder started",
                self.lock_lease_secs
            ));
        }
        advice
    }

    /// The blocking pool's size: `blocking_threads`, or 64 plus the hashing pool's threads.
    pub fn blocking_threads(&self) -> usize {
        match self.blocking_threads {
            0 => 64 + self.hashing_threads_or_cores(),
            n => (n as usize).max(self.hashing_threads_or_cores() + 1),
        }
    }

    /// `hashing_threads`, or the cores the process may use when it is 0.
    pub fn hashing_threads_or_cores(&self) -> usize {
        match self.hashing_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        }
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs)
    }

    pub fn login_deadline(&self) -> Duration {
        Duration::from_secs(self.login_deadline_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| self.data_dir.join("spool"))
    }

    pub fn lock_lease(&self) -> Duration {
        Duration::from_secs(self.lock_lease_secs)
    }

    /// The URLs in `redis_url`.
    pub fn redis_urls(&self) -> impl Iterator<Item = &str> {
        self.redis_url.split([',', ' ', '\n']).map(str::trim).filter(|u| !u.is_empty())
    }
}
