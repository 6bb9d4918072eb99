//! The LDAP directory: search-then-bind with a service account, or a direct bind with a DN
//! template; LDAPS or StartTLS with a configurable CA; two small connection pools (one bound
//! as the service account for searches, one for users' binds).
//!
//! Every value taken from the client is escaped where it lands: RFC 4515 in filters (`*`,
//! `(`, `)`, `\` and NUL), RFC 4514 in DNs. An empty password fails without a call (RFC 4513
//! section 5.1.2: a bind with a name and no password is an unauthenticated bind, which many
//! servers answer with success), and so does a login with control characters or over 256 bytes.

use super::directory::{self, Directory, DirectoryError, Entry};
use crate::accounts::Policy;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::warn;

/// LDAP result code for a wrong password or unknown bind DN.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code for a search base that does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// What the LDAP directory needs.
pub struct LdapSettings {
    pub url: String,
    pub starttls: bool,
    pub tls: Arc<rustls::ClientConfig>,
    /// The service account for searches; without one, searches are anonymous (or, with a DN
    /// template, made as the user who just bound).
    pub bind_dn: String,
    /// Read again for every new pooled connection when it is a file.
    pub bind_password: Option<crate::secret::SecretSource>,
    pub base_dn: String,
    /// Finds the user (and says who is enabled), with `%u`, `%n`, `%d`.
    pub user_filter: String,
    /// Bind directly as this DN instead of searching first; empty: search-then-bind.
    pub dn_template: String,
    /// Which LDAP attribute holds each of `mailbox`, `login_delay_secs`, `expire_days`,
    /// `quota_bytes`, `quota_messages`.
    pub attributes: AttributeMap,
    pub timeout: Duration,
    pub pool_size: usize,
}

/// The fields `ldap_attributes` may map.
pub const ATTRIBUTE_FIELDS: [&str; 5] = ["mailbox", "login_delay_secs", "expire_days", "quota_bytes", "quota_messages"];

/// What is wrong in `ldap_attributes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributesError {
    #[error("{0:?} is not field=attribute")]
    NotPair(String),
    #[error("{0:?} is not one of {fields}", fields = ATTRIBUTE_FIELDS.join(", "))]
    UnknownField(String),
    #[error("{0:?} is not an attribute name")]
    BadAttribute(String),
}

/// Which LDAP attribute holds each field, by field name.
pub type AttributeMap = HashMap<String, String>;

/// Reads `ldap_attributes`, `field=ldapAttribute` pairs separated by commas.
pub fn parse_attributes(text: &str) -> Result<AttributeMap, AttributesError> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (field, attr) = pair.split_once('=').ok_or_else(|| AttributesError::NotPair(pair.to_owned()))?;
            let (field, attr) = (field.trim(), attr.trim());
            if !ATTRIBUTE_FIELDS.contains(&field) {
                return Err(AttributesError::UnknownField(field.to_owned()));
            }
            if attr.is_empty() || !attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';') {
                return Err(AttributesError::BadAttribute(attr.to_owned()));
            }
            Ok((field.to_owned(), attr.to_owned()))
        })
        .collect()
}

/// Connections to one server, at most `size` in use at once.
struct Pool {
    url: String,
    settings: LdapConnSettings,
    /// Bind each new connection as this (DN, password) first.
    bind_as: Option<(String, crate::secret::SecretSource)>,
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    timeout: Duration,
}

/// A connection taken from a [`Pool`]; returned by [`Conn::done`], dropped on any error.
struct Conn<'a> {
    ldap: Ldap,
    pool: &'a Pool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    fn new(
        url: &str,
        settings: LdapConnSettings,
        bind_as: Option<(String, crate::secret::SecretSource)>,
        size: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            url: url.to_owned(),
            settings,
            bind_as,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            timeout,
        }
    }

    async fn get(&self) -> Result<Conn<'_>, DirectoryError> {
        let permit = tokio::time::timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| DirectoryError::Busy)?
            .map_err(|_| DirectoryError::Unavailable("LDAP: pool closed".into()))?;
        loop {
            let idle = crate::sync::lock(&self.idle).pop();
            match idle {
                Some(mut ldap) => {
                    if !ldap.is_closed() {
                        return Ok(Conn { ldap, pool: self, _permit: permit });
                    }
                }
                None => break,
            }
        }
        let (conn, mut ldap) =
            tokio::time::timeout(self.timeout, LdapConnAsync::with_settings(self.settings.clone(), &self.url))
                .await
                .map_err(|_| DirectoryError::Unavailable("LDAP: connecting timed out".into()))?
                .map_err(|e| DirectoryError::Unavailable(format!("LDAP: cannot connect: {e}")))?;
        ldap3::drive!(conn);
        if let Some((dn, password)) = &self.bind_as {
            // Read at every new connection: a rotated bind password applies without a restart.
            let password = password
                .current()
                .map_err(|e| DirectoryError::Unavailable(format!("LDAP: cannot read the bind password file: {e}")))?;
            let bound = ldap.with_timeout(self.timeout).simple_bind(dn, password.expose()).await;
            match bound.map(|r| r.rc) {
                Ok(0) => {}
                Ok(rc) => {
                    return Err(DirectoryError::Unavailable(format!(
                        "LDAP: the service account's bind failed (result {rc})"
                    )));
                }
                Err(e) => return Err(DirectoryError::Unavailable(format!("LDAP: {e}"))),
            }
        }
        Ok(Conn { ldap, pool: self, _permit: permit })
    }
}

impl Pool {
    /// Drops every idle connection (after a failure: they may all be dead).
    fn clear(&self) {
        crate::sync::lock(&self.idle).clear();
    }
}

impl Conn<'_> {
    /// Back into the pool for the next login.
    fn done(self) {
        crate::sync::lock(&self.pool.idle).push(self.ldap);
    }
}

pub struct LdapDirectory {
    settings: LdapSettings,
    /// Bound as the service account (or anonymous): searches.
    search: Pool,
    /// Users' binds.
    binds: Pool,
    /// Where an unknown user's password is bound: a name no entry has.
    decoy_dn: String,
    /// Lookups for LMTP recipients in flight at once: a quarter of the pool, so mail to made-up
    /// addresses (spam) cannot take the connections logins need.
    lmtp_lookups: Semaphore,
}

impl LdapDirectory {
    pub fn new(settings: LdapSettings) -> Self {
        let conn = LdapConnSettings::new()
            .set_conn_timeout(settings.timeout)
            .set_starttls(settings.starttls)
            .set_config(settings.tls.clone());
        let service = settings
            .bind_password
            .as_ref()
            .filter(|_| !settings.bind_dn.is_empty())
            .map(|password| (settings.bind_dn.clone(), password.clone()));
        let (url, size, timeout) = (settings.url.clone(), settings.pool_size.max(1), settings.timeout);
        Self {
            search: Pool::new(&url, conn.clone(), service, size, timeout),
            binds: Pool::new(&url, conn, None, size, timeout),
            decoy_dn: decoy_dn(&settings.base_dn),
            lmtp_lookups: Semaphore::new(size.div_ceil(4)),
            settings,
        }
    }

    fn attributes(&self) -> Vec<&str> {
        let mut attrs: Vec<&str> = self.settings.attributes.values().map(String::as_str).collect();
        if attrs.is_empty() {
            // Ask for no attributes at all (RFC 4511 section 4.5.1.8).
            attrs.push("1.1");
        }
        attrs
    }

    /// Searches `base` for the user with `scope`; `Ok(None)` unless exactly one entry matches.
    async fn find(
        &self,
        conn: &mut Conn<'_>,
        base: &str,
        scope: Scope,
        login: &str,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let filter = directory::expand(&self.settings.user_filter, login, |v| ldap3::ldap_escape(v).into_owned());
        let found = conn.ldap.with_timeout(self.settings.timeout).search(base, scope, &filter, self.attributes()).await;
        let ldap3::SearchResult(entries, result) =
            found.map_err(|e| DirectoryError::Unavailable(format!("LDAP search: {e}")))?;
        let entries = match result.rc {
            0 => entries,
            // noSuchObject: the base (or the DN template's entry) does not exist, so nobody is
            // found; an answer, not an outage.
            NO_SUCH_OBJECT => Vec::new(),
            rc => return Err(DirectoryError::Unavailable(format!("LDAP search: result {rc}"))),
        };
        match entries.len() {
            1 => Ok(Some(SearchEntry::construct(entries.into_iter().next().expect("one entry")))),
            0 => Ok(None),
            n => {
                warn!(entries = n, "LDAP user filter matched more than one entry; login refused");
                Ok(None)
            }
        }
    }

    /// Binds as `dn` with `password`: whether the directory accepted it.
    async fn bind(&self, conn: &mut Conn<'_>, dn: &str, password: &str) -> Result<bool, DirectoryError> {
        let result = conn.ldap.with_timeout(self.settings.timeout).simple_bind(dn, password).await;
        match result.map(|r| r.rc) {
            Ok(0) => Ok(true),
            Ok(INVALID_CREDENTIALS) => Ok(false),
            // 48 inappropriateAuthentication, 50 insufficientAccessRights, 53 unwillingToPerform:
            // answers about this user, not an outage.
            Ok(48 | 50 | 53) => Ok(false),
            Ok(rc) => Err(DirectoryError::Unavailable(format!("LDAP bind: result {rc}"))),
            Err(e) => Err(DirectoryError::Unavailable(format!("LDAP bind: {e}"))),
        }
    }

    fn entry(&self, found: &SearchEntry) -> Entry {
        let value = |field: &str| {
            let attr = self.settings.attributes.get(field)?;
            // Attribute names are case-insensitive; servers answer in their own spelling.
            let values = found.attrs.iter().find(|(name, _)| name.eq_ignore_ascii_case(attr))?.1;
            values.first().map(|v| v.trim().to_owned())
        };
        let number = |field: &str| {
            let text = value(field)?;
            let parsed = text.parse::<u64>().ok();
            if parsed.is_none() {
                warn!(field, "LDAP attribute is not a whole number; the stored value is kept");
            }
            parsed
        };
        let expire_days = value("expire_days").and_then(|text| match text.to_ascii_lowercase().as_str() {
            "never" => Some(None),
            days => days.parse::<u32>().ok().map(Some),
        });
        Entry {
            mailbox: value("mailbox"),
            policy: Policy {
                login_delay_secs: number("login_delay_secs"),
                expire_days,
                quota_bytes: number("quota_bytes"),
                quota_messages: number("quota_messages"),
            },
        }
    }
}

#[async_trait::async_trait]
impl Directory for LdapDirectory {
    async fn verify(
        &self,
        login: &str,
        password: &str,
        _peer: std::net::IpAddr,
    ) -> Result<Option<Entry>, DirectoryError> {
        if password.is_empty() || !directory::sendable(login) {
            return Ok(None);
        }
        self.with_retry(|| self.check(login, password)).await
    }

    async fn lookup(&self, login: &str, protocol: &'static str) -> Result<Option<Entry>, DirectoryError> {
        if !directory::sendable(login) {
            return Ok(None);
        }
        let _lmtp = match protocol {
            "lmtp" => Some(
                tokio::time::timeout(self.settings.timeout, self.lmtp_lookups.acquire())
                    .await
                    .map_err(|_| DirectoryError::Busy)?
                    .map_err(|_| DirectoryError::Busy)?,
            ),
            _ => None,
        };
        self.with_retry(|| async { Ok(self.find_user(login).await?.map(|found| self.entry(&found))) }).await
    }

    /// What the search (or the DN template) becomes for the login, trimmed and case-folded as
    /// LDAP's usual matching rules do: `alice@a1` and `alice@a2` under `(uid=%n)` are one user.
    fn subject(&self, login: &str) -> crate::coord::throttle::Subject {
        let normalised = login.trim().to_lowercase();
        let template = match self.settings.dn_template.is_empty() {
            true => &self.settings.user_filter,
            false => &self.settings.dn_template,
        };
        let asked = directory::expand(template, &normalised, |v| v.trim().to_owned());
        crate::coord::throttle::Subject::of_identity(&format!("ldap:{asked}"))
    }
}

impl LdapDirectory {
    /// Retries `attempt` once on fresh connections after a failure: pooled connections outlive
    /// a server restart without noticing.
    async fn with_retry<'a, F, Fut>(&'a self, attempt: F) -> Result<Option<Entry>, DirectoryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Entry>, DirectoryError>> + 'a,
    {
        match attempt().await {
            Ok(answer) => Ok(answer),
            // Busy connections are not dead ones: nothing to clear, nothing to retry.
            Err(DirectoryError::Busy) => Err(DirectoryError::Busy),
            Err(e) => {
                warn!(error = %e, "LDAP call failed; retrying on new connections");
                self.search.clear();
                self.binds.clear();
                attempt().await
            }
        }
    }

    /// The user's entry by the service account's search (or the DN template's entry).
    async fn find_user(&self, login: &str) -> Result<Option<SearchEntry>, DirectoryError> {
        let mut search = self.search.get().await?;
        let found = if self.settings.dn_template.is_empty() {
            self.find(&mut search, &self.settings.base_dn, Scope::Subtree, login).await?
        } else {
            let dn = directory::expand(&self.settings.dn_template, login, |v| ldap3::dn_escape(v).into_owned());
            self.find(&mut search, &dn, Scope::Base, login).await?
        };
        search.done();
        Ok(found)
    }

    async fn check(&self, login: &str, password: &str) -> Result<Option<Entry>, DirectoryError> {
        if !self.settings.dn_template.is_empty() {
            let dn = directory::expand(&self.settings.dn_template, login, |v| ldap3::dn_escape(v).into_owned());
            let mut conn = self.binds.get().await?;
            if !self.bind(&mut conn, &dn, password).await? {
                conn.done();
                return Ok(None);
            }
            // Read the user's own entry through the filter: it says whether the user is enabled.
            let found = self.find(&mut conn, &dn, Scope::Base, login).await?;
            conn.done();
            return Ok(found.map(|e| self.entry(&e)));
        }
        let Some(found) = self.find_user(login).await? else {
            // Unknown users cost a bind too, so the time of the answer does not tell which
            // logins exist (as the local backend's decoy hash does).
            let mut conn = self.binds.get().await?;
            let _ = self.bind(&mut conn, &self.decoy_dn, password).await;
            conn.done();
            return Ok(None);
        };
        let mut conn = self.binds.get().await?;
        let accepted = self.bind(&mut conn, &found.dn, password).await?;
        conn.done();
        Ok(accepted.then(|| self.entry(&found)))
    }
}

/// A DN under `base` that no entry has: a random name.
fn decoy_dn(base: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("operating system random source");
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match base.is_empty() {
        true => format!("cn=cloudpop-decoy-{name}"),
        false => format!("cn=cloudpop-decoy-{name},{base}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_values_are_escaped_in_filters_and_dns() {
        let filter = |login: &str| {
            directory::expand("(&(objectClass=person)(uid=%u))", login, |v| ldap3::ldap_escape(v).into_owned())
        };
        assert_eq!(filter("*"), r"(&(objectClass=person)(uid=\2a))");
        assert_eq!(filter(")(uid=*"), r"(&(objectClass=person)(uid=\29\28uid=\2a))");
        assert_eq!(filter("a\\b"), r"(&(objectClass=person)(uid=a\5cb))");
        assert_eq!(filter("a\0b"), r"(&(objectClass=person)(uid=a\00b))");
        let dn = |login: &str| directory::expand("uid=%n,ou=people,dc=%d", login, |v| ldap3::dn_escape(v).into_owned());
        assert_eq!(dn("bob,ou=admins@x"), r"uid=bob\2cou\3dadmins,ou=people,dc=x");
        assert_eq!(dn(" #x@y"), r"uid=\20#x,ou=people,dc=y");
    }

    /// Issue 22 item 16: a pool whose connections are all in use answers `Busy` (back-pressure,
    /// which leaves the breaker and the pooled connections alone), not a directory failure.
    #[tokio::test]
    async fn an_exhausted_pool_is_busy_not_down() {
        let pool = Pool::new("ldap://127.0.0.1:9", LdapConnSettings::new(), None, 1, Duration::from_millis(50));
        let _taken = pool.permits.acquire().await.unwrap();
        assert_eq!(pool.get().await.err(), Some(DirectoryError::Busy));
    }

    #[test]
    fn attribute_maps() {
        let map = parse_attributes("mailbox=mail, quota_bytes = mailQuota").unwrap();
        assert_eq!(map["mailbox"], "mail");
        assert_eq!(map["quota_bytes"], "mailQuota");
        assert!(parse_attributes("").unwrap().is_empty());
        assert!(parse_attributes("password=userPassword").is_err());
        assert!(parse_attributes("mailbox").is_err());
        assert!(parse_attributes("mailbox=a)(b").is_err());
    }
}
