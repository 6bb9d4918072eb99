//! What the trace exporter is told: the collector, its headers, the resource and the sampler,
//! resolved once from the `otel_*` settings (which already folded in the standard `OTEL_*`
//! variables) and checked before anything starts.

use crate::secret::Secret;
use opentelemetry_sdk::trace::Sampler;
use std::fmt;

/// The `otel_*` settings as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelKeys<'a> {
    pub endpoint: &'a str,
    pub traces_endpoint: &'a str,
    pub headers: Option<&'a Secret>,
    pub resource_attributes: &'a str,
    pub service_name: &'a str,
    pub traces_sampler: &'a str,
    pub traces_sampler_arg: &'a str,
    pub sdk_disabled: bool,
}

/// A trace export setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OtelSettingsError {
    #[error("otel_traces_sampler_arg = {0:?} is not a ratio between 0 and 1")]
    Ratio(String),
    #[error("otel_traces_sampler = {0:?} is not a supported sampler")]
    Sampler(String),
    #[error("the OTLP endpoint {0:?} must start with http:// or https://")]
    Scheme(String),
    #[error("the OTLP endpoint {0:?} is not a valid URL")]
    Url(String),
    #[error("{key}: {problem}")]
    List { key: &'static str, problem: ListError },
    #[error("otel_headers: {0:?} is not a valid gRPC metadata entry")]
    Metadata(String),
}

/// What is wrong in a `key=value,...` list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListError {
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("{0:?} has an empty key")]
    EmptyKey(String),
    #[error("a % escape is cut short")]
    ShortEscape,
    #[error("%{0} is not a valid escape")]
    BadEscape(String),
    #[error("a value is not UTF-8 after decoding")]
    NotUtf8,
}

/// Trace export settings; `None` from [`OtelSettings::from_config`] means tracing is off.
#[derive(Clone)]
pub struct OtelSettings {
    /// The OTLP/gRPC collector, `http://` or `https://`.
    pub endpoint: String,
    /// gRPC metadata sent with every export (may hold credentials: never printed).
    pub headers: Vec<(String, String)>,
    /// Resource attributes, `service.*` included.
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerChoice,
}

impl fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelSettings")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.iter().map(|(k, _)| (k, "<redacted>")).collect::<Vec<_>>())
            .field("resource", &self.resource)
            .field("sampler", &self.sampler)
            .finish()
    }
}

/// The samplers of the OpenTelemetry specification (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn parse(name: &str, arg: &str) -> Result<Self, OtelSettingsError> {
        let ratio = || {
            if arg.trim().is_empty() {
                return Ok(1.0);
            }
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(OtelSettingsError::Ratio(arg.to_owned())),
            }
        };
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio()?),
            "" | "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedRatio(ratio()?),
            other => return Err(OtelSettingsError::Sampler(other.to_owned())),
        })
    }

    pub fn build(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

impl OtelSettings {
    /// The settings, `Ok(None)` when tracing is off (no endpoint, or `otel_sdk_disabled`).
    pub fn resolve(keys: &OtelKeys<'_>) -> Result<Option<Self>, OtelSettingsError> {
        let sampler = SamplerChoice::parse(keys.traces_sampler, keys.traces_sampler_arg)?;
        let endpoint = match (keys.traces_endpoint.trim(), keys.endpoint.trim()) {
            ("", "") => return Ok(None),
            ("", general) => general.to_owned(),
            (traces, _) => traces.to_owned(),
        };
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(OtelSettingsError::Scheme(endpoint));
        }
        if endpoint.parse::<http::Uri>().is_err() {
            return Err(OtelSettingsError::Url(endpoint));
        }
        let list = |key| move |problem| OtelSettingsError::List { key, problem };
        let headers = match keys.headers {
            Some(secret) => key_values(secret.expose())
                .map_err(list("otel_headers"))?
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            None => Vec::new(),
        };
        for (key, value) in &headers {
            let valid = key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>().is_ok()
                && value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>().is_ok();
            if !valid {
                return Err(OtelSettingsError::Metadata(key.clone()));
            }
        }
        let mut resource = key_values(keys.resource_attributes).map_err(list("otel_resource_attributes"))?;
        // OTEL_SERVICE_NAME wins over a service.name among the attributes, per the specification.
        resource.retain(|(k, _)| k != "service.name" || keys.service_name.is_empty());
        let mut put = |key: &str, value: String| {
            if !resource.iter().any(|(k, _)| k == key) {
                resource.push((key.to_owned(), value));
            }
        };
        put("service.name", keys.service_name.to_owned());
        put("service.version", env!("CARGO_PKG_VERSION").to_owned());
        // The pod name where Kubernetes provides it (downward API), else host and process.
        let instance = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty());
        put("service.instance.id", instance.unwrap_or_else(crate::coord::registry::frontend_name));
        if keys.sdk_disabled {
            return Ok(None);
        }
        Ok(Some(Self { endpoint, headers, resource, sampler }))
    }
}

/// Parses `key=value,key2=value2` with percent-encoded values (the OTEL_* list format).
fn key_values(text: &str) -> Result<Vec<(String, String)>, ListError> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item.split_once('=').ok_or_else(|| ListError::NotKeyValue(item.to_owned()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(ListError::EmptyKey(item.to_owned()));
            }
            Ok((key.to_owned(), percent_decode(value.trim())?))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Result<String, ListError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(ListError::ShortEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ListError::BadEscape(hex.to_owned()))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ListError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> OtelKeys<'static> {
        OtelKeys { endpoint: "http://collector:4317", ..OtelKeys::default() }
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_not_disabled() {
        assert!(OtelSettings::resolve(&OtelKeys::default()).unwrap().is_none());
        assert_eq!(OtelSettings::resolve(&on()).unwrap().unwrap().endpoint, "http://collector:4317");
        assert!(OtelSettings::resolve(&OtelKeys { sdk_disabled: true, ..on() }).unwrap().is_none());
        let traces = OtelKeys { traces_endpoint: "https://traces:4317", ..on() };
        assert_eq!(OtelSettings::resolve(&traces).unwrap().unwrap().endpoint, "https://traces:4317");
    }

    #[test]
    fn resource_headers_and_sampler_follow_the_specification() {
        let headers = Secret::new("Api-Key=s%3Dcret, x-tenant = blue");
        let keys = OtelKeys {
            endpoint: "http://c:4317",
            headers: Some(&headers),
            resource_attributes: "service.name=ignored,deployment.environment=prod%20eu",
            service_name: "pop-eu",
            traces_sampler: "parentbased_traceidratio",
            traces_sampler_arg: "0.25",
            ..OtelKeys::default()
        };
        let s = OtelSettings::resolve(&keys).unwrap().unwrap();
        assert_eq!(s.headers, vec![("api-key".into(), "s=cret".into()), ("x-tenant".into(), "blue".into())]);
        let get = |k: &str| s.resource.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("service.name"), Some("pop-eu"));
        assert_eq!(get("deployment.environment"), Some("prod eu"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert!(get("service.instance.id").is_some());
        assert_eq!(s.sampler, SamplerChoice::ParentBasedRatio(0.25));
        assert!(!format!("{s:?}").contains("cret"), "headers printed");
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        let novalue = Secret::new("novalue");
        let cases = [
            (OtelKeys { endpoint: "collector:4317", ..on() }, "must start with http://"),
            (OtelKeys { traces_sampler: "sometimes", ..on() }, "not a supported sampler"),
            (OtelKeys { traces_sampler: "traceidratio", traces_sampler_arg: "2", ..on() }, "not a ratio"),
            (OtelKeys { headers: Some(&novalue), ..on() }, "otel_headers: \"novalue\" is not key=value"),
            (OtelKeys { resource_attributes: "a=%zz", ..on() }, "otel_resource_attributes: %zz is not a valid"),
        ];
        for (keys, expected) in cases {
            let error = OtelSettings::resolve(&keys).unwrap_err().to_string();
            assert!(error.contains(expected), "{keys:?}: {error}");
        }
    }
}
