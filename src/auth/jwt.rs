//! JWT access tokens (RFC 7519) checked against a JSON Web Key Set (RFC 7517): RS256 and
//! ES256 signatures, then `iss`, `aud`, `exp` and `nbf`. Pure: the caller passes the key set
//! and the time, so every case is tested here.
//!
//! Only the algorithms named here are accepted, whatever the token's header says (`none`,
//! HS256 with a public key as the secret, and the rest are refused before any key is looked at).

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Longest token accepted, in bytes (an access token is a few kilobytes at most).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// One verification key from a key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Rsa {
        kid: Option<String>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// P-256, as the uncompressed point `04 || x || y`.
    P256 {
        kid: Option<String>,
        point: Vec<u8>,
    },
}

impl Key {
    fn kid(&self) -> Option<&str> {
        match self {
            Key::Rsa { kid, .. } | Key::P256 { kid, .. } => kid.as_deref(),
        }
    }
}

/// A key set document that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no \"keys\" array")]
    NoKeys,
}

/// The keys of a JWKS document that can verify RS256 or ES256 signatures; others (encryption
/// keys, other curves, symmetric keys) are left out. An error only if it is not a key set.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<Key>, JwksError> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeys)?;
    let b64 =
        |v: &Value, field: &str| v.get(field).and_then(Value::as_str).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    Ok(keys
        .iter()
        .filter(|k| k.get("use").and_then(Value::as_str).is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
            let alg = k.get("alg").and_then(Value::as_str);
            match k.get("kty").and_then(Value::as_str)? {
                "RSA" if alg.is_none_or(|a| a == "RS256") => Some(Key::Rsa { kid, n: b64(k, "n")?, e: b64(k, "e")? }),
                "EC" if k.get("crv").and_then(Value::as_str) == Some("P-256") && alg.is_none_or(|a| a == "ES256") => {
                    let (x, y) = (b64(k, "x")?, b64(k, "y")?);
                    (x.len() == 32 && y.len() == 32).then(|| Key::P256 { kid, point: [&[4u8][..], &x, &y].concat() })
                }
                _ => None,
            }
        })
        .collect())
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// The claim naming the user (`email`, `preferred_username`, `sub`, ...). With `email`,
    /// the token must also say `email_verified: true`.
    pub user_claim: &'a str,
    /// Domains the user's identity must be in (after its last `@`, case-insensitive); empty:
    /// any identity.
    pub domains: &'a [String],
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Why a token was refused. `UnknownKey` is the one a fresh key set might cure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no key in the key set matches the token")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("claim {0} is missing or wrong")]
    Claim(&'static str),
    #[error("the user's domain is not one accepted here")]
    ForeignDomain,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
}

/// A JSON part of a token.
fn json_part(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// The value of the user claim of a valid token.
pub fn verify(token: &str, keys: &[Key], expect: &Expectations<'_>) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
    check_signature(&json_part(header)?, signed, sig, keys)?;
    let claims = json_part(payload)?;
    check_claims(&claims, expect)?;
    let user = claims
        .get(expect.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or(TokenError::Claim("user"))?;
    // An address the provider has not verified may belong to anyone who typed it.
    let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("true");
    if expect.user_claim == "email" && !verified {
        return Err(TokenError::Claim("email_verified"));
    }
    if !expect.domains.is_empty() {
        let domain = user.rsplit_once('@').map(|(_, d)| d).ok_or(TokenError::ForeignDomain)?;
        if !expect.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(TokenError::ForeignDomain);
        }
    }
    Ok(user.to_owned())
}

/// The signature over `signed`, by one of `keys` the header allows (RS256 or ES256, by `kid`
/// when it names one).
fn check_signature(head: &Value, signed: &[u8], sig: &str, keys: &[Key]) -> Result<(), TokenError> {
    let alg = head.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed)?;
    if alg != "RS256" && alg != "ES256" {
        return Err(TokenError::Algorithm(alg.chars().take(16).collect()));
    }
    let kid = head.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut candidates = keys
        .iter()
        .filter(|k| match (k, alg) {
            (Key::Rsa { .. }, "RS256") | (Key::P256 { .. }, "ES256") => kid.is_none() || k.kid() == kid,
            _ => false,
        })
        .peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let valid = candidates.any(|key| match key {
        Key::Rsa { n, e, .. } => {
            RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature).is_ok()
        }
        Key::P256 { point, .. } => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, &signature).is_ok()
        }
    });
    if valid { Ok(()) } else { Err(TokenError::Signature) }
}

/// Issuer, audience and the validity period, with the allowed clock skew.
fn check_claims(claims: &Value, expect: &Expectations<'_>) -> Result<(), TokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(TokenError::Claim("iss"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expect.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::Claim("aud"));
    }
    let time = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(v) => {
            v.as_f64().filter(|t| t.is_finite() && *t >= 0.0).map(|t| Some(t as u64)).ok_or(TokenError::Claim(name))
        }
    };
    let exp = time("exp")?.ok_or(TokenError::Claim("exp"))?;
    if expect.now >= exp.saturating_add(expect.leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = time("nbf")?
        && expect.now.saturating_add(expect.leeway) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    struct Signer {
        pair: EcdsaKeyPair,
        kid: &'static str,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self { pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap(), kid }
        }

        fn jwk(&self) -> Value {
            let point = self.pair.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                   "x": b64(&point[1..33]), "y": b64(&point[33..])})
        }

        fn token(&self, header: Value, claims: Value) -> String {
            let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let sig = self.pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
            format!("{signed}.{}", b64(sig.as_ref()))
        }

        fn sign(&self, claims: Value) -> String {
            self.token(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}), claims)
        }
    }

    const NOW: u64 = 1_900_000_000;

    fn expect() -> Expectations<'static> {
        Expectations { issuer: "https://idp", audience: "pop", user_claim: "email", domains: &[], leeway: 30, now: NOW }
    }

    fn claims() -> Value {
        json!({
            "iss": "https://idp", "aud": ["other", "pop"], "exp": NOW + 300, "nbf": NOW - 10,
            "email": "bob@x", "email_verified": true
        })
    }

    fn keys(signers: &[&Signer]) -> Vec<Key> {
        parse_jwks(json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_valid_token_names_its_user() {
        let signer = Signer::new("k1");
        assert_eq!(verify(&signer.sign(claims()), &keys(&[&signer]), &expect()).unwrap(), "bob@x");
    }

    #[test]
    fn claims_are_checked() {
        let signer = Signer::new("k1");
        let keys = keys(&[&signer]);
        let with = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            verify(&signer.sign(c), &keys, &expect())
        };
        assert_eq!(with("iss", json!("https://evil")), Err(TokenError::Claim("iss")));
        assert_eq!(with("aud", json!("other")), Err(TokenError::Claim("aud")));
        assert_eq!(with("exp", json!(NOW - 31)), Err(TokenError::Expired));
        assert!(with("exp", json!(NOW - 29)).is_ok(), "within the leeway");
        assert_eq!(with("nbf", json!(NOW + 60)), Err(TokenError::NotYetValid));
        assert_eq!(with("email", json!("")), Err(TokenError::Claim("user")));
        assert_eq!(with("email_verified", json!(false)), Err(TokenError::Claim("email_verified")));
        assert_eq!(with("email_verified", json!("true")).unwrap(), "bob@x", "some providers send a string");
        let mut unverified = claims();
        unverified.as_object_mut().unwrap().remove("email_verified");
        assert_eq!(
            verify(&signer.sign(unverified.clone()), &keys, &expect()),
            Err(TokenError::Claim("email_verified"))
        );
        let by_sub = Expectations { user_claim: "sub", ..expect() };
        unverified["sub"] = json!("bob");
        assert_eq!(verify(&signer.sign(unverified), &keys, &by_sub).unwrap(), "bob", "only the email claim needs it");
        let domains = ["Example.COM".to_owned()];
        let in_domains = Expectations { domains: &domains, ..expect() };
        assert_eq!(verify(&signer.sign(claims()), &keys, &in_domains), Err(TokenError::ForeignDomain));
        let mut ours = claims();
        ours["email"] = json!("bob@example.com");
        assert_eq!(verify(&signer.sign(ours), &keys, &in_domains).unwrap(), "bob@example.com");
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(verify(&signer.sign(no_exp), &keys, &expect()), Err(TokenError::Claim("exp")));
    }

    #[test]
    fn forged_and_unsigned_tokens_are_refused() {
        let (signer, other) = (Signer::new("k1"), Signer::new("k1"));
        let keys = keys(&[&signer]);
        // The right kid, the wrong key.
        assert_eq!(verify(&other.sign(claims()), &keys, &expect()), Err(TokenError::Signature));
        // alg none with an empty signature, and HS256.
        let body = b64(claims().to_string().as_bytes());
        let none = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
        assert_eq!(verify(&none, &keys, &expect()), Err(TokenError::Algorithm("none".into())));
        let hs = signer.token(json!({"alg": "HS256", "kid": "k1"}), claims());
        assert_eq!(verify(&hs, &keys, &expect()), Err(TokenError::Algorithm("HS256".into())));
        // A kid the set does not have: the caller may refresh the set.
        let unknown = Signer::new("k2").sign(claims());
        assert_eq!(verify(&unknown, &keys, &expect()), Err(TokenError::UnknownKey));
        // A payload changed after signing.
        let good = signer.sign(claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut evil = claims();
        evil["email"] = json!("admin@x");
        let evil = b64(evil.to_string().as_bytes());
        parts[1] = &evil;
        assert_eq!(verify(&parts.join("."), &keys, &expect()), Err(TokenError::Signature));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(verify(bad, &keys, &expect()).is_err());
        }
    }

    #[test]
    fn key_sets_keep_only_signing_keys_they_can_use() {
        let signer = Signer::new("ec");
        let set = json!({"keys": [
            signer.jwk(),
            {"kty": "RSA", "kid": "r", "n": b64(&[0xc5; 256]), "e": "AQAB", "alg": "RS256"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"}
        ]});
        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid().unwrap()).collect();
        assert_eq!(kids, ["ec", "r"]);
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{").is_err());
    }
}
