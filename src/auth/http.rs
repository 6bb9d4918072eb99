//! The HTTP directory: a JSON POST per login to a service the provider runs in front of its
//! customer database.
//!
//! Request (`Content-Type: application/json`, `Authorization: Bearer <auth_http_token>` when set):
//!
//! ```json
//! {"user": "alice@example.com", "password": "...", "client_address": "203.0.113.9", "protocol": "pop3"}
//! ```
//!
//! A lookup (is this an enabled user? asked for a recipient arriving over LMTP before the
//! user's first login, or for a bearer token's user) sends `{"user": ..., "protocol": "lmtp"`
//! (or `"pop3"`) `, "lookup": true}` and no password; it gets the answer a good password would.
//!
//! Answer: status 200 with `{"result": "ok"}` or `{"result": "fail"}`. With `ok`, optional
//! fields: `mailbox` (the mailbox name; else `auth_mailbox_format`), `enabled` (false fails the
//! login), `login_delay_secs`, `expire_days` (a number, or `null` to keep mail for ever),
//! `quota_bytes`, `quota_messages`. Anything else (another status, a body that is not that
//! JSON, a timeout) is no answer: the login gets `[SYS/TEMP]`, and the circuit breaker counts it
//! (see [`super::directory::Breaker`]).

use super::directory::{Directory, DirectoryError, Entry};
use super::https::HttpsClient;
use crate::accounts::Policy;
use crate::secret::Secret;
use serde_json::Value;

pub struct HttpDirectory {
    url: String,
    token: Option<crate::secret::SecretSource>,
    client: HttpsClient,
}

impl HttpDirectory {
    pub fn new(url: String, token: Option<crate::secret::SecretSource>, client: HttpsClient) -> Self {
        Self { url, token, client }
    }
}

#[async_trait::async_trait]
impl Directory for HttpDirectory {
    async fn verify(
        &self,
        login: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<Option<Entry>, DirectoryError> {
        let body = serde_json::json!({
            "user": login,
            "password": password,
            "client_address": peer.to_string(),
            "protocol": "pop3",
        });
        self.call(body).await
    }

    async fn lookup(&self, login: &str, protocol: &'static str) -> Result<Option<Entry>, DirectoryError> {
        self.call(serde_json::json!({"user": login, "protocol": protocol, "lookup": true})).await
    }
}

impl HttpDirectory {
    async fn call(&self, body: Value) -> Result<Option<Entry>, DirectoryError> {
        // A token file is read at every call: a rotated secret applies at once.
        let token = match &self.token {
            Some(source) => Some(source.current().map_err(|e| {
                DirectoryError::Unavailable(format!("HTTP directory: cannot read the token file: {e}"))
            })?),
            None => None,
        };
        let (status, body) = self
            .client
            .post_json(&self.url, token.as_ref().map(Secret::expose), body.to_string().into_bytes())
            .await
            .map_err(|e| DirectoryError::Unavailable(format!("HTTP directory: {e}")))?;
        if status != http::StatusCode::OK {
            return Err(DirectoryError::Unavailable(format!("HTTP directory answered {status}")));
        }
        answer(&body).map_err(|e| DirectoryError::Unavailable(format!("HTTP directory: {e}")))
    }
}

/// What is wrong with a directory's 200 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum AnswerError {
    #[error("the answer is not JSON")]
    NotJson,
    #[error("the answer has no \"result\": \"ok\" or \"fail\"")]
    NoResult,
    #[error("{0} is not a whole number")]
    NotNumber(String),
    #[error("expire_days is not a number of days")]
    NotDays,
    #[error("mailbox is not a string")]
    NotString,
}

/// Reads a 200 answer's body.
fn answer(body: &[u8]) -> Result<Option<Entry>, AnswerError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| AnswerError::NotJson)?;
    match doc.get("result").and_then(Value::as_str) {
        Some("fail") => return Ok(None),
        Some("ok") => {}
        _ => return Err(AnswerError::NoResult),
    }
    if doc.get("enabled").and_then(Value::as_bool) == Some(false) {
        return Ok(None);
    }
    let number = |field: &str| match doc.get(field) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| AnswerError::NotNumber(field.to_owned())),
    };
    let expire_days = match doc.get("expire_days") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_u64().and_then(|d| u32::try_from(d).ok()).ok_or(AnswerError::NotDays)?)),
    };
    let mailbox = match doc.get("mailbox") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(AnswerError::NotString),
    };
    Ok(Some(Entry {
        mailbox,
        policy: Policy {
            login_delay_secs: number("login_delay_secs")?,
            expire_days,
            quota_bytes: number("quota_bytes")?,
            quota_messages: number("quota_messages")?,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(answer(br#"{"result":"fail"}"#), Ok(None));
        assert_eq!(answer(br#"{"result":"ok","enabled":false}"#), Ok(None));
        assert_eq!(answer(br#"{"result":"ok"}"#), Ok(Some(Entry::default())));
        let full = answer(
            br#"{"result":"ok","mailbox":"a.b","login_delay_secs":60,"expire_days":null,"quota_bytes":1000,"quota_messages":5}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(full.mailbox.as_deref(), Some("a.b"));
        assert_eq!(
            full.policy,
            Policy {
                login_delay_secs: Some(60),
                expire_days: Some(None),
                quota_bytes: Some(1000),
                quota_messages: Some(5)
            }
        );
        assert_eq!(answer(br#"{"result":"ok","expire_days":7}"#).unwrap().unwrap().policy.expire_days, Some(Some(7)));
        for bad in [
            &br#"{"result":"yes"}"#[..],
            b"{}",
            b"ok",
            br#"{"result":"ok","quota_bytes":-1}"#,
            br#"{"result":"ok","mailbox":5}"#,
        ] {
            assert!(answer(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
