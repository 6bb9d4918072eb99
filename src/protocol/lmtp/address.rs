//! Which mailbox an envelope recipient names.
//!
//! The rule, in order: the address is split at its last `@`; the local part is cut at the
//! first subaddress separator character (`alice+lists@example.com` -> `alice@example.com`);
//! with `strip_domain` only the local part remains; the result must be a valid account name
//! and is compared case-insensitively (names are kept lowercase).

use crate::names::{AccountName, InvalidName};

/// The configured mapping from recipient addresses to mailbox names.
#[derive(Debug, Clone, Default)]
pub struct AddressRule {
    /// Keep only the local part (`alice@example.com` -> `alice`).
    pub strip_domain: bool,
    /// Characters that start a subaddress in the local part (usually `+`); empty for none.
    pub separators: String,
}

impl AddressRule {
    pub fn mailbox(&self, address: &str) -> Result<AccountName, InvalidName> {
        let (local, domain) = self.split(address);
        match domain {
            Some(domain) if !self.strip_domain => AccountName::parse(&format!("{local}@{domain}")),
            _ => AccountName::parse(local),
        }
    }

    /// The address without its subaddress (`alice+lists@example.com` -> `alice@example.com`):
    /// what a directory is asked about.
    pub fn without_subaddress(&self, address: &str) -> String {
        match self.split(address) {
            (local, Some(domain)) => format!("{local}@{domain}"),
            (local, None) => local.to_owned(),
        }
    }

    fn split<'a>(&self, address: &'a str) -> (&'a str, Option<&'a str>) {
        let (local, domain) = match address.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (address, None),
        };
        let local = match local.find(|c| self.separators.contains(c)) {
            Some(at) => &local[..at],
            None => local,
        };
        (local, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_to_mailboxes_by_the_documented_rule() {
        let full = AddressRule { strip_domain: false, separators: "+".into() };
        let name = |rule: &AddressRule, address| rule.mailbox(address).map(|n| n.to_string());
        assert_eq!(name(&full, "Alice+Lists@Example.COM"), Ok("alice@example.com".into()));
        assert_eq!(name(&full, "bob@example.com"), Ok("bob@example.com".into()));
        let short = AddressRule { strip_domain: true, separators: "+-".into() };
        assert_eq!(name(&short, "carol-news@example.com"), Ok("carol".into()));
        assert_eq!(name(&short, "dave+x-y@example.com"), Ok("dave".into()));
        let plain = AddressRule { strip_domain: true, separators: String::new() };
        assert_eq!(name(&plain, "a+b@example.com"), Ok("a+b".into()));
        assert!(full.mailbox("+only@example.com").is_err(), "an empty local part");
        assert!(full.mailbox("../etc@example.com").is_err());
    }
}
