//! The object key layout of the S3 backend.
//!
//! ```text
//! {prefix}accounts/{shard}/{name}.json     account record
//! {prefix}mail/{shard}/{name}/{id}         one message, CRLF line endings, exact POP3 size
//! {prefix}markers/{shard}/{name}/{key}     small marker (idempotency key -> message id)
//! {prefix}mail/{shard}/{name}/~late/{id}.{size}  a message committed long after its id was made
//! {prefix}index/{shard}/{name}/{20 digits}  the maildrop index, newest (highest fence) first
//! {prefix}retention/{shard}/{name}         the maildrop's retention ledger, if it has one
//! ```
//! `shard` is two hex digits of a hash of the account name. S3 scales request rates per key
//! prefix, so 256 shards spread a busy pool's load instead of piling it on one prefix. Names are
//! [`AccountName`]s, which contain no `/`, so a maildrop prefix (with its trailing `/`) can never
//! reach another account's keys, and `alice` never lists `alice2`'s mail.

use crate::names::AccountName;

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// `prefix` gets a trailing `/` if it has none (an empty prefix stays empty).
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Self { prefix }
    }

    /// The prefix under which all of a maildrop's messages live (ends with `/`).
    pub fn maildrop(&self, name: &AccountName) -> String {
        format!("{}mail/{}/{name}/", self.prefix, shard(name))
    }

    pub fn message(&self, name: &AccountName, id: &str) -> String {
        format!("{}{id}", self.maildrop(name))
    }

    /// The prefix of a maildrop's late-arrival markers: inside the maildrop, after every id.
    pub fn late_prefix(&self, name: &AccountName) -> String {
        format!("{}~late/", self.maildrop(name))
    }

    /// The prefix of a maildrop's index objects (ends with `/`).
    pub fn indexes(&self, name: &AccountName) -> String {
        format!("{}index/{}/{name}/", self.prefix, shard(name))
    }

    /// The index written under `fence`: a larger fence sorts first, so the first key a listing
    /// returns is the newest index.
    pub fn index(&self, name: &AccountName, fence: u64) -> String {
        format!("{}{:020}", self.indexes(name), u64::MAX - fence)
    }

    /// The fence of an index key under `prefix` (from [`Self::indexes`]).
    pub fn fence_of(prefix: &str, key: &str) -> Option<u64> {
        let digits = key.strip_prefix(prefix)?;
        (digits.len() == 20).then(|| digits.parse::<u64>().ok()).flatten().map(|inverted| u64::MAX - inverted)
    }

    /// The prefix of a maildrop's markers (ends with `/`).
    pub fn markers(&self, name: &AccountName) -> String {
        format!("{}markers/{}/{name}/", self.prefix, shard(name))
    }

    pub fn marker(&self, name: &AccountName, key: &str) -> String {
        format!("{}{key}", self.markers(name))
    }

    pub fn account(&self, name: &AccountName) -> String {
        format!("{}accounts/{}/{name}.json", self.prefix, shard(name))
    }

    pub fn ledger(&self, name: &AccountName) -> String {
        format!("{}{}/{name}", self.ledgers(), shard(name))
    }

    /// The prefix under which every retention ledger lives.
    pub fn ledgers(&self) -> String {
        format!("{}retention/", self.prefix)
    }

    /// The maildrop of a ledger key, if it is one.
    pub fn ledger_of(&self, key: &str) -> Option<AccountName> {
        let (_, name) = key.strip_prefix(&self.ledgers())?.split_once('/')?;
        AccountName::parse(name).ok()
    }

    /// A secret shared by the pool.
    pub fn secret(&self, name: &str) -> String {
        format!("{}secrets/{name}", self.prefix)
    }

    /// The prefix under which every account record lives.
    pub fn accounts(&self) -> String {
        format!("{}accounts/", self.prefix)
    }

    /// The account name of an account record key, if it is one.
    pub fn account_of(&self, key: &str) -> Option<AccountName> {
        let rest = key.strip_prefix(&self.accounts())?;
        let (_, file) = rest.split_once('/')?;
        AccountName::parse(file.strip_suffix(".json")?).ok()
    }
}

/// FNV-1a of the name, folded to one byte: stable across versions and platforms.
fn shard(name: &AccountName) -> String {
    let hash =
        name.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:02x}", (hash ^ (hash >> 32) ^ (hash >> 16) ^ (hash >> 8)) & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    #[test]
    fn layout_is_stable_and_prefixed() {
        let k = KeyLayout::new("tenant1");
        assert_eq!(k.account(&n("alice")), format!("tenant1/accounts/{}/alice.json", shard(&n("alice"))));
        assert!(k.message(&n("alice"), "01ab").starts_with("tenant1/mail/"));
        assert_eq!(k.account_of(&k.account(&n("bob@example.com"))), Some(n("bob@example.com")));
        assert_eq!(k.account_of("tenant1/accounts/00/x/../y.json"), None);
        assert_eq!(k.ledger_of(&k.ledger(&n("carol"))), Some(n("carol")));
        assert_eq!(KeyLayout::new("").accounts(), "accounts/");
        assert_eq!(KeyLayout::new("a/b/").accounts(), "a/b/accounts/");
    }

    #[test]
    fn newer_indexes_sort_first_and_late_markers_after_every_id() {
        let k = KeyLayout::new("p");
        let (older, newer) = (k.index(&n("a"), 1_700_000_000_000_000), k.index(&n("a"), 1_700_000_000_000_001));
        assert!(newer < older);
        assert_eq!(KeyLayout::fence_of(&k.indexes(&n("a")), &newer), Some(1_700_000_000_000_001));
        assert_eq!(KeyLayout::fence_of(&k.indexes(&n("a")), "p/index/xx/a/12"), None);
        let id = crate::store::ids::new_message_id();
        assert!(k.late_prefix(&n("a")) > k.message(&n("a"), &crate::store::ids::with_uidl(&id, "~~~~")));
    }

    #[test]
    fn maildrop_prefixes_never_overlap() {
        let k = KeyLayout::new("");
        let (a, b) = (k.maildrop(&n("alice")), k.maildrop(&n("alice2")));
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
    }

    #[test]
    fn shards_spread() {
        let shards: std::collections::HashSet<String> = (0..2000).map(|i| shard(&n(&format!("user{i}")))).collect();
        assert!(shards.len() > 200, "only {} shards used", shards.len());
    }
}
