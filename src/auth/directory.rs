//! What a directory backend (LDAP, HTTP) answers, how a login name becomes a mailbox name,
//! and the circuit breaker in front of a directory.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest login name sent to a directory, in bytes; longer ones fail without a call.
pub const MAX_LOGIN_LEN: usize = 256;

/// A directory's answer for a good password of an enabled user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The mailbox the directory names; without one, `auth_mailbox_format` makes it.
    pub mailbox: Option<String>,
    pub policy: crate::accounts::Policy,
}

/// Why the directory gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Down, slow, or answering nonsense: counts toward the circuit breaker.
    #[error("{0}")]
    Unavailable(String),
    /// Every connection this call may use is busy with others: back-pressure, not a failure of
    /// the directory (the breaker and the pooled connections are left alone).
    #[error("every directory connection is busy")]
    Busy,
}

/// A place users and passwords are kept.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// `Some` for a good password of an enabled user, `None` for anything else the directory
    /// answered (unknown user, wrong password, disabled); `Err` only when it gave no answer.
    async fn verify(
        &self,
        login: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<Option<Entry>, DirectoryError>;

    /// Whether `login` is an enabled user, without a password: for a recipient arriving over
    /// LMTP before the user's first login (`protocol` "lmtp"), or for a bearer token's user
    /// ("pop3"). The same answer as a good password would get.
    async fn lookup(&self, login: &str, protocol: &'static str) -> Result<Option<Entry>, DirectoryError>;

    /// Who the directory would be asked about for `login`, for counting failed logins: the
    /// spellings the directory cannot tell apart must share one budget. By default the login
    /// name trimmed and case-folded.
    fn subject(&self, login: &str) -> crate::coord::throttle::Subject {
        crate::coord::throttle::Subject::of_login(login)
    }
}

/// Names remembered for a while, at most `capacity` at once (the oldest go first when full).
pub struct Forgetful {
    ttl: Duration,
    capacity: usize,
    seen: Mutex<std::collections::HashMap<String, Instant>>,
}

impl Forgetful {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, seen: Mutex::new(std::collections::HashMap::new()) }
    }

    pub fn contains(&self, name: &str) -> bool {
        crate::sync::lock(&self.seen).get(&name.to_ascii_lowercase()).is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub fn insert(&self, name: &str) {
        let mut seen = crate::sync::lock(&self.seen);
        if seen.len() >= self.capacity {
            let ttl = self.ttl;
            seen.retain(|_, at| at.elapsed() < ttl);
            if seen.len() >= self.capacity {
                return;
            }
        }
        seen.insert(name.to_ascii_lowercase(), Instant::now());
    }
}

/// Whether a login name may be sent to a directory at all: no control characters (NUL ends
/// a C string in many directories) and not overlong. Others fail as a wrong password would.
pub fn sendable(login: &str) -> bool {
    !login.is_empty() && login.len() <= MAX_LOGIN_LEN && !login.chars().any(char::is_control)
}

/// Fills `%u` (the login name), `%n` (its local part, before the last `@`), `%d` (its domain,
/// empty without one) and `%%` in `template`, passing each value through `escape` first.
pub fn expand(template: &str, login: &str, escape: impl Fn(&str) -> String) -> String {
    let (local, domain) = login.rsplit_once('@').unwrap_or((login, ""));
    let mut out = String::with_capacity(template.len() + login.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&escape(login)),
            Some('n') => out.push_str(&escape(local)),
            Some('d') => out.push_str(&escape(domain)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Whether `template` uses only the placeholders [`expand`] fills.
pub fn valid_template(template: &str) -> bool {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c == '%' && !matches!(chars.next(), Some('u' | 'n' | 'd' | '%')) {
            return false;
        }
    }
    true
}

/// Stops calling a directory that keeps failing: after `threshold` failures in a row, calls
/// fail at once for `open_for`; then one call is let through, and its result closes the
/// breaker or opens it again. Logins meanwhile get `[SYS/TEMP]` at once instead of each
/// waiting out a timeout, and a struggling directory gets room to recover.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; another may go if it has not reported by `until` (its login
    /// may have been abandoned).
    Trial {
        until: Instant,
    },
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self { threshold: threshold.max(1), open_for, state: Mutex::new(BreakerState::Closed { failures: 0 }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        crate::sync::lock(&self.state)
    }

    /// Whether a call may go out now.
    pub fn admit(&self, now: Instant) -> bool {
        let mut state = self.state();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } | BreakerState::Trial { until } if now >= until => {
                *state = BreakerState::Trial { until: now + self.open_for };
                true
            }
            BreakerState::Open { .. } | BreakerState::Trial { .. } => false,
        }
    }

    /// Records how an admitted call went.
    pub fn record(&self, ok: bool, now: Instant) {
        let mut state = self.state();
        *state = match (*state, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed { failures: failures + 1 }
            }
            (_, false) => {
                tracing::warn!(seconds = self.open_for.as_secs(), "directory keeps failing; calls stop for a while");
                BreakerState::Open { until: now + self.open_for }
            }
        };
    }

    /// Whether calls are being refused.
    pub fn is_open(&self) -> bool {
        !matches!(*self.state(), BreakerState::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_escaped_parts() {
        let upper = |s: &str| s.to_uppercase();
        assert_eq!(expand("uid=%n,ou=%d", "bob@ex.com", upper), "uid=BOB,ou=EX.COM");
        assert_eq!(expand("%u|%n|%d|%%|%x|%", "a@b@c", |s| s.to_owned()), "a@b@c|a@b|c|%|%x|%");
        assert_eq!(expand("%d", "nodomain", |s| s.to_owned()), "");
        assert!(valid_template("%d-%n %u 100%%"));
        assert!(!valid_template("%s") && !valid_template("trailing %"));
    }

    #[test]
    fn logins_directories_never_see() {
        assert!(sendable("alice@example.com"));
        for bad in ["", "a\0b", "a\nb", "\u{7f}", &"x".repeat(MAX_LOGIN_LEN + 1)] {
            assert!(!sendable(bad), "{bad:?}");
        }
    }

    #[test]
    fn breaker_opens_after_failures_and_lets_one_trial_through() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(breaker.admit(t0));
            breaker.record(false, t0);
        }
        breaker.record(true, t0);
        assert!(!breaker.is_open(), "a success resets the count");
        for _ in 0..3 {
            assert!(breaker.admit(t0));
            breaker.record(false, t0);
        }
        assert!(breaker.is_open());
        assert!(!breaker.admit(t0 + Duration::from_secs(29)));
        assert!(breaker.admit(t0 + Duration::from_secs(30)), "the trial call");
        assert!(!breaker.admit(t0 + Duration::from_secs(30)), "only one trial at a time");
        breaker.record(false, t0 + Duration::from_secs(31));
        assert!(!breaker.admit(t0 + Duration::from_secs(60)), "a failed trial opens it again");
        assert!(breaker.admit(t0 + Duration::from_secs(61)));
        breaker.record(true, t0 + Duration::from_secs(61));
        assert!(breaker.admit(t0 + Duration::from_secs(61)) && !breaker.is_open());
    }
}
