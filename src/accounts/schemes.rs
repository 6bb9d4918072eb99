//! Password hashes imported from other servers, in the forms Dovecot (and most providers'
//! account databases) write them: `{SHA512-CRYPT}`/`$6$`, `{SHA256-CRYPT}`/`$5$`,
//! `{BLF-CRYPT}`/`$2y$`, `{ARGON2ID}`/`{ARGON2I}`, `{SSHA512}` and `{PBKDF2}`.
//!
//! An imported hash is stored as it came, under its scheme prefix, and verified natively; the
//! first login that matches replaces it with cloudpop's own argon2id hash
//! ([`crate::accounts::Accounts::authenticate`]). `{PLAIN}` is never stored: an import that
//! allows it hashes the password at once.

use aws_lc_rs::{digest, pbkdf2};
use base64::Engine;
use std::num::NonZeroU32;

/// What an imported password field turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// A hash to store as it is (canonical form: an argon2 PHC string, or `{SCHEME}hash`).
    Hash(String),
    /// A clear-text password (`{PLAIN}`), to be hashed before anything is stored.
    Plain(String),
}

/// Why an imported password field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("unsupported password scheme {0}")]
    Unsupported(String),
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    #[error("{{PLAIN}} passwords need --allow-plain")]
    PlainRefused,
    #[error("the hash asks for more work per login than cloudpop allows")]
    TooCostly,
}

/// The schemes [`verify`] knows, by the prefix they are stored under.
const SHA512_CRYPT: &str = "{SHA512-CRYPT}";
const SHA256_CRYPT: &str = "{SHA256-CRYPT}";
const BLF_CRYPT: &str = "{BLF-CRYPT}";
const SSHA512: &str = "{SSHA512}";
const PBKDF2: &str = "{PBKDF2}";

/// Reads a password field from an account export: `{SCHEME}value`, or a bare crypt string
/// (`$6$...`, `$5$...`, `$2y$...`, `$argon2id$...`) as `{CRYPT}` or no prefix gives it.
pub fn parse(field: &str, allow_plain: bool) -> Result<Imported, SchemeError> {
    let field = field.trim_end_matches(['\r', '\n']);
    let (scheme, value) = match field.strip_prefix('{').and_then(|rest| rest.split_once('}')) {
        Some((scheme, value)) => (scheme.to_ascii_uppercase(), value),
        None => ("CRYPT".to_owned(), field),
    };
    let crypt = |value: &str| -> Result<Imported, SchemeError> {
        if value.starts_with("$6$") {
            checked(SHA512_CRYPT, value)
        } else if value.starts_with("$5$") {
            checked(SHA256_CRYPT, value)
        } else if ["$2y$", "$2b$", "$2a$"].iter().any(|p| value.starts_with(p)) {
            checked(BLF_CRYPT, value)
        } else if value.starts_with("$argon2") {
            argon2(value)
        } else {
            Err(SchemeError::Unsupported("CRYPT (only $6$, $5$, $2y$ and $argon2 crypt strings)".into()))
        }
    };
    match scheme.as_str() {
        "CRYPT" => crypt(value),
        "SHA512-CRYPT" if value.starts_with("$6$") => crypt(value),
        "SHA256-CRYPT" if value.starts_with("$5$") => crypt(value),
        "BLF-CRYPT" if value.starts_with("$2") => crypt(value),
        "ARGON2ID" | "ARGON2I" if value.starts_with("$argon2") => argon2(value),
        "SSHA512" => checked(SSHA512, value),
        "PBKDF2" => checked(PBKDF2, value),
        "PLAIN" | "CLEAR" | "CLEARTEXT" if allow_plain => Ok(Imported::Plain(value.to_owned())),
        "PLAIN" | "CLEAR" | "CLEARTEXT" => Err(SchemeError::PlainRefused),
        "SHA512-CRYPT" | "SHA256-CRYPT" | "BLF-CRYPT" | "ARGON2ID" | "ARGON2I" => Err(SchemeError::Malformed("crypt")),
        other => Err(SchemeError::Unsupported(other.to_owned())),
    }
}

/// The most work one imported hash may ask of a login: a hash beyond these (a bcrypt cost of
/// 31 takes days) would let one account stall the hashing pool. Dovecot's defaults are within
/// them (its ARGON2ID is 64 MiB, 3 passes). Hashes above the cheap bounds below are verified on
/// the legacy queue, whose memory budget (`legacy_hash_memory_mib`, at least
/// [`MAX_ARGON2_KIB`]) bounds what they allocate at once.
pub const MAX_ARGON2_KIB: u32 = 64 * 1024;
const MAX_BCRYPT_COST: u32 = 13;
const MAX_ROUNDS: u32 = 1_000_000;
const MAX_ARGON2_PASSES: u32 = 16;

/// Above these, an imported hash is slow (about 50 ms or more) and goes to the legacy queue.
const CHEAP_BCRYPT_COST: u32 = 10;
const CHEAP_ROUNDS: u32 = 100_000;

/// What verifying a stored hash asks beyond a slot of the hashing pool, or `None` when a slot
/// verifies it in its own memory (`slot_kib`) and in about the time of cloudpop's own hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// Memory the verification allocates, in KiB (at least 1 MiB, for the CPU it holds).
    pub kib: u32,
}

/// See [`Oversized`].
pub fn oversized(stored: &str, slot_kib: u32) -> Option<Oversized> {
    const SLOW: Oversized = Oversized { kib: 1024 };
    if stored.starts_with("$argon2") {
        let hash = argon2::PasswordHash::new(stored).ok()?;
        let params = argon2::Params::try_from(&hash).ok()?;
        let passes_cost = params.t_cost() > 8 || params.p_cost() > 1;
        return (params.m_cost() > slot_kib || passes_cost).then(|| Oversized { kib: params.m_cost().max(1024) });
    }
    if let Some(value) = stored.strip_prefix(BLF_CRYPT) {
        let cost = value.get(4..6).and_then(|c| c.parse::<u32>().ok())?;
        return (cost > CHEAP_BCRYPT_COST).then_some(SLOW);
    }
    let rounds = if let Some(value) = stored.strip_prefix(SHA512_CRYPT).or_else(|| stored.strip_prefix(SHA256_CRYPT)) {
        value.split('$').nth(2).and_then(|r| r.strip_prefix("rounds=")).and_then(|r| r.parse::<u32>().ok())
    } else if let Some(value) = stored.strip_prefix(PBKDF2) {
        pbkdf2_parts(value).map(|(_, rounds, _)| rounds.get())
    } else {
        None
    };
    rounds.filter(|r| *r > CHEAP_ROUNDS).map(|_| SLOW)
}

/// An argon2 PHC string, stored bare (the hasher verifies those natively).
fn argon2(value: &str) -> Result<Imported, SchemeError> {
    let hash = argon2::PasswordHash::new(value).map_err(|_| SchemeError::Malformed("argon2"))?;
    let params = argon2::Params::try_from(&hash).map_err(|_| SchemeError::Malformed("argon2"))?;
    if argon2::Algorithm::try_from(hash.algorithm).is_err() || hash.salt.is_none() || hash.hash.is_none() {
        return Err(SchemeError::Malformed("argon2"));
    }
    if params.m_cost() > MAX_ARGON2_KIB || params.t_cost() > MAX_ARGON2_PASSES || params.p_cost() > 16 {
        return Err(SchemeError::TooCostly);
    }
    Ok(Imported::Hash(value.to_owned()))
}

/// `{SCHEME}value`, once its shape has been checked (so a typo fails the import, not a login).
fn checked(prefix: &'static str, value: &str) -> Result<Imported, SchemeError> {
    let stored = format!("{prefix}{value}");
    let well_formed = match prefix {
        SHA512_CRYPT | SHA256_CRYPT => {
            let rounds = value.split('$').nth(2).and_then(|r| r.strip_prefix("rounds=")).map(str::parse::<u32>);
            match rounds {
                Some(Ok(rounds)) if rounds > MAX_ROUNDS => return Err(SchemeError::TooCostly),
                Some(Err(_)) => false,
                _ => value.split('$').count() >= 4 && value.is_ascii(),
            }
        }
        BLF_CRYPT => {
            let cost = value.get(4..6).and_then(|c| c.parse::<u32>().ok());
            if cost.is_some_and(|c| c > MAX_BCRYPT_COST) {
                return Err(SchemeError::TooCostly);
            }
            value.len() == 60 && value.is_ascii() && cost.is_some()
        }
        SSHA512 => base64::engine::general_purpose::STANDARD.decode(value).is_ok_and(|raw| raw.len() > 64),
        PBKDF2 => pbkdf2_parts(value).is_some(),
        _ => false,
    };
    if well_formed { Ok(Imported::Hash(stored)) } else { Err(SchemeError::Malformed(prefix)) }
}

/// Whether `stored` is an imported hash that [`verify`] handles (argon2 PHC strings are the
/// hasher's own).
pub fn is_imported(stored: &str) -> bool {
    stored.starts_with('{')
}

/// Verifies `password` against an imported hash; anything unknown or malformed never matches.
/// All comparisons of derived values are constant-time.
pub fn verify(stored: &str, password: &[u8]) -> bool {
    let text = || std::str::from_utf8(password).ok();
    if let Some(value) = stored.strip_prefix(SHA512_CRYPT) {
        text().is_some_and(|pw| sha_crypt::sha512_check(pw, value).is_ok())
    } else if let Some(value) = stored.strip_prefix(SHA256_CRYPT) {
        text().is_some_and(|pw| sha_crypt::sha256_check(pw, value).is_ok())
    } else if let Some(value) = stored.strip_prefix(BLF_CRYPT) {
        // bcrypt reads at most 72 bytes; a longer password is refused rather than truncated.
        password.len() <= 72 && bcrypt::verify(password, value).unwrap_or(false)
    } else if let Some(value) = stored.strip_prefix(SSHA512) {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value) else { return false };
        let Some((expected, salt)) = raw.split_at_checked(64) else { return false };
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(password);
        ctx.update(salt);
        aws_lc_rs::constant_time::verify_slices_are_equal(ctx.finish().as_ref(), expected).is_ok()
    } else if let Some(value) = stored.strip_prefix(PBKDF2) {
        let Some((salt, rounds, expected)) = pbkdf2_parts(value) else { return false };
        pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA1, rounds, salt.as_bytes(), password, &expected).is_ok()
    } else {
        false
    }
}

/// Dovecot's PBKDF2 form: `$1$<salt>$<rounds>$<hex of 20 bytes of PBKDF2-HMAC-SHA1>`.
fn pbkdf2_parts(value: &str) -> Option<(&str, NonZeroU32, Vec<u8>)> {
    let mut parts = value.strip_prefix("$1$")?.split('$');
    let (salt, rounds, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || salt.is_empty() || hex.len() != 40 {
        return None;
    }
    let rounds = rounds.parse::<u32>().ok().and_then(NonZeroU32::new).filter(|r| r.get() <= MAX_ROUNDS)?;
    let bytes =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect::<Option<_>>()?;
    Some((salt, rounds, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes of "pässword 1" as Dovecot 2.3's `doveadm pw -s <scheme>` wrote them.
    const DOVEADM: [&str; 7] = [
        "{SHA512-CRYPT}$6$JGqAkAl20V2OmA2M$P6VEODaqRVmaGsg6EMDGOKLGvfl2tJ3h/uVXcg6MfdlBut44RDFz5cLupbgJKrpV7YGiDVU/zarNG6SwX7mOQ/",
        "{SHA256-CRYPT}$5$nk9GjWxGynJMnqmn$XNTBTUjo0DZ88aa6dgx6hKPnb10pUuNv9fPnsR4orI6",
        "{BLF-CRYPT}$2y$05$Qr1nJz/GDQRf8bQK46lMl.yvcDcmuk1/l6.n/gh9eF2NHbWJlTS.i",
        "{SSHA512}yIzCNUuGj+hrzVhjN+hiVjr84BmegRu2ZbjX9G+ARUEszpCaR3rdg3Ros09V5EGhh60i72RfGQKc+v+hmzLFO25Egro=",
        "{PBKDF2}$1$yy1xLWJR9IlUKx7z$5000$357804f493e1137cc79d669f41dd424c1e935224",
        "{CRYPT}$2y$05$/CVg8gdN3eE2reENcMUa9uilucjhCd44jdeNILW/d50oSxWAgS0ya",
        "$6$JGqAkAl20V2OmA2M$P6VEODaqRVmaGsg6EMDGOKLGvfl2tJ3h/uVXcg6MfdlBut44RDFz5cLupbgJKrpV7YGiDVU/zarNG6SwX7mOQ/",
    ];

    #[test]
    fn dovecot_hashes_verify_natively() {
        for field in DOVEADM {
            let Ok(Imported::Hash(stored)) = parse(field, false) else { panic!("{field} refused") };
            assert!(is_imported(&stored), "{stored}");
            assert!(verify(&stored, "pässword 1".as_bytes()), "{field} did not verify");
            assert!(!verify(&stored, "pässword 2".as_bytes()), "{field} took a wrong password");
            assert!(!verify(&stored, b""), "{field} took an empty password");
        }
        let argon = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$yPvNGgmXR+pPkh07kWnULA$Ap4N/SxFtASJ/AaC02ZeITOjwP8tKkoIm6BCUFTvxTg";
        let Ok(Imported::Hash(stored)) = parse(argon, false) else { panic!("argon2id refused") };
        assert!(stored.starts_with("$argon2id$") && !is_imported(&stored), "stored bare for the hasher");
        assert_eq!(oversized(&stored, 7 * 1024), Some(Oversized { kib: 65536 }), "Dovecot's 64 MiB argon2id");
    }

    #[test]
    fn only_hashes_beyond_a_slot_or_slow_ones_are_oversized() {
        let own = "$argon2id$v=19$m=7168,t=5,p=1$yPvNGgmXR+pPkh07kWnULA$Ap4N/SxFtASJ/AaC02ZeITOjwP8tKkoIm6BCUFTvxTg";
        assert_eq!(oversized(own, 7 * 1024), None);
        assert_eq!(oversized("{BLF-CRYPT}$2y$05$Qr1nJz/GDQRf8bQK46lMl.yvcDcmuk1/l6.n/gh9eF2NHbWJlTS.i", 7168), None);
        let slow = "{BLF-CRYPT}$2y$12$Qr1nJz/GDQRf8bQK46lMl.yvcDcmuk1/l6.n/gh9eF2NHbWJlTS.i";
        assert_eq!(oversized(slow, 7168), Some(Oversized { kib: 1024 }));
        assert_eq!(oversized("{SHA512-CRYPT}$6$rounds=500000$salt$hash", 7168), Some(Oversized { kib: 1024 }));
        assert_eq!(oversized("{SHA512-CRYPT}$6$salt$hash", 7168), None);
    }

    #[test]
    fn plain_unknown_and_malformed_fields_are_refused() {
        assert_eq!(parse("{PLAIN}secret", false), Err(SchemeError::PlainRefused));
        assert_eq!(parse("{PLAIN}secret", true), Ok(Imported::Plain("secret".into())));
        assert!(matches!(parse("{MD5-CRYPT}$1$abc$def", false), Err(SchemeError::Unsupported(_))));
        assert!(matches!(parse("{SSHA512}c2hvcnQ=", false), Err(SchemeError::Malformed(_))));
        assert!(matches!(parse("{PBKDF2}$1$salt$0$00", false), Err(SchemeError::Malformed(_))));
        assert!(matches!(parse("{BLF-CRYPT}$2y$05$short", false), Err(SchemeError::Malformed(_))));
        assert!(matches!(parse("{ARGON2ID}$argon2id$v=19$garbage", false), Err(SchemeError::Malformed(_))));
        assert!(matches!(parse("plaintext", false), Err(SchemeError::Unsupported(_))));
        // Hashes that would stall every login behind them.
        let huge_argon =
            "$argon2id$v=19$m=131072,t=3,p=1$yPvNGgmXR+pPkh07kWnULA$Ap4N/SxFtASJ/AaC02ZeITOjwP8tKkoIm6BCUFTvxTg";
        assert_eq!(parse(huge_argon, false), Err(SchemeError::TooCostly), "beyond the legacy queue's memory");
        let slow_bcrypt = "{BLF-CRYPT}$2y$31$Qr1nJz/GDQRf8bQK46lMl.yvcDcmuk1/l6.n/gh9eF2NHbWJlTS.i";
        assert_eq!(parse(slow_bcrypt, false), Err(SchemeError::TooCostly));
        assert_eq!(parse("$6$rounds=999999999$salt$hash", false), Err(SchemeError::TooCostly));
        let big_argon =
            "$argon2id$v=19$m=4194304,t=3,p=1$yPvNGgmXR+pPkh07kWnULA$Ap4N/SxFtASJ/AaC02ZeITOjwP8tKkoIm6BCUFTvxTg";
        assert_eq!(parse(big_argon, false), Err(SchemeError::TooCostly));
        // A tampered stored value never verifies.
        assert!(!verify(
            "{PBKDF2}$1$yy1xLWJR9IlUKx7z$5000$357804f493e1137cc79d669f41dd424c1e935225",
            "pässword 1".as_bytes()
        ));
        assert!(!verify("{UNKNOWN}x", b"x"));
    }
}
