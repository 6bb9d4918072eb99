//! `auth_*`, `ldap_*`, `scram*` and `oauth_*`, checked and resolved into [`AuthSettings`]:
//! TLS material and secrets are read here.

use super::{Fail, secret_source};
use crate::auth::directory::valid_template;
use crate::auth::https::check_url;
use crate::auth::ldap::{LdapSettings, parse_attributes};
use crate::auth::oauth::OAuthSettings;
use crate::auth::{AuthSettings, DirectorySettings, HttpDirectorySettings};
use crate::config::{AuthBackend, Config, ConfigError, readable_file};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The authentication settings, checked and resolved.
pub fn resolve(config: &Config) -> Result<AuthSettings, ConfigError> {
    check_ranges(config)?;
    if !valid_template(&config.auth_mailbox_format) {
        return Fail::invalid("auth_mailbox_format may use only %u, %n, %d and %%");
    }
    if config.scram && config.auth_backend != AuthBackend::Local {
        return Fail::invalid("scram = true needs auth_backend = \"local\": directories keep no SCRAM credentials");
    }
    let directory = match config.auth_backend {
        AuthBackend::Local => None,
        AuthBackend::Ldap => Some(DirectorySettings::Ldap(ldap(config)?)),
        AuthBackend::Http => Some(DirectorySettings::Http(http(config)?)),
    };
    Ok(AuthSettings {
        directory,
        breaker_failures: config.auth_breaker_failures,
        breaker_open: Duration::from_secs(config.auth_breaker_secs),
        credential_cache: Duration::from_secs(config.credential_cache_secs),
        credential_cache_entries: config.credential_cache_entries as usize,
        mailbox_format: config.auth_mailbox_format.clone(),
        oauth: oauth(config)?,
        scram: config.scram,
        scram_iterations: config.scram_iterations,
    })
}

fn check_ranges(config: &Config) -> Result<(), ConfigError> {
    super::within(&[
        ("auth_breaker_failures", config.auth_breaker_failures.into(), 1, 1000),
        ("auth_breaker_secs", config.auth_breaker_secs, 1, 3600),
        ("ldap_timeout_ms", config.ldap_timeout_ms, 100, 60_000),
        ("ldap_pool_size", config.ldap_pool_size.into(), 1, 1024),
        ("auth_http_timeout_ms", config.auth_http_timeout_ms, 100, 60_000),
        ("scram_iterations", config.scram_iterations.into(), 4096, 10_000_000),
        ("oauth_jwks_refresh_secs", config.oauth_jwks_refresh_secs, 60, 86_400),
        ("oauth_leeway_secs", config.oauth_leeway_secs, 0, 600),
        ("auth_mailbox_format length", config.auth_mailbox_format.len() as u64, 2, 256),
    ])
}

/// A TLS client configuration trusting `ca` (or the system's roots), for the setting `key`.
fn client_tls(key: &str, ca: Option<&Path>, cert: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, ConfigError> {
    crate::tls::client_config(ca, cert).map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))
}

fn is_loopback_url(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn ldap(config: &Config) -> Result<LdapSettings, ConfigError> {
    let url = &config.ldap_url;
    if !url.starts_with("ldaps://") && !url.starts_with("ldap://") {
        return Fail::invalid(format!("ldap_url = {url:?} must be ldap://host:port or ldaps://host:port"));
    }
    if url.starts_with("ldap://") && !config.ldap_starttls && !is_loopback_url(url) {
        return Fail::invalid(
            "ldap_url is ldap:// to a host other than loopback: passwords would cross the network in clear; use \
             ldaps:// or ldap_starttls = true",
        );
    }
    if config.ldap_dn_template.is_empty() && config.ldap_base_dn.is_empty() {
        return Fail::invalid("auth_backend = \"ldap\" needs ldap_base_dn (search-then-bind) or ldap_dn_template");
    }
    let filter = &config.ldap_user_filter;
    if !(filter.starts_with('(') && filter.ends_with(')') && valid_template(filter)) {
        return Fail::invalid("ldap_user_filter must be an LDAP filter in parentheses using %u, %n or %d");
    }
    if !valid_template(&config.ldap_dn_template) {
        return Fail::invalid("ldap_dn_template may use only %u, %n, %d and %%");
    }
    let password_given = config.ldap_bind_password.is_some() || config.ldap_bind_password_file.is_some();
    if config.ldap_bind_dn.is_empty() == password_given {
        return Fail::invalid("ldap_bind_dn and ldap_bind_password (inline or _file) go together");
    }
    let attributes =
        parse_attributes(&config.ldap_attributes).map_err(|e| ConfigError::Invalid(format!("ldap_attributes: {e}")))?;
    readable_file("ldap_ca_file", config.ldap_ca_file.as_deref())?;
    let bind_password = secret_source(
        "ldap_bind_password",
        config.ldap_bind_password.as_ref(),
        config.ldap_bind_password_file.as_deref(),
    )?;
    Ok(LdapSettings {
        url: url.clone(),
        starttls: config.ldap_starttls,
        tls: Arc::new(client_tls("ldap_ca_file", config.ldap_ca_file.as_deref(), None)?),
        bind_dn: config.ldap_bind_dn.clone(),
        bind_password,
        base_dn: config.ldap_base_dn.clone(),
        user_filter: filter.clone(),
        dn_template: config.ldap_dn_template.clone(),
        attributes,
        timeout: Duration::from_millis(config.ldap_timeout_ms),
        pool_size: config.ldap_pool_size as usize,
    })
}

fn http(config: &Config) -> Result<HttpDirectorySettings, ConfigError> {
    check_url("auth_http_url", &config.auth_http_url).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let client_cert = match (&config.auth_http_client_cert, &config.auth_http_client_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => return Fail::invalid("auth_http_client_cert and auth_http_client_key go together"),
    };
    readable_file("auth_http_ca_file", config.auth_http_ca_file.as_deref())?;
    readable_file("auth_http_client_cert", config.auth_http_client_cert.as_deref())?;
    readable_file("auth_http_client_key", config.auth_http_client_key.as_deref())?;
    readable_file("auth_http_token_file", config.auth_http_token_file.as_deref())?;
    Ok(HttpDirectorySettings {
        url: config.auth_http_url.clone(),
        token: secret_source(
            "auth_http_token",
            config.auth_http_token.as_ref(),
            config.auth_http_token_file.as_deref(),
        )?,
        tls: client_tls("auth_http TLS settings", config.auth_http_ca_file.as_deref(), client_cert)?,
        timeout: Duration::from_millis(config.auth_http_timeout_ms),
    })
}

fn oauth(config: &Config) -> Result<Option<(OAuthSettings, rustls::ClientConfig)>, ConfigError> {
    if config.oauth_jwks_url.is_empty() {
        return Ok(None);
    }
    check_url("oauth_jwks_url", &config.oauth_jwks_url).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if config.oauth_issuer.is_empty() || config.oauth_audience.is_empty() || config.oauth_user_claim.is_empty() {
        return Fail::invalid("oauth_jwks_url needs oauth_issuer, oauth_audience and oauth_user_claim");
    }
    readable_file("oauth_ca_file", config.oauth_ca_file.as_deref())?;
    let format = &config.auth_mailbox_format;
    if config.oauth_domains.is_empty() && !format.contains("%u") && !format.contains("%d") {
        return Fail::invalid(
            "auth_mailbox_format drops the domain (no %u or %d), so bearer tokens need oauth_domains: \
             otherwise any user of the identity provider with the same local part opens the mailbox",
        );
    }
    let settings = OAuthSettings {
        jwks_url: config.oauth_jwks_url.clone(),
        issuer: config.oauth_issuer.clone(),
        audience: config.oauth_audience.clone(),
        user_claim: config.oauth_user_claim.clone(),
        domains: config.oauth_domains.clone(),
        leeway_secs: config.oauth_leeway_secs,
        refresh: Duration::from_secs(config.oauth_jwks_refresh_secs),
    };
    Ok(Some((settings, client_tls("oauth_ca_file", config.oauth_ca_file.as_deref(), None)?)))
}
