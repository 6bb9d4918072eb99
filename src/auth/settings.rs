//! What authentication is configured with (`auth_*`, `ldap_*`, `scram*`, `oauth_*`), with its
//! TLS material and secrets already read.

use super::ldap::LdapSettings;
use super::oauth::OAuthSettings;
use std::time::Duration;

/// Where passwords are checked besides the local records.
pub enum DirectorySettings {
    Ldap(LdapSettings),
    Http(HttpDirectorySettings),
}

/// What the HTTP directory needs.
pub struct HttpDirectorySettings {
    pub url: String,
    /// Sent as `Authorization: Bearer`; never logged.
    /// Read again at every call when it is a file.
    pub token: Option<crate::secret::SecretSource>,
    pub tls: rustls::ClientConfig,
    pub timeout: Duration,
}

/// Every way of logging in, resolved.
pub struct AuthSettings {
    /// `None`: the local records check passwords (`auth_backend = "local"`).
    pub directory: Option<DirectorySettings>,
    /// Consecutive directory failures that open its circuit breaker, and for how long.
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// How long a directory's successful answer is remembered, and how many at once.
    pub credential_cache: Duration,
    pub credential_cache_entries: usize,
    /// Makes a mailbox name from a login name (`%u`, `%n`, `%d`).
    pub mailbox_format: String,
    /// Bearer tokens (OAUTHBEARER, XOAUTH2), with the TLS settings for the key set's URL.
    pub oauth: Option<(OAuthSettings, rustls::ClientConfig)>,
    /// Offer SCRAM-SHA-256 (only with local records, which keep SCRAM credentials).
    pub scram: bool,
    pub scram_iterations: u32,
}

impl AuthSettings {
    /// The backend's name, for traces: `local`, `ldap` or `http`.
    pub fn backend(&self) -> &'static str {
        match self.directory {
            None => "local",
            Some(DirectorySettings::Ldap(_)) => "ldap",
            Some(DirectorySettings::Http(_)) => "http",
        }
    }
}
