//! Recently verified credentials, so a client that logs in every minute pays one argon2id
//! verification per TTL instead of one per login.
//!
//! An entry is keyed by HMAC-SHA256 of the user name and password under a random key made at
//! startup and never stored, so neither the password nor anything that can be checked against
//! it offline is kept. It also holds an HMAC of the account's password hash at verification
//! time: a login hits only while the account's current hash is the same, so a password change
//! (through any frontend of the pool, since the record is read at every login) ends every
//! entry of that account at once. Disabled and deleted accounts are refused before the cache
//! is consulted. Only successes are cached; failures always pay the full verification, and the
//! failed-login throttle and delay apply to them as before.
//!
//! A directory backend (LDAP, HTTP) has no hash to compare against; its entries hold what the
//! directory answered (the mailbox and policy) and end with their TTL, or at once when the
//! local record is disabled or deleted, which every login checks.

use aws_lc_rs::hmac;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Tag = [u8; 32];

/// Entries: the tag of what was verified against (the password hash), what the check
/// answered, and when the entry ends.
type Entries<V> = HashMap<Tag, (Tag, V, Instant)>;

/// HMAC-SHA256 under `key` of `parts`, each length-prefixed so ("ab", "c") and ("a", "bc")
/// differ.
pub(super) fn tag(key: &hmac::Key, parts: &[&[u8]]) -> Tag {
    let mut context = hmac::Context::with_key(key);
    for part in parts {
        context.update(&(part.len() as u64).to_le_bytes());
        context.update(part);
    }
    let mut tag = [0u8; 32];
    tag.copy_from_slice(context.sign().as_ref());
    tag
}

/// A bounded map of recent successful verifications, each with the value `V` the check gave.
pub struct VerifiedCache<V = ()> {
    key: hmac::Key,
    ttl: Duration,
    max: usize,
    entries: Mutex<Entries<V>>,
}

impl<V: Clone> VerifiedCache<V> {
    /// Remembers at most `max` verifications for `ttl` each; a zero `ttl` remembers nothing.
    pub fn new(ttl: Duration, max: usize) -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("operating system random source");
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), ttl, max, entries: Mutex::new(HashMap::new()) }
    }

    fn tag(&self, parts: &[&[u8]]) -> Tag {
        tag(&self.key, parts)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        crate::sync::lock(&self.entries)
    }

    /// What the check gave when `user` logged in with `password` within the TTL, while what
    /// it was verified against (the account's hash) was `phc`.
    pub fn hit(&self, user: &str, password: &str, phc: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = self.tag(&[user.as_bytes(), password.as_bytes()]);
        let mut entries = self.entries();
        match entries.get(&key) {
            Some((hash, value, until)) if Instant::now() < *until => {
                // Tags compare in constant time, like any secret-derived value here.
                let same = aws_lc_rs::constant_time::verify_slices_are_equal(hash, &self.tag(&[phc.as_bytes()]));
                same.is_ok().then(|| value.clone())
            }
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Records a successful verification and what it gave.
    pub fn remember(&self, user: &str, password: &str, phc: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let (key, hash) = (self.tag(&[user.as_bytes(), password.as_bytes()]), self.tag(&[phc.as_bytes()]));
        let until = Instant::now() + self.lifetime(&key);
        let mut entries = self.entries();
        if entries.len() >= self.max {
            let now = Instant::now();
            entries.retain(|_, (_, _, until)| now < *until);
        }
        if entries.len() < self.max {
            entries.insert(key, (hash, value, until));
        }
    }

    /// How long the entry under `key` lives: between half the TTL and all of it, spread by the
    /// key (itself unpredictable, being keyed by the process's secret). A login storm (every
    /// client reconnecting after a restart) verifies thousands of passwords within seconds; with
    /// one fixed lifetime all of them would come due again together, a storm every TTL.
    fn lifetime(&self, key: &Tag) -> Duration {
        let spread = u64::from_le_bytes(key[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
        self.ttl.mul_f64(1.0 - spread / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_against_the_same_hash_hits() {
        let cache: VerifiedCache = VerifiedCache::new(Duration::from_secs(60), 10);
        cache.remember("alice", "pw", "$argon2id$one", ());
        assert!(cache.hit("alice", "pw", "$argon2id$one").is_some());
        assert!(cache.hit("alice", "pW", "$argon2id$one").is_none(), "another password");
        assert!(cache.hit("alicep", "w", "$argon2id$one").is_none(), "the same bytes split differently");
        assert!(cache.hit("alice", "pw", "$argon2id$two").is_none(), "the password was changed since");
    }

    #[test]
    fn entries_expire_the_cache_is_bounded_and_zero_ttl_turns_it_off() {
        let cache: VerifiedCache = VerifiedCache::new(Duration::from_millis(30), 2);
        cache.remember("a", "1", "h", ());
        cache.remember("b", "1", "h", ());
        cache.remember("c", "1", "h", ());
        assert!(cache.hit("c", "1", "h").is_none(), "a full cache took another entry");
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.hit("a", "1", "h").is_none(), "an entry outlived its TTL");
        cache.remember("c", "1", "h", ());
        assert!(cache.hit("c", "1", "h").is_some(), "expired entries were not made room for");
        let off: VerifiedCache = VerifiedCache::new(Duration::ZERO, 10);
        off.remember("a", "1", "h", ());
        assert!(off.hit("a", "1", "h").is_none());
    }

    #[test]
    fn lifetimes_are_spread_over_the_second_half_of_the_ttl() {
        let ttl = Duration::from_secs(60);
        let cache: VerifiedCache = VerifiedCache::new(ttl, 10);
        let lifetimes: Vec<Duration> =
            (0..1000).map(|i| cache.lifetime(&cache.tag(&[format!("user{i}").as_bytes(), b"pw"]))).collect();
        assert!(lifetimes.iter().all(|&l| l >= ttl / 2 && l <= ttl));
        let (first, last) = (lifetimes.iter().min().unwrap(), lifetimes.iter().max().unwrap());
        assert!(*last - *first > ttl * 4 / 10, "lifetimes not spread: {first:?}..{last:?}");
        let late = lifetimes.iter().filter(|&&l| l > ttl * 3 / 4).count();
        assert!((400..600).contains(&late), "{late} of 1000 in the last quarter");
    }
}
