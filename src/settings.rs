//! The configuration resolved once, into the typed settings each component defines.
//!
//! [`crate::config`] reads the flat TOML keys and `CLOUDPOP_*` variables (the user interface)
//! into [`Config`] and checks what it can without knowing any component. This module, on the
//! wiring floor, turns that into each component's own settings type: secrets are read here,
//! once, and every value is parsed here, once. `serve` and the command line call [`resolve`];
//! no component ever sees a [`Config`].

use crate::api::ApiSettings;
use crate::api::tokens::{TokenSource, TokenSources};
use crate::auth::directory::valid_template;
use crate::auth::https::check_url;
use crate::config::{AuthBackend, Config, ConfigError, readable_file};

/// Everything the components were configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: ApiSettings,
}

/// Resolves `config` (already loaded) into each component's settings.
pub fn resolve(config: &Config) -> Result<Settings, ConfigError> {
    config.validate()?;
    check_auth(config)?;
    crate::telemetry::OtelSettings::from_config(config).map_err(ConfigError::Invalid)?;
    Ok(Settings { api: api(config) })
}

fn api(config: &Config) -> ApiSettings {
    ApiSettings {
        listen: config.api_listen.clone(),
        tokens: TokenSources {
            admin: TokenSource { inline: config.api_admin_tokens.clone(), file: config.api_admin_tokens_file.clone() },
            ingest: TokenSource {
                inline: config.api_ingest_tokens.clone(),
                file: config.api_ingest_tokens_file.clone(),
            },
        },
        tls: config.api_tls,
        client_ca: config.api_client_ca.clone(),
        allow_cleartext: config.api_allow_cleartext,
    }
}

/// The authentication settings (`auth_*`, `ldap_*`, `scram*`, `oauth_*`).
fn check_auth(config: &Config) -> Result<(), ConfigError> {
    let fail = |msg: String| Err(ConfigError::Invalid(msg));
    let ranges: [(&str, u64, u64, u64); 9] = [
        ("auth_breaker_failures", config.auth_breaker_failures.into(), 1, 1000),
        ("auth_breaker_secs", config.auth_breaker_secs, 1, 3600),
        ("ldap_timeout_ms", config.ldap_timeout_ms, 100, 60_000),
        ("ldap_pool_size", config.ldap_pool_size.into(), 1, 1024),
        ("auth_http_timeout_ms", config.auth_http_timeout_ms, 100, 60_000),
        ("scram_iterations", config.scram_iterations.into(), 4096, 10_000_000),
        ("oauth_jwks_refresh_secs", config.oauth_jwks_refresh_secs, 60, 86_400),
        ("oauth_leeway_secs", config.oauth_leeway_secs, 0, 600),
        ("auth_mailbox_format length", config.auth_mailbox_format.len() as u64, 2, 256),
    ];
    for (key, value, min, max) in ranges {
        if value < min || value > max {
            return fail(format!("{key} = {value} is outside {min}..={max}"));
        }
    }
    if !valid_template(&config.auth_mailbox_format) {
        return fail("auth_mailbox_format may use only %u, %n, %d and %%".into());
    }
    match config.auth_backend {
        AuthBackend::Local => {}
        AuthBackend::Ldap => {
            let loopback = |url: &str| {
                let host = url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            };
            if !config.ldap_url.starts_with("ldaps://") && !config.ldap_url.starts_with("ldap://") {
                return fail(format!("ldap_url = {:?} must be ldap://host:port or ldaps://host:port", config.ldap_url));
            }
            if config.ldap_url.starts_with("ldap://") && !config.ldap_starttls && !loopback(&config.ldap_url) {
                return fail(
                    "ldap_url is ldap:// to a host other than loopback: passwords would cross the network in \
                     clear; use ldaps:// or ldap_starttls = true"
                        .into(),
                );
            }
            if config.ldap_dn_template.is_empty() && config.ldap_base_dn.is_empty() {
                return fail(
                    "auth_backend = \"ldap\" needs ldap_base_dn (search-then-bind) or ldap_dn_template".into(),
                );
            }
            let filter = &config.ldap_user_filter;
            if !(filter.starts_with('(') && filter.ends_with(')') && valid_template(filter)) {
                return fail("ldap_user_filter must be an LDAP filter in parentheses using %u, %n or %d".into());
            }
            if !valid_template(&config.ldap_dn_template) {
                return fail("ldap_dn_template may use only %u, %n, %d and %%".into());
            }
            let password_given = config.ldap_bind_password.is_some() || config.ldap_bind_password_file.is_some();
            if config.ldap_bind_dn.is_empty() == password_given {
                return fail("ldap_bind_dn and ldap_bind_password (inline or _file) go together".into());
            }
            crate::auth::ldap::parse_attributes(&config.ldap_attributes)
                .map_err(|e| ConfigError::Invalid(format!("ldap_attributes: {e}")))?;
            readable_file("ldap_ca_file", config.ldap_ca_file.as_deref())?;
            readable_file("ldap_bind_password_file", config.ldap_bind_password_file.as_deref())?;
        }
        AuthBackend::Http => {
            check_url("auth_http_url", &config.auth_http_url).map_err(ConfigError::Invalid)?;
            if config.auth_http_client_cert.is_some() != config.auth_http_client_key.is_some() {
                return fail("auth_http_client_cert and auth_http_client_key go together".into());
            }
            readable_file("auth_http_ca_file", config.auth_http_ca_file.as_deref())?;
            readable_file("auth_http_client_cert", config.auth_http_client_cert.as_deref())?;
            readable_file("auth_http_client_key", config.auth_http_client_key.as_deref())?;
            readable_file("auth_http_token_file", config.auth_http_token_file.as_deref())?;
        }
    }
    if config.scram && config.auth_backend != AuthBackend::Local {
        return fail("scram = true needs auth_backend = \"local\": directories keep no SCRAM credentials".into());
    }
    if !config.oauth_jwks_url.is_empty() {
        check_url("oauth_jwks_url", &config.oauth_jwks_url).map_err(ConfigError::Invalid)?;
        if config.oauth_issuer.is_empty() || config.oauth_audience.is_empty() || config.oauth_user_claim.is_empty() {
            return fail("oauth_jwks_url needs oauth_issuer, oauth_audience and oauth_user_claim".into());
        }
        readable_file("oauth_ca_file", config.oauth_ca_file.as_deref())?;
    }
    Ok(())
}
