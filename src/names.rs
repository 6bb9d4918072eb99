//! Validated account (maildrop) names: the only way a client-supplied name reaches storage.
//!
//! The rules make a name safe as a file name and as an object key segment: no separators, no
//! dot-dot, no control or non-ASCII characters. Names are case-insensitive and kept lowercase.

use std::fmt;

/// Longest accepted name; long enough for any practical email address.
pub const MAX_NAME_LEN: usize = 128;

/// An account name that has passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid account name: {0}")]
pub struct InvalidName(&'static str);

impl InvalidName {
    /// Names the service keeps for itself.
    pub fn reserved() -> Self {
        Self("names starting with cloudpop-internal are reserved")
    }
}

impl AccountName {
    /// Validates and lowercases `raw`.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        if raw.is_empty() {
            return Err(InvalidName("empty"));
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(InvalidName("longer than 128 characters"));
        }
        let name = raw.to_ascii_lowercase();
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-+@".contains(&b);
        if !name.bytes().all(allowed) {
            return Err(InvalidName("only letters, digits and . _ - + @ are allowed"));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(InvalidName("must start with a letter or digit"));
        }
        if name.contains("..") || name.ends_with('.') {
            return Err(InvalidName("must not contain '..' or end with '.'"));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_and_lowercases() {
        assert_eq!(AccountName::parse("Alice.Smith+pop@Example.COM").unwrap().as_str(), "alice.smith+pop@example.com");
        assert!(AccountName::parse("bob").is_ok());
    }

    #[test]
    fn refuses_anything_that_could_escape() {
        for bad in
            ["", "..", ".hidden", "a/b", "a\\b", "../etc", "a..b", "a.", "-x", "a b", "a\0b", "é", "a%2fb", "a:b"]
        {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountName::parse(&"a".repeat(129)).is_err());
    }
}
