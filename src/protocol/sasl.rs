//! Decodes the client's side of the SASL mechanisms of POP3 AUTH (RFC 5034): PLAIN (RFC 4616),
//! LOGIN, OAUTHBEARER (RFC 7628) and XOAUTH2 (the form Google and Microsoft clients send).
//! SCRAM's messages are read by [`super::scram`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// LOGIN's challenges, base64 of "Username:" and "Password:".
pub const LOGIN_USER_CHALLENGE: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASS_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// How the client sent its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// USER and PASS (RFC 1939).
    User,
    /// AUTH PLAIN (RFC 4616).
    Plain,
    /// AUTH LOGIN.
    Login,
    /// AUTH SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// AUTH SCRAM-SHA-256-PLUS: bound to the TLS connection (RFC 9266 tls-exporter).
    ScramSha256Plus,
    /// AUTH OAUTHBEARER (RFC 7628).
    OAuthBearer,
    /// AUTH XOAUTH2.
    XOAuth2,
}

impl Mechanism {
    /// The name on the wire, and in traces and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::User => "USER",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// Whether the mechanism sends something an eavesdropper could log in with (a password
    /// or a bearer token): offered only where plaintext authentication is allowed.
    pub fn plaintext_equivalent(self) -> bool {
        !matches!(self, Mechanism::ScramSha256 | Mechanism::ScramSha256Plus)
    }

    /// The SASL mechanism of that name (AUTH's argument, already upper case).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::Plain,
            Mechanism::Login,
            Mechanism::ScramSha256,
            Mechanism::ScramSha256Plus,
            Mechanism::OAuthBearer,
            Mechanism::XOAuth2,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }

    pub fn is_bearer(self) -> bool {
        matches!(self, Mechanism::OAuthBearer | Mechanism::XOAuth2)
    }
}

/// What the client presented to prove who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Password(String),
    /// A SCRAM exchange ran to the end; `verified` says whether its proof was right.
    Scram {
        verified: bool,
    },
    /// A bearer token.
    Token(String),
}

/// A login: the user name (empty where a token alone names the user), what was presented,
/// and how.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub presented: Presented,
    pub mechanism: Mechanism,
}

impl Credentials {
    pub fn password(user: String, password: String, mechanism: Mechanism) -> Self {
        Self { user, presented: Presented::Password(password), mechanism }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let presented = match &self.presented {
            Presented::Password(_) => "password <redacted>",
            Presented::Scram { verified: true } => "SCRAM proof (verified)",
            Presented::Scram { verified: false } => "SCRAM proof (wrong)",
            Presented::Token(_) => "token <redacted>",
        };
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("presented", &presented)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// Why a SASL response was rejected; the text goes to the client after `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    Base64,
    Malformed,
    AuthzidNotPermitted,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslError::Base64 => "Invalid base64 data",
            SaslError::Malformed => "Malformed SASL response",
            SaslError::AuthzidNotPermitted => "Authorization identity must be empty or equal the user",
        })
    }
}

/// Decodes one base64 client response; `=` is the empty response (RFC 5034).
pub fn decode(b64: &str) -> Result<Vec<u8>, SaslError> {
    if b64 == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(b64.trim()).map_err(|_| SaslError::Base64)
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`. Acting as another user is not supported.
pub fn plain(b64: &str) -> Result<Credentials, SaslError> {
    let raw = decode(b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
    if user.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::AuthzidNotPermitted);
    }
    Ok(Credentials::password(user, password, Mechanism::Plain))
}

/// One LOGIN response (the user name or the password) as text. A NUL is refused: PLAIN cannot
/// carry one either, so no credential differs only by the mechanism that sent it.
pub fn login_field(b64: &str) -> Result<String, SaslError> {
    let text = String::from_utf8(decode(b64)?).map_err(|_| SaslError::Malformed)?;
    if text.contains('\0') { Err(SaslError::Malformed) } else { Ok(text) }
}

/// OAUTHBEARER's client response (RFC 7628 section 3.1): a GS2 header naming the user or
/// not (`n,a=user,` or `n,,`; channel binding is not supported), then `auth=Bearer <token>`
/// among key-value pairs separated by 0x01, ending with two.
pub fn oauthbearer(b64: &str) -> Result<Credentials, SaslError> {
    let raw = String::from_utf8(decode(b64)?).map_err(|_| SaslError::Malformed)?;
    let (header, pairs) = raw.split_once('\x01').ok_or(SaslError::Malformed)?;
    let mut gs2 = header.splitn(3, ',');
    let (Some("n" | "y"), Some(authzid), Some("")) = (gs2.next(), gs2.next(), gs2.next()) else {
        return Err(SaslError::Malformed);
    };
    let user = match authzid.strip_prefix("a=") {
        Some(name) => name.replace("=2C", ",").replace("=3D", "="),
        None if authzid.is_empty() => String::new(),
        None => return Err(SaslError::Malformed),
    };
    bearer(&user, pairs, Mechanism::OAuthBearer)
}

/// XOAUTH2's client response: `user=<name>` 0x01 `auth=Bearer <token>` 0x01 0x01.
pub fn xoauth2(b64: &str) -> Result<Credentials, SaslError> {
    let raw = String::from_utf8(decode(b64)?).map_err(|_| SaslError::Malformed)?;
    let (first, pairs) = raw.split_once('\x01').ok_or(SaslError::Malformed)?;
    let user = first.strip_prefix("user=").filter(|u| !u.is_empty()).ok_or(SaslError::Malformed)?;
    bearer(user, pairs, Mechanism::XOAuth2)
}

/// The token of `auth=Bearer <token>` among `pairs` (each ended by 0x01, the last by two).
fn bearer(user: &str, pairs: &str, mechanism: Mechanism) -> Result<Credentials, SaslError> {
    let body = pairs.strip_suffix("\x01\x01").ok_or(SaslError::Malformed)?;
    let token = body
        .split('\x01')
        .find_map(|pair| pair.strip_prefix("auth="))
        .and_then(|auth| auth.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| auth[7..].trim()))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(SaslError::Malformed)?;
    if user.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials { user: user.to_owned(), presented: Presented::Token(token.to_owned()), mechanism })
}

/// The base64 challenge that tells a client its token was refused: RFC 7628's JSON for
/// OAUTHBEARER, the form Google documents for XOAUTH2. The client answers it with an empty
/// (XOAUTH2) or 0x01 (OAUTHBEARER) response, and then gets `-ERR`.
pub fn bearer_error(mechanism: Mechanism, scope: &str) -> String {
    let mut error = serde_json::Map::new();
    let status = if mechanism == Mechanism::XOAuth2 { "401" } else { "invalid_token" };
    error.insert("status".into(), status.into());
    if mechanism == Mechanism::XOAuth2 {
        error.insert("schemes".into(), "bearer".into());
    }
    if !scope.is_empty() {
        error.insert("scope".into(), scope.into());
    }
    debug_assert!(mechanism.is_bearer());
    STANDARD.encode(serde_json::Value::Object(error).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let enc = |s: &[u8]| STANDARD.encode(s);
        assert_eq!(
            plain(&enc(b"\0bob\0pw")).unwrap(),
            Credentials::password("bob".into(), "pw".into(), Mechanism::Plain)
        );
        assert!(matches!(plain(&enc(b"bob\0bob\0p w")).unwrap().presented, Presented::Password(p) if p == "p w"));
        assert_eq!(plain(&enc(b"eve\0bob\0pw")), Err(SaslError::AuthzidNotPermitted));
        assert_eq!(plain(&enc(b"bob\0pw")), Err(SaslError::Malformed));
        assert_eq!(plain("!!!"), Err(SaslError::Base64));
        assert_eq!(plain("="), Err(SaslError::Malformed));
    }

    #[test]
    fn login_fields_hold_no_nul() {
        assert_eq!(login_field(&STANDARD.encode(b"alice")).unwrap(), "alice");
        // Found by the fuzz seeds: a PLAIN response sent as a LOGIN field.
        assert_eq!(login_field(&STANDARD.encode(b"\0alice\0secret")), Err(SaslError::Malformed));
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials::password("u".into(), "hunter2".into(), Mechanism::User);
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = xoauth2(&STANDARD.encode(b"user=u\x01auth=Bearer tok.en.x\x01\x01")).unwrap();
        assert!(!format!("{t:?}").contains("tok.en"));
    }

    #[test]
    fn bearer_responses() {
        let enc = |s: &str| STANDARD.encode(s);
        let token = |c: Credentials| match c.presented {
            Presented::Token(t) => (c.user, t),
            _ => unreachable!(),
        };
        // RFC 7628 section 4.1's example, and the form without a user.
        let rfc = "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(
            token(oauthbearer(&enc(rfc)).unwrap()),
            ("user@example.com".into(), "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==".into())
        );
        assert_eq!(token(oauthbearer(&enc("n,,\x01auth=Bearer abc\x01\x01")).unwrap()), (String::new(), "abc".into()));
        assert_eq!(
            token(xoauth2(&enc("user=bob@x\x01auth=Bearer abc\x01\x01")).unwrap()),
            ("bob@x".into(), "abc".into())
        );
        for bad in [
            "p=tls-exporter,,\x01auth=Bearer abc\x01\x01",
            "n,,\x01auth=Bearer abc\x01",
            "n,,\x01auth=Basic abc\x01\x01",
            "n,,\x01auth=Bearer \x01\x01",
            "n,,\x01host=x\x01\x01",
            "n,b=x,\x01auth=Bearer abc\x01\x01",
        ] {
            assert!(oauthbearer(&enc(bad)).is_err(), "{bad:?}");
        }
        for bad in ["user=\x01auth=Bearer abc\x01\x01", "auth=Bearer abc\x01\x01", "user=a\x01auth=Bearer a b\x01\x01"]
        {
            assert!(xoauth2(&enc(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bearer_errors_are_the_json_clients_expect() {
        let json = |m, scope| String::from_utf8(STANDARD.decode(bearer_error(m, scope)).unwrap()).unwrap();
        assert_eq!(json(Mechanism::OAuthBearer, "mail"), r#"{"scope":"mail","status":"invalid_token"}"#);
        assert_eq!(json(Mechanism::XOAuth2, ""), r#"{"schemes":"bearer","status":"401"}"#);
    }
}
