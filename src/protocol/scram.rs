//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, the server side (RFC 5802, RFC 7677), with the
//! `tls-exporter` channel binding (RFC 9266).
//!
//! Pure: the caller supplies the stored credentials, the server nonce and the channel binding
//! data, so every step is tested here without a socket. The stored form is the one PostgreSQL
//! uses, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), which holds
//! nothing a client could log in with: a login needs the password or the ClientKey.
//!
//! Passwords are used as UTF-8 bytes without SASLprep, which changes only passwords with
//! non-ASCII spaces, soft hyphens or compatibility characters; clients that apply SASLprep to
//! such a password will fail to log in with SCRAM (PLAIN still works over TLS).

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::num::NonZeroU32;

/// The channel binding type offered with `-PLUS` (RFC 9266).
pub const CHANNEL_BINDING: &str = "tls-exporter";

/// Fewest iterations accepted in stored credentials (RFC 7677 section 4).
pub const MIN_ITERATIONS: u32 = 4096;

/// What the server keeps for one password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("32-byte HMAC-SHA256")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().expect("32-byte SHA-256")
}

impl StoredCredentials {
    /// Derives the credentials for `password` with `salt` (at least 16 random bytes).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let rounds = NonZeroU32::new(iterations.max(1)).expect("non-zero");
        let mut salted = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut salted);
        let client_key = hmac256(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac256(&salted, b"Server Key"),
        }
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Reads the stored form; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |b64: &str| STANDARD.decode(b64).ok()?.try_into().ok();
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i >= 1)?,
            salt: STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Why an exchange failed. `Proof` is a failed login (counted like a wrong password); the
/// others are protocol errors, answered like a malformed PLAIN response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    Malformed,
    /// Channel binding asked for in a way this connection cannot honour, or a downgrade.
    ChannelBinding,
    /// `a=`: acting as another user is not supported.
    Authzid,
    /// The client's final message does not carry the nonce of this exchange.
    Nonce,
    Proof,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScramError::Malformed => "Malformed SCRAM message",
            ScramError::ChannelBinding => {
                "Channel binding mismatch: use SCRAM-SHA-256-PLUS with tls-exporter over TLS 1.3"
            }
            ScramError::Authzid => "Authorization identity must be empty",
            ScramError::Nonce => "SCRAM nonce mismatch",
            ScramError::Proof => "Authentication failed",
        })
    }
}

/// The client's first message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, with `=2C` and `=3D` decoded.
    pub user: String,
    gs2_header: String,
    bare: String,
    client_nonce: String,
    /// Whether the client bound the channel (`p=tls-exporter`).
    bound: bool,
}

/// `plus` is the mechanism the client chose; `plus_offered` whether -PLUS was offered on this
/// connection (a client that says it could bind but thinks the server cannot is being
/// downgraded, RFC 5802 section 6).
pub fn client_first(message: &[u8], plus: bool, plus_offered: bool) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
    let mut parts = text.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ScramError::Malformed);
    };
    let bound = if let Some(kind) = flag.strip_prefix("p=") {
        if !plus || kind != CHANNEL_BINDING {
            return Err(ScramError::ChannelBinding);
        }
        true
    } else {
        match flag {
            "n" | "y" if plus => return Err(ScramError::ChannelBinding),
            "y" if plus_offered => return Err(ScramError::ChannelBinding),
            "n" | "y" => false,
            _ => return Err(ScramError::Malformed),
        }
    };
    if !authzid.is_empty() {
        return Err(ScramError::Authzid);
    }
    // No mandatory extensions are supported ("m=" must make the exchange fail).
    let mut fields = bare.split(',');
    let user = fields.next().and_then(|f| f.strip_prefix("n=")).ok_or(ScramError::Malformed)?;
    let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed)?;
    if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') || nonce.is_empty() {
        return Err(ScramError::Malformed);
    }
    Ok(ClientFirst {
        user: decode_name(user)?,
        gs2_header: format!("{flag},{authzid},"),
        bare: bare.to_owned(),
        client_nonce: nonce.to_owned(),
        bound,
    })
}

/// A saslname: `=2C` is a comma, `=3D` an equals sign, any other `=` is an error.
fn decode_name(raw: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() || out.contains('\0') { Err(ScramError::Malformed) } else { Ok(out) }
}

/// An exchange waiting for the client's final message.
#[derive(Clone, PartialEq, Eq)]
pub struct Pending {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credentials: StoredCredentials,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("user", &self.first.user).finish_non_exhaustive()
    }
}

impl ClientFirst {
    /// The server's first message, with `credentials` (a decoy's for an unknown user, so the
    /// exchange looks the same) and `server_nonce` (fresh random printable text, no commas).
    pub fn challenge(self, credentials: StoredCredentials, server_nonce: &str) -> (Pending, String) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&credentials.salt), credentials.iterations);
        (Pending { first: self, server_first: server_first.clone(), nonce, credentials }, server_first)
    }
}

impl Pending {
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// Checks the client's final message; the server's final message (`v=...`) if the proof
    /// is right. `binding` is the connection's `tls-exporter` data, where there is TLS 1.3.
    pub fn finish(&self, message: &[u8], binding: Option<&[u8]>) -> Result<String, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let mut fields = without_proof.split(',');
        let cbind = fields.next().and_then(|f| f.strip_prefix("c=")).ok_or(ScramError::Malformed)?;
        let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed)?;
        let proof: [u8; 32] =
            STANDARD.decode(proof).ok().and_then(|p| p.try_into().ok()).ok_or(ScramError::Malformed)?;
        let mut expected_cbind = self.first.gs2_header.as_bytes().to_vec();
        if self.first.bound {
            expected_cbind.extend_from_slice(binding.ok_or(ScramError::ChannelBinding)?);
        }
        let cbind = STANDARD.decode(cbind).map_err(|_| ScramError::Malformed)?;
        if constant_time::verify_slices_are_equal(&cbind, &expected_cbind).is_err() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let signature = hmac256(&self.credentials.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        client_key.iter_mut().zip(signature).for_each(|(k, s)| *k ^= s);
        if constant_time::verify_slices_are_equal(&sha256(&client_key), &self.credentials.stored_key).is_err() {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac256(&self.credentials.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example exchange of RFC 7677 section 3.
    #[test]
    fn rfc7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = StoredCredentials::derive("pencil", &salt, 4096);
        let first = client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", false, true).unwrap();
        assert_eq!(first.user, "user");
        let (pending, server_first) = first.challenge(creds.clone(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(pending.finish(client_final, None).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let wrong = StoredCredentials::derive("pencil!", &salt, 4096);
        let first = client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", false, true).unwrap();
        let (pending, _) = first.challenge(wrong, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(pending.finish(client_final, None), Err(ScramError::Proof));
        assert_eq!(StoredCredentials::decode(&creds.encode()), Some(creds));
    }

    /// A client written from RFC 5802, to drive the bound variant.
    pub(crate) fn client_final(first_bare: &str, server_first: &str, gs2: &str, cb: &[u8], password: &str) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = &fields[0][2..];
        let salt = STANDARD.decode(&fields[1][2..]).unwrap();
        let iterations: u32 = fields[2][2..].parse().unwrap();
        let mut salted = [0u8; 32];
        let rounds = NonZeroU32::new(iterations).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &mut salted);
        let client_key = hmac256(&salted, b"Client Key");
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(cb);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = hmac256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    #[test]
    fn channel_binding_to_tls_exporter() {
        let creds = StoredCredentials::derive("pw", b"0123456789abcdef", 4096);
        let gs2 = "p=tls-exporter,,";
        let first = client_first(format!("{gs2}n=bob,r=abc").as_bytes(), true, true).unwrap();
        let (pending, server_first) = first.challenge(creds, "xyz");
        let ok = client_final("n=bob,r=abc", &server_first, gs2, b"exporter-bytes", "pw");
        assert!(pending.finish(ok.as_bytes(), Some(b"exporter-bytes")).is_ok());
        // Another connection's binding (a man in the middle relaying the exchange) fails.
        assert_eq!(pending.finish(ok.as_bytes(), Some(b"other-bytes")), Err(ScramError::ChannelBinding));
        assert_eq!(pending.finish(ok.as_bytes(), None), Err(ScramError::ChannelBinding));
    }

    #[test]
    fn binding_flags_and_downgrades() {
        // -PLUS needs p=tls-exporter; other types and "n"/"y" with -PLUS are refused.
        assert_eq!(client_first(b"p=tls-unique,,n=a,r=x", true, true), Err(ScramError::ChannelBinding));
        assert_eq!(client_first(b"n,,n=a,r=x", true, true), Err(ScramError::ChannelBinding));
        // "y": the client could bind but saw no -PLUS. Where -PLUS was offered, that is a downgrade.
        assert_eq!(client_first(b"y,,n=a,r=x", false, true), Err(ScramError::ChannelBinding));
        assert!(client_first(b"y,,n=a,r=x", false, false).is_ok());
        // Binding asked for with the plain mechanism.
        assert_eq!(client_first(b"p=tls-exporter,,n=a,r=x", false, true), Err(ScramError::ChannelBinding));
        assert_eq!(client_first(b"n,a=eve,n=a,r=x", false, true), Err(ScramError::Authzid));
        for bad in [&b"n,,r=x"[..], b"n,,n=a", b"n,,n=a=2,r=x", b"n,,n=,r=x", b"x,,n=a,r=x", b"n,,n=a,r=", b"\xff"] {
            assert!(client_first(bad, false, false).is_err(), "{bad:?}");
        }
        assert_eq!(client_first(b"n,,n=a=2Cb=3Dc,r=x", false, false).unwrap().user, "a,b=c");
    }

    #[test]
    fn final_message_checks() {
        let creds = StoredCredentials::derive("pw", b"0123456789abcdef", 4096);
        let (pending, server_first) = client_first(b"n,,n=bob,r=abc", false, false).unwrap().challenge(creds, "xyz");
        let ok = client_final("n=bob,r=abc", &server_first, "n,,", b"", "pw");
        let replayed_nonce = ok.replace("r=abcxyz", "r=abcxyZ");
        assert_eq!(pending.finish(replayed_nonce.as_bytes(), None), Err(ScramError::Nonce));
        for bad in ["", "c=biws", "c=biws,r=abcxyz,p=short", "r=abcxyz,c=biws,p=AAAA"] {
            assert!(pending.finish(bad.as_bytes(), None).is_err(), "{bad}");
        }
        let wrong = client_final("n=bob,r=abc", &server_first, "n,,", b"", "pW");
        assert_eq!(pending.finish(wrong.as_bytes(), None), Err(ScramError::Proof));
        assert!(pending.finish(ok.as_bytes(), None).is_ok());
    }

    #[test]
    fn stored_form_is_checked_and_hides_keys_from_debug() {
        let creds = StoredCredentials::derive("pw", b"0123456789abcdef", 4096);
        assert!(!format!("{creds:?}").contains(&STANDARD.encode(creds.stored_key)));
        for bad in ["", "SCRAM-SHA-256$0:c2FsdA==$AA==:AA==", "SCRAM-SHA-1$4096:c2FsdA==$AA==:AA==", "$argon2id$x"] {
            assert_eq!(StoredCredentials::decode(bad), None, "{bad}");
        }
    }
}
