//! Decodes the client's side of the SASL PLAIN (RFC 4616) and LOGIN mechanisms (RFC 5034 AUTH).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// The mechanisms offered, in the order advertised.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

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
}

impl Mechanism {
    /// The name used in traces and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::User => "USER",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// A user name and password taken from USER/PASS or a SASL exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub mechanism: Mechanism,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
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
    Ok(Credentials { user, password, mechanism: Mechanism::Plain })
}

/// One LOGIN response (the user name or the password) as text. A NUL is refused: PLAIN cannot
/// carry one either, so no credential differs only by the mechanism that sent it.
pub fn login_field(b64: &str) -> Result<String, SaslError> {
    let text = String::from_utf8(decode(b64)?).map_err(|_| SaslError::Malformed)?;
    if text.contains('\0') { Err(SaslError::Malformed) } else { Ok(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let enc = |s: &[u8]| STANDARD.encode(s);
        assert_eq!(
            plain(&enc(b"\0bob\0pw")).unwrap(),
            Credentials { user: "bob".into(), password: "pw".into(), mechanism: Mechanism::Plain }
        );
        assert_eq!(plain(&enc(b"bob\0bob\0p w")).unwrap().password, "p w");
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
        let c = Credentials { user: "u".into(), password: "hunter2".into(), mechanism: Mechanism::User };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
