//! Where logins are checked: cloudpop's own account records (`local`), an LDAP directory or an
//! HTTP directory (`auth_backend`), plus bearer tokens from an identity provider (OAUTHBEARER,
//! XOAUTH2) and SCRAM-SHA-256 against credentials kept beside the local argon2id hash.
//!
//! Whatever checks the password, the mailbox is a local account record: a directory login
//! names its mailbox (the directory says which, or `auth_mailbox_format` makes it from the
//! login name), and that record is created at the first login if it does not exist, with the
//! directory's per-user policy (LOGIN-DELAY, EXPIRE, quota) copied onto it whenever a check
//! by the directory finds it different. A record disabled or deleted locally refuses the
//! login whatever the directory says.
//!
//! Failure is never silent: a directory that gives no answer (down, slow, nonsense, or its
//! circuit breaker open) makes the login `[SYS/TEMP]`; there is no fallback to another
//! backend. Successful directory checks are remembered like local ones
//! ([`crate::accounts::verified`]), failures never are, so an outage cannot turn a remembered
//! failure into a success or the reverse.

pub mod directory;
pub mod http;
pub mod https;
pub mod jwt;
pub mod ldap;
pub mod oauth;
pub mod settings;

pub use settings::{AuthSettings, DirectorySettings, HttpDirectorySettings};

use crate::accounts::verified::VerifiedCache;
use crate::accounts::{Accounts, LoginError};
use crate::names::AccountName;
use crate::protocol::scram;
use crate::store::{AccountRecord, MessageStore};
use aws_lc_rs::hmac;
use directory::{Breaker, Directory, Entry};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::field::Empty;
use tracing::{Instrument, info, warn};

/// How long a directory's "no such user" for a mail recipient is remembered.
const UNKNOWN_RECIPIENT_TTL: Duration = Duration::from_secs(60);

/// The pool secret decoy SCRAM salts are derived from.
const DECOY_SECRET: &str = "scram-decoy-salts";

/// What a client proved.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    Password(&'a str),
    /// A SCRAM exchange whose proof checked out against the user's stored credentials.
    Scram,
    /// A bearer token (OAUTHBEARER, XOAUTH2).
    Bearer(&'a str),
}

/// The configured ways of logging in.
pub struct Authenticator {
    accounts: Accounts,
    messages: Arc<dyn MessageStore>,
    directory: Option<(Arc<dyn Directory>, Breaker)>,
    /// Successful directory checks: the directory's answer, under a keyed hash of the login.
    remembered: VerifiedCache<Entry>,
    /// Directory lookups made for bearer-token logins, by user: a cache of its own, so no
    /// password can ever meet one of its entries.
    looked_up: VerifiedCache<Entry>,
    mailbox_format: String,
    /// `auth_backend`, for traces.
    backend: &'static str,
    oauth: Option<oauth::OAuth>,
    scram: bool,
    scram_iterations: u32,
    /// Recipient addresses the directory said it does not know, for a short while: repeated
    /// mail to made-up addresses costs one lookup each per [`UNKNOWN_RECIPIENT_TTL`].
    unknown_recipients: directory::Forgetful,
    /// Makes decoy SCRAM salts, the same for a name on every frontend of the pool and after
    /// every restart (a secret kept in the account store), so salts do not tell which users
    /// exist.
    decoy_key: tokio::sync::OnceCell<hmac::Key>,
}

impl Authenticator {
    pub fn new(settings: AuthSettings, accounts: Accounts, messages: Arc<dyn MessageStore>) -> Self {
        let backend = settings.backend();
        let (failures, open) = (settings.breaker_failures, settings.breaker_open);
        let directory: Option<Arc<dyn Directory>> = match settings.directory {
            None => None,
            Some(DirectorySettings::Ldap(ldap)) => Some(Arc::new(ldap::LdapDirectory::new(ldap))),
            Some(DirectorySettings::Http(http)) => {
                let client = https::HttpsClient::new(http.tls, http.timeout);
                Some(Arc::new(http::HttpDirectory::new(http.url, http.token, client)))
            }
        };
        let oauth = settings.oauth.map(|(oauth, tls)| {
            let client = https::HttpsClient::new(tls, Duration::from_secs(10));
            oauth::OAuth::new(oauth, client)
        });
        let cache = || VerifiedCache::new(settings.credential_cache, settings.credential_cache_entries);
        Self {
            accounts,
            messages,
            directory: directory.map(|d| (d, Breaker::new(failures, open))),
            remembered: cache(),
            looked_up: cache(),
            mailbox_format: settings.mailbox_format,
            backend,
            oauth,
            // SCRAM needs stored credentials, which only the local backend has.
            scram: settings.scram && backend == "local",
            scram_iterations: settings.scram_iterations,
            decoy_key: tokio::sync::OnceCell::new(),
            unknown_recipients: directory::Forgetful::new(UNKNOWN_RECIPIENT_TTL, 10_000),
        }
    }

    /// Who failed logins as `user` are counted against: the spellings the configured
    /// backend cannot tell apart share one subject.
    pub fn throttle_subject(&self, user: &str) -> crate::coord::throttle::Subject {
        match &self.directory {
            Some((directory, _)) => directory.subject(user),
            None => crate::coord::throttle::Subject::of_login(user),
        }
    }

    /// Whether SCRAM-SHA-256 can be offered.
    pub fn offers_scram(&self) -> bool {
        self.scram
    }

    /// Whether OAUTHBEARER and XOAUTH2 can be offered.
    pub fn offers_bearer(&self) -> bool {
        self.oauth.is_some()
    }

    /// Checks a login: the mailbox's record if it succeeds, `Ok(None)` for any refusal (bad
    /// password or token, unknown, disabled), `Err` when it could not be checked.
    pub async fn login(&self, user: &str, proof: Proof<'_>, peer: IpAddr) -> Result<Option<AccountRecord>, LoginError> {
        match proof {
            Proof::Password(password) => match &self.directory {
                None => self.accounts.authenticate(user, password).await,
                Some((directory, _)) => self.directory_login(directory.as_ref(), user, password, peer).await,
            },
            Proof::Scram => match AccountName::parse(user) {
                Ok(name) => Ok(self.accounts.get_cached(&name).await?.filter(AccountRecord::can_log_in)),
                Err(_) => Ok(None),
            },
            Proof::Bearer(token) => self.bearer_login(user, token).await,
        }
    }

    /// One call to the directory behind the circuit breaker, timed (metric and `hash_ms` of
    /// the login span) and traced as `auth.directory`: its answer, or why there is none.
    async fn ask(
        &self,
        call: &'static str,
        query: impl std::future::Future<Output = Result<Option<Entry>, directory::DirectoryError>>,
    ) -> Result<Option<Entry>, LoginError> {
        let Some((_, breaker)) = &self.directory else { return Ok(None) };
        // Never the login name or the password: what was asked and how it went.
        let span = tracing::info_span!(
            "auth.directory",
            backend = self.backend,
            call,
            outcome = Empty,
            otel.status_code = Empty
        );
        let started = Instant::now();
        let answer = if breaker.admit(started) {
            let answer = query.instrument(span.clone()).await;
            // Back-pressure (every connection busy) says nothing about the directory's health.
            if answer != Err(directory::DirectoryError::Busy) {
                breaker.record(answer.is_ok(), Instant::now());
            }
            crate::metrics::metrics().directory_duration.observe(started.elapsed().as_secs_f64());
            tracing::Span::current().record("hash_ms", started.elapsed().as_secs_f64() * 1000.0);
            answer
        } else {
            Err(directory::DirectoryError::Unavailable("circuit breaker open after repeated failures".to_owned()))
        };
        let outcome = match &answer {
            Ok(Some(_)) => "accepted",
            Ok(None) => "refused",
            Err(_) => "unavailable",
        };
        span.record("outcome", outcome);
        if let Err(e) = &answer {
            span.record("otel.status_code", "ERROR");
            warn!(parent: &span, error = %e, call, "directory unavailable");
        }
        answer.map_err(|e| match e {
            directory::DirectoryError::Busy => LoginError::Busy,
            directory::DirectoryError::Unavailable(e) => LoginError::Directory(e),
        })
    }

    async fn directory_login(
        &self,
        directory: &dyn Directory,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Option<AccountRecord>, LoginError> {
        if let Some(entry) = self.remembered.hit(user, password, "") {
            tracing::Span::current().record("hash_ms", 0.0);
            crate::metrics::metrics().credential_cache_hits.inc();
            // The record is read as at every login: disabled or deleted locally ends it.
            let Some(name) = self.mailbox(user, &entry) else { return Ok(None) };
            return Ok(self.accounts.get_cached(&name).await?.filter(AccountRecord::can_log_in));
        }
        if !directory::sendable(user) {
            return Ok(None);
        }
        let _pending = self.accounts.enter()?;
        let Some(entry) = self.ask("verify", directory.verify(user, password, peer)).await? else { return Ok(None) };
        let Some(name) = self.mailbox(user, &entry) else { return Ok(None) };
        let record = self.accounts.provision(&name, &entry.policy, self.messages.as_ref()).await?;
        if record.is_some() {
            self.remembered.remember(user, password, "", entry);
        }
        Ok(record)
    }

    /// The mailbox record of a mail recipient that has none yet, when a directory says the
    /// address (without its subaddress) is an enabled user: made now, as at a first login.
    /// `Ok(None)` without a directory, or for an address it does not know.
    pub async fn recipient(&self, address: &str) -> Result<Option<AccountRecord>, LoginError> {
        let Some((directory, _)) = &self.directory else { return Ok(None) };
        if !directory::sendable(address) || self.unknown_recipients.contains(address) {
            return Ok(None);
        }
        let Some(entry) = self.ask("lookup", directory.lookup(address, "lmtp")).await? else {
            self.unknown_recipients.insert(address);
            return Ok(None);
        };
        let Some(name) = self.mailbox(address, &entry) else { return Ok(None) };
        Ok(self.accounts.provision(&name, &entry.policy, self.messages.as_ref()).await?)
    }

    /// The mailbox a directory's answer (or a token's user) names; `None`, logged, if that is
    /// not a valid mailbox name.
    fn mailbox(&self, user: &str, entry: &Entry) -> Option<AccountName> {
        let raw = match &entry.mailbox {
            Some(mailbox) => mailbox.clone(),
            None => directory::expand(&self.mailbox_format, user, str::to_owned),
        };
        match AccountName::parse(&raw) {
            Ok(name) => Some(name),
            Err(e) => {
                warn!(error = %e, "the directory's mailbox for this login is not a valid mailbox name; login refused");
                None
            }
        }
    }

    async fn bearer_login(&self, authzid: &str, token: &str) -> Result<Option<AccountRecord>, LoginError> {
        let Some(oauth) = &self.oauth else { return Ok(None) };
        // Never the token or its claims: whether it was valid, and why not.
        let span = tracing::info_span!("auth.token", outcome = Empty, reason = Empty, otel.status_code = Empty);
        let verdict = oauth.verify(token).instrument(span.clone()).await.map_err(|e| {
            span.record("outcome", "unavailable");
            span.record("otel.status_code", "ERROR");
            LoginError::Directory(format!("identity provider: {e}"))
        })?;
        let user = match verdict {
            Ok(user) if authzid.is_empty() || authzid.eq_ignore_ascii_case(&user) => user,
            Ok(_) => {
                span.record("outcome", "refused");
                span.record("reason", "names another user");
                info!("bearer token names another user than the one logging in");
                return Ok(None);
            }
            Err(e) => {
                span.record("outcome", "refused");
                span.record("reason", e.to_string());
                info!(reason = %e, "bearer token refused");
                return Ok(None);
            }
        };
        span.record("outcome", "valid");
        let Some((directory, _)) = &self.directory else {
            let Some(name) = self.mailbox(&user, &Entry::default()) else { return Ok(None) };
            return Ok(self.accounts.get_cached(&name).await?.filter(AccountRecord::can_log_in));
        };
        // With a directory, it still says whether the token's user is enabled, which mailbox is
        // theirs and their policy, as for a password; its answer is remembered like one.
        let entry = match self.looked_up.hit(&user, "", "") {
            Some(entry) => entry,
            None => {
                if !directory::sendable(&user) {
                    return Ok(None);
                }
                let Some(entry) = self.ask("lookup", directory.lookup(&user, "pop3")).await? else { return Ok(None) };
                self.looked_up.remember(&user, "", "", entry.clone());
                entry
            }
        };
        let Some(name) = self.mailbox(&user, &entry) else { return Ok(None) };
        Ok(self.accounts.provision(&name, &entry.policy, self.messages.as_ref()).await?)
    }

    /// The SCRAM credentials to challenge `user` with: the stored ones, or a decoy's (an
    /// unknown user, or one without SCRAM credentials yet) against which no proof succeeds.
    pub async fn scram_credentials(&self, user: &str) -> Result<scram::StoredCredentials, LoginError> {
        if let Ok(name) = AccountName::parse(user)
            && let Some(record) = self.accounts.get_cached(&name).await?
            && let Some(stored) = record.scram_sha256.as_deref().and_then(scram::StoredCredentials::decode)
        {
            return Ok(stored);
        }
        let key = self
            .decoy_key
            .get_or_try_init(|| async {
                let secret = self.accounts.pool_secret(DECOY_SECRET).await?;
                Ok::<_, crate::store::StoreError>(hmac::Key::new(hmac::HMAC_SHA256, &secret))
            })
            .await?;
        let salt = hmac::sign(key, user.as_bytes());
        let mut keys = [0u8; 64];
        getrandom::fill(&mut keys).map_err(|e| LoginError::Directory(e.to_string()))?;
        Ok(scram::StoredCredentials {
            iterations: self.scram_iterations,
            salt: salt.as_ref()[..16].to_vec(),
            stored_key: keys[..32].try_into().expect("32 bytes"),
            server_key: keys[32..].try_into().expect("32 bytes"),
        })
    }
}
