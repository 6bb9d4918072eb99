//! The configuration resolved once, into the typed settings each component defines.
//!
//! [`crate::config`] reads the flat TOML keys and `CLOUDPOP_*` variables (the user interface)
//! into a [`Config`] and checks what it can without knowing any component. This module, on the
//! wiring floor, turns that into each component's own settings type: secrets and certificate
//! files are read here, once, and every value is parsed here, once. `serve` and the command
//! line call [`resolve`]; no component ever sees a [`Config`].
//!
//! Layout: this file (the whole, and what the listeners and backends get), [`auth`] (the
//! directories, bearer tokens and SCRAM).

mod auth;

use crate::accounts::AccountSettings;
use crate::api::ApiSettings;
use crate::api::tokens::{TokenSource, TokenSources};
use crate::backends::{BackendSettings, CoordSettings, StoreSettings};
use crate::config::{Config, ConfigError, LocksKind, StoreKind, networks};
use crate::coord::redis_link::{RedisSettings, parse_urls};
use crate::coord::throttle::Limits;
use crate::delivery::DeliverySettings;
use crate::protocol::lmtp::address::AddressRule;
use crate::secret::Secret;
use crate::server::{ServeSettings, ServerSettings};
use crate::session::Pop3Settings;
use crate::store::s3::S3Settings;
use crate::telemetry::TelemetrySettings;
use crate::telemetry::settings::{OtelKeys, OtelSettings};
use std::path::Path;
use std::time::Duration;

/// Everything the components were configured with.
pub struct Settings {
    /// What the service runs with (the store commands of the CLI use its backends).
    pub serve: ServeSettings,
    pub telemetry: TelemetrySettings,
}

/// Resolves `config` (already loaded) into each component's settings.
pub fn resolve(config: &Config) -> Result<Settings, ConfigError> {
    config.validate()?;
    let serve = ServeSettings {
        server: server(config)?,
        backends: backends(config)?,
        pop3: pop3(config),
        lmtp: lmtp(config)?,
        api: api(config)?,
        lock_lease: config.lock_lease(),
    };
    Ok(Settings { serve, telemetry: telemetry(config)? })
}

/// Shorthand for a refusal of the configuration.
struct Fail;

impl Fail {
    fn invalid<T>(why: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid(why.into()))
    }
}

/// Checks `(key, value, min, max)` ranges.
fn within(ranges: &[(&str, u64, u64, u64)]) -> Result<(), ConfigError> {
    match ranges.iter().find(|(_, value, min, max)| value < min || value > max) {
        Some((key, value, min, max)) => Fail::invalid(format!("{key} = {value} is outside {min}..={max}")),
        None => Ok(()),
    }
}

/// The secret setting `key`, inline or from `key_file`.
fn secret(key: &'static str, inline: Option<&Secret>, file: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
    Secret::resolve(key, inline, file).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// A secret read again at every use when it is a file (see [`crate::secret::SecretSource`]).
fn secret_source(
    key: &'static str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<crate::secret::SecretSource>, ConfigError> {
    crate::secret::SecretSource::resolve(key, inline, file).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn server(config: &Config) -> Result<ServerSettings, ConfigError> {
    Ok(ServerSettings {
        pop3_listen: config.pop3_listen.clone(),
        pop3s_listen: config.pop3s_listen.clone(),
        lmtp_listen: config.lmtp_listen.clone(),
        ops_listen: config.ops_listen.clone(),
        certificate: config.tls_cert.clone().zip(config.tls_key.clone()),
        data_dir: config.data_dir.clone(),
        embedded_store: config.store == StoreKind::Fs,
        store: config.store.name(),
        locks: config.locks.name(),
        max_connections: config.max_connections,
        max_connections_per_address: config.max_connections_per_address,
        proxy_protocol: config.proxy_protocol,
        proxy_trusted: config.proxy_networks()?,
        drain_delay: Duration::from_secs(config.drain_delay_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        reload_interval: Duration::from_secs(config.reload_interval_secs),
        sweep_interval: Duration::from_secs(config.sweep_interval_secs),
    })
}

fn backends(config: &Config) -> Result<BackendSettings, ConfigError> {
    let store = match config.store {
        StoreKind::Fs => StoreSettings::Fs(config.data_dir.clone()),
        StoreKind::S3 => StoreSettings::S3(s3(config)?),
    };
    let shared_credential_key = match config.credential_cache_shared_secs {
        0 => None,
        _ => {
            let key = secret(
                "credential_cache_shared_key",
                config.credential_cache_shared_key.as_ref(),
                config.credential_cache_shared_key_file.as_deref(),
            )?;
            match key {
                Some(key) if key.expose().len() >= 32 => Some(key),
                _ => {
                    return Err(ConfigError::Invalid(
                        "credential_cache_shared_key must be at least 32 characters (for example from `openssl rand \
                         -base64 48`), the same on every frontend"
                            .into(),
                    ));
                }
            }
        }
    };
    let coord = match config.locks {
        LocksKind::Memory => CoordSettings::Memory,
        LocksKind::Redis => CoordSettings::Redis { link: redis(config)?, prefix: config.redis_key_prefix.clone() },
    };
    Ok(BackendSettings {
        store,
        coord,
        throttle: Limits {
            window: Duration::from_secs(config.throttle_window_secs),
            per_account: config.throttle_account_failures,
            per_address: config.throttle_address_failures,
            per_known_address: config.throttle_known_address_failures,
        },
        accounts: AccountSettings {
            credential_cache: Duration::from_secs(config.credential_cache_secs),
            credential_cache_entries: config.credential_cache_entries as usize,
            account_cache: Duration::from_secs(config.account_cache_secs),
            account_cache_entries: config.account_cache_entries as usize,
            max_pending_logins: config.max_pending_logins as usize,
            hashing_threads: config.hashing_threads_or_cores(),
            legacy_hash_memory_kib: config.legacy_hash_memory_mib * 1024,
            scram_iterations: config.scram.then_some(config.scram_iterations),
            shared_credential_cache: Duration::from_secs(config.credential_cache_shared_secs),
            shared_credential_key,
        },
        auth: auth::resolve(config)?,
        delivery: DeliverySettings {
            spool_dir: config.spool_dir(),
            max_message_size: config.max_message_size,
            max_spool_bytes: config.max_spool_mib * 1024 * 1024,
        },
    })
}

fn s3(config: &Config) -> Result<S3Settings, ConfigError> {
    let id = config.s3_access_key_id.clone().map(Secret::new);
    let id = secret("s3_access_key_id", id.as_ref(), config.s3_access_key_id_file.as_deref())?;
    let key = secret(
        "s3_secret_access_key",
        config.s3_secret_access_key.as_ref(),
        config.s3_secret_access_key_file.as_deref(),
    )?;
    Ok(S3Settings {
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        bucket: config.s3_bucket.clone(),
        prefix: config.s3_prefix.clone(),
        path_style: config.s3_path_style,
        access_key: id.map(|id| id.expose().to_owned()).zip(key),
        timeout: Duration::from_secs(config.s3_timeout_secs),
        max_attempts: config.s3_max_attempts,
    })
}

/// The Redis link the `redis_*` settings describe (also for tests that start their own Redis).
pub fn redis(config: &Config) -> Result<RedisSettings, ConfigError> {
    let password = secret("redis_password", config.redis_password.as_ref(), config.redis_password_file.as_deref())?;
    let ca = match &config.redis_tls_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| ConfigError::Invalid(format!("redis_tls_ca_file = {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Ok(RedisSettings {
        mode: config.redis_mode,
        urls: parse_urls(config.redis_urls()).map_err(|e| ConfigError::Invalid(e.to_string()))?,
        username: config.redis_username.clone(),
        password,
        ca,
        timeout: Duration::from_millis(config.redis_timeout_ms),
        sentinel_master: config.redis_sentinel_master.clone(),
    })
}

fn pop3(config: &Config) -> Pop3Settings {
    Pop3Settings {
        login_timeout: config.login_timeout(),
        login_deadline: config.login_deadline(),
        idle_timeout: config.idle_timeout(),
        max_line_length: config.max_line_length,
        max_line_violations: config.max_line_violations,
        max_bad_commands: config.max_bad_commands,
        max_auth_failures: config.max_auth_failures,
        auth_failure_delay: Duration::from_millis(config.auth_failure_delay_ms),
        allow_plaintext_auth: config.allow_plaintext_auth,
        plaintext_auth_loopback: config.plaintext_auth_loopback,
        scram_cleartext: config.scram_cleartext,
        oauth_scope: config.oauth_scope.clone(),
        retr_min_bytes_per_sec: config.retr_min_bytes_per_sec,
        retr_grace: Duration::from_secs(config.retr_grace_secs),
        lock_lease: config.lock_lease(),
        // Local files answer at once; reading ahead would only copy them.
        retr_read_ahead: if config.store == StoreKind::S3 { config.retr_read_ahead_kib * 1024 } else { 0 },
        retr_read_ahead_total_kib: config.retr_read_ahead_total_mib as usize * 1024,
    }
}

fn lmtp(config: &Config) -> Result<Option<crate::lmtp::Settings>, ConfigError> {
    if config.lmtp_listen.is_empty() {
        return Ok(None);
    }
    let hostname = match config.lmtp_hostname.as_str() {
        "" => Some(crate::coord::registry::host_name()).filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into()),
        name => name.to_owned(),
    };
    Ok(Some(crate::lmtp::Settings {
        rule: AddressRule {
            strip_domain: config.lmtp_strip_domain,
            separators: config.lmtp_subaddress_separator.clone(),
        },
        trusted: networks("lmtp_trusted_networks", &config.lmtp_trusted_networks)?,
        hostname,
        trace_headers: config.lmtp_trace_headers,
        quota_tempfail: config.lmtp_quota_tempfail,
        starttls: config.lmtp_starttls,
        max_size: config.max_message_size,
        max_connections: config.lmtp_max_connections,
    }))
}

fn api(config: &Config) -> Result<ApiSettings, ConfigError> {
    let source = |key, inline: &Option<Secret>, file: &Option<std::path::PathBuf>| {
        if inline.is_some() && file.is_some() {
            return Fail::invalid(format!("{key} and {key}_file are both set: give the secret one way"));
        }
        Ok(TokenSource { inline: inline.clone(), file: file.clone() })
    };
    Ok(ApiSettings {
        listen: config.api_listen.clone(),
        tokens: TokenSources {
            admin: source("api_admin_tokens", &config.api_admin_tokens, &config.api_admin_tokens_file)?,
            ingest: source("api_ingest_tokens", &config.api_ingest_tokens, &config.api_ingest_tokens_file)?,
        },
        tls: config.api_tls,
        client_ca: config.api_client_ca.clone(),
        allow_cleartext: config.api_allow_cleartext,
    })
}

fn telemetry(config: &Config) -> Result<TelemetrySettings, ConfigError> {
    let keys = OtelKeys {
        endpoint: &config.otel_endpoint,
        traces_endpoint: &config.otel_traces_endpoint,
        headers: config.otel_headers.as_ref(),
        resource_attributes: &config.otel_resource_attributes,
        service_name: &config.otel_service_name,
        traces_sampler: &config.otel_traces_sampler,
        traces_sampler_arg: &config.otel_traces_sampler_arg,
        sdk_disabled: config.otel_sdk_disabled,
    };
    Ok(TelemetrySettings {
        log: config.log.clone(),
        log_format: config.log_format,
        otel: OtelSettings::resolve(&keys).map_err(|e| ConfigError::Invalid(e.to_string()))?,
    })
}
