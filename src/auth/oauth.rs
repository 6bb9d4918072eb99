//! Bearer tokens for OAUTHBEARER and XOAUTH2: JWTs checked against the identity provider's
//! key set, fetched over HTTPS and kept in memory.
//!
//! The set is fetched on first use and again every `oauth_jwks_refresh_secs`. A token signed
//! by a key the set does not hold (the provider rotated its keys) fetches the set again at
//! once, but at most every [`MIN_REFETCH`], so tokens with made-up key ids cannot make every
//! login call the provider. If a fetch fails, the keys already held go on being used; with no
//! keys at all, logins get `[SYS/TEMP]`, never a success. One login fetches while the others go
//! on with the keys held: nobody waits for a slow or dead provider unless there are no keys.

use super::https::{CallError, HttpsClient};
use super::jwt::{self, Expectations, Key, TokenError};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Shortest time between two fetches of the key set.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// What bearer-token logins check.
pub struct OAuthSettings {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    pub user_claim: String,
    /// Domains a token's user must be in; empty: any.
    pub domains: Vec<String>,
    pub leeway_secs: u64,
    pub refresh: Duration,
}

#[derive(Clone)]
struct KeySet {
    keys: std::sync::Arc<Vec<Key>>,
    fetched: Option<Instant>,
}

pub struct OAuth {
    settings: OAuthSettings,
    client: HttpsClient,
    /// The keys held; locked only to read or replace them, never across a fetch.
    keys: std::sync::Mutex<KeySet>,
    /// Held by the one login fetching the set.
    fetching: Mutex<()>,
}

impl OAuth {
    pub fn new(settings: OAuthSettings, client: HttpsClient) -> Self {
        let keys = std::sync::Mutex::new(KeySet { keys: Default::default(), fetched: None });
        Self { settings, client, keys, fetching: Mutex::new(()) }
    }

    fn held(&self) -> KeySet {
        crate::sync::lock(&self.keys).clone()
    }

    /// The user the token names; `Ok(Err(_))` for a token that is not valid, `Err` when no
    /// key set could be had.
    pub async fn verify(&self, token: &str) -> Result<Result<String, TokenError>, CallError> {
        let now = crate::clock::unix_secs();
        let expect = Expectations {
            issuer: &self.settings.issuer,
            audience: &self.settings.audience,
            user_claim: &self.settings.user_claim,
            domains: &self.settings.domains,
            leeway: self.settings.leeway_secs,
            now,
        };
        let mut set = self.held();
        if set.fetched.is_none_or(|at| at.elapsed() >= self.settings.refresh) {
            set = self.refresh(set, self.settings.refresh).await?;
        }
        match jwt::verify(token, &set.keys, &expect) {
            Err(TokenError::UnknownKey) if set.fetched.is_none_or(|at| at.elapsed() >= MIN_REFETCH) => {
                info!("token signed by a key not in the key set; fetching the set again");
                let set = self.refresh(set, MIN_REFETCH).await?;
                Ok(jwt::verify(token, &set.keys, &expect))
            }
            verdict => Ok(verdict),
        }
    }

    /// The set to check with after asking for one fetched within `max_age`: if another login is
    /// fetching, the keys held (or, with none, that fetch's result); otherwise this login fetches.
    async fn refresh(&self, held: KeySet, max_age: Duration) -> Result<KeySet, CallError> {
        let _fetching = match self.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) if !held.keys.is_empty() => return Ok(held),
            Err(_) => self.fetching.lock().await,
        };
        // Someone may have fetched while this login waited.
        let set = self.held();
        if set.fetched.is_some_and(|at| at.elapsed() < max_age) && !set.keys.is_empty() {
            return Ok(set);
        }
        self.fetch(set).await
    }

    /// Fetches the key set. On failure the keys held stay in use (and are retried after
    /// [`MIN_REFETCH`]); the error is returned only if there are none.
    async fn fetch(&self, mut set: KeySet) -> Result<KeySet, CallError> {
        let fetched = match self.client.get(&self.settings.jwks_url).await {
            Ok((status, body)) if status.is_success() => jwt::parse_jwks(&body).map_err(|e| CallError(e.to_string())),
            Ok((status, _)) => Err(CallError(format!("the JWKS URL answered {status}"))),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(keys) => {
                info!(keys = keys.len(), "fetched the identity provider's key set");
                set.keys = std::sync::Arc::new(keys);
                set.fetched = Some(Instant::now());
                *crate::sync::lock(&self.keys) = set.clone();
                Ok(set)
            }
            Err(e) if !set.keys.is_empty() => {
                warn!(error = %e, "cannot fetch the identity provider's key set; the keys held stay in use");
                // Try again after the shortest interval, not after a whole refresh period.
                let back = self.settings.refresh.saturating_sub(MIN_REFETCH);
                set.fetched = Some(Instant::now().checked_sub(back).unwrap_or_else(Instant::now));
                *crate::sync::lock(&self.keys) = set.clone();
                Ok(set)
            }
            Err(e) => {
                warn!(error = %e, "cannot fetch the identity provider's key set");
                Err(e)
            }
        }
    }
}
