//! Environment variables as configuration: `CLOUDPOP_<KEY>` for every key, and the standard
//! `OTEL_*` variables for the tracing keys.
//!
//! Variables that name no key are ignored, not fatal: Kubernetes sets `CLOUDPOP_PORT`,
//! `CLOUDPOP_SERVICE_HOST` and the like for a Service named `cloudpop`, and those must never
//! stop a pod. One that looks like a misspelt key gets a warning that names the likely key.

use super::{Config, ConfigError};
use serde::Deserialize;

/// Prefix of the environment variables that set configuration keys (`CLOUDPOP_DATA_DIR`, ...).
pub const ENV_PREFIX: &str = "CLOUDPOP_";

/// Environment variables with the prefix that are not configuration keys (the command line's
/// own settings as an API client).
const NOT_KEYS: [&str; 5] =
    ["CLOUDPOP_CONFIG", "CLOUDPOP_API_URL", "CLOUDPOP_API_TOKEN", "CLOUDPOP_API_TOKEN_FILE", "CLOUDPOP_API_CA"];

/// The standard OpenTelemetry variables and the keys they set. `CLOUDPOP_OTEL_*` variables win
/// over them; both win over the file.
const OTEL_VARS: [(&str, &str); 8] = [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_endpoint"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel_traces_endpoint"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "otel_headers"),
    ("OTEL_SERVICE_NAME", "otel_service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "otel_resource_attributes"),
    ("OTEL_TRACES_SAMPLER", "otel_traces_sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "otel_traces_sampler_arg"),
    ("OTEL_SDK_DISABLED", "otel_sdk_disabled"),
];

/// Every configuration key, read off the struct itself so the list can never fall behind it.
pub(super) fn known_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

/// Lays the environment over `table`; returns warnings about variables that look misspelt.
pub(super) fn overlay(table: &mut toml::Table, env: Vec<(String, String)>) -> Result<Vec<String>, ConfigError> {
    for (var, raw) in &env {
        if let Some((_, key)) = OTEL_VARS.iter().find(|(name, _)| name == var) {
            let value = match *key {
                "otel_sdk_disabled" => toml::Value::Boolean(raw.trim().eq_ignore_ascii_case("true")),
                _ => toml::Value::String(raw.clone()),
            };
            table.insert(key.to_string(), value);
        }
    }
    let keys = known_keys();
    let mut warnings = Vec::new();
    for (var, raw) in env {
        let Some(key) = var.strip_prefix(ENV_PREFIX) else { continue };
        if NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if !keys.contains(&key) {
            if let Some(near) = closest_key(&keys, &key) {
                warnings.push(format!(
                    "ignoring {var}: not a setting; did you mean {ENV_PREFIX}{}?",
                    near.to_ascii_uppercase()
                ));
            }
            continue;
        }
        // The text as it is, for every key that takes text: secrets, URLs and names are never
        // TOML-parsed (a password `"x"` keeps its quotes). Only numbers, booleans and the like
        // are read as TOML values.
        let as_string = toml::Value::String(raw.clone());
        if Config::deserialize(toml::Table::from_iter([(key.clone(), as_string.clone())])).is_ok() {
            table.insert(key, as_string);
            continue;
        }
        let value = env_value(&raw);
        if let Err(e) = Config::deserialize(toml::Table::from_iter([(key.clone(), value.clone())])) {
            return Err(ConfigError::Env { var, message: one_line(&e.to_string()) });
        }
        table.insert(key, value);
    }
    Ok(warnings)
}

/// Reads an environment value as TOML (numbers, booleans) when it parses, else as a string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// The known key nearest to a misspelt `key`, if one is near enough to be what was meant.
pub(super) fn closest_key<'k>(keys: &'k [String], key: &str) -> Option<&'k String> {
    keys.iter().map(|k| (edit_distance(k, key), k)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

/// serde's and toml's texts span lines; one line reads better in a terminal and a pod's log.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Levenshtein distance, for spotting misspelt keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn kubernetes_service_variables_are_ignored_and_typos_are_named() {
        let (config, warnings) = Config::load_with_warnings(
            None,
            env(&[
                ("CLOUDPOP_PORT", "tcp://10.96.0.12:110"),
                ("CLOUDPOP_PORT_110_TCP_ADDR", "10.96.0.12"),
                ("CLOUDPOP_SERVICE_HOST", "10.96.0.12"),
                ("CLOUDPOP_SERVICE_PORT_POP3", "110"),
                ("CLOUDPOP_MAX_CONECTIONS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            warnings,
            ["ignoring CLOUDPOP_MAX_CONECTIONS: not a setting; did you mean CLOUDPOP_MAX_CONNECTIONS?"]
        );
    }

    #[test]
    fn every_key_is_known_and_secrets_are_not_exposed_by_the_listing() {
        let keys = known_keys();
        for key in ["store", "otel_headers", "proxy_trusted_networks", "s3_secret_access_key", "drain_delay_secs"] {
            assert!(keys.iter().any(|k| k == key), "{key} missing");
        }
        let secret = Config { redis_password: Some(crate::secret::Secret::new("hunter2")), ..Config::default() };
        assert!(!serde_json::to_string(&secret).unwrap().contains("hunter2"));
    }

    #[test]
    fn text_values_are_taken_as_they_are_and_others_parsed() {
        let config = Config::load(
            None,
            env(&[
                ("CLOUDPOP_REDIS_PASSWORD", "\"quoted\" = [1]"),
                ("CLOUDPOP_S3_BUCKET", "\"bucket\""),
                ("CLOUDPOP_LOG", "123"),
                ("CLOUDPOP_MAX_CONNECTIONS", "7"),
                ("CLOUDPOP_ALLOW_PLAINTEXT_AUTH", "true"),
                ("CLOUDPOP_STORE", "s3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.redis_password.unwrap().expose(), "\"quoted\" = [1]");
        assert_eq!(config.s3_bucket, "\"bucket\"");
        assert_eq!(config.log, "123");
        assert_eq!(config.max_connections, 7);
        assert!(config.allow_plaintext_auth);
        assert_eq!(config.store, crate::config::StoreKind::S3);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("max_connections", "max_conections"), 1);
        assert_eq!(edit_distance("port", "pop3_listen"), 8);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
