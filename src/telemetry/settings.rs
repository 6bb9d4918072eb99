//! What the trace exporter is told: the collector, its headers, the resource and the sampler,
//! resolved once from the configuration (which already folded in the standard `OTEL_*`
//! variables) and checked before anything starts.

use crate::config::Config;
use opentelemetry_sdk::trace::Sampler;
use std::fmt;

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
    fn parse(name: &str, arg: &str) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            if arg.trim().is_empty() {
                return Ok(1.0);
            }
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!("otel_traces_sampler_arg = {arg:?} is not a ratio between 0 and 1")),
            }
        };
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio()?),
            "" | "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedRatio(ratio()?),
            other => return Err(format!("otel_traces_sampler = {other:?} is not a supported sampler")),
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
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let sampler = SamplerChoice::parse(&config.otel_traces_sampler, &config.otel_traces_sampler_arg)?;
        let endpoint = match (config.otel_traces_endpoint.trim(), config.otel_endpoint.trim()) {
            ("", "") => return Ok(None),
            ("", general) => general.to_owned(),
            (traces, _) => traces.to_owned(),
        };
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(format!("the OTLP endpoint {endpoint:?} must start with http:// or https://"));
        }
        if endpoint.parse::<http::Uri>().is_err() {
            return Err(format!("the OTLP endpoint {endpoint:?} is not a valid URL"));
        }
        let headers = match &config.otel_headers {
            Some(secret) => key_values(secret.expose())
                .map_err(|e| format!("otel_headers: {e}"))?
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            None => Vec::new(),
        };
        for (key, value) in &headers {
            let valid = key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>().is_ok()
                && value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>().is_ok();
            if !valid {
                return Err(format!("otel_headers: {key:?} is not a valid gRPC metadata entry"));
            }
        }
        let mut resource =
            key_values(&config.otel_resource_attributes).map_err(|e| format!("otel_resource_attributes: {e}"))?;
        // OTEL_SERVICE_NAME wins over a service.name among the attributes, per the specification.
        resource.retain(|(k, _)| k != "service.name" || config.otel_service_name.is_empty());
        let mut put = |key: &str, value: String| {
            if !resource.iter().any(|(k, _)| k == key) {
                resource.push((key.to_owned(), value));
            }
        };
        put("service.name", config.otel_service_name.clone());
        put("service.version", env!("CARGO_PKG_VERSION").to_owned());
        // The pod name where Kubernetes provides it (downward API), else host and process.
        let instance = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty());
        put("service.instance.id", instance.unwrap_or_else(crate::coord::registry::frontend_name));
        if config.otel_sdk_disabled {
            return Ok(None);
        }
        Ok(Some(Self { endpoint, headers, resource, sampler }))
    }
}

/// Parses `key=value,key2=value2` with percent-encoded values (the OTEL_* list format).
fn key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item.split_once('=').ok_or_else(|| format!("{item:?} is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            Ok((key.to_owned(), percent_decode(value.trim())?))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("%{hex} is not a valid escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a value is not UTF-8 after decoding".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn off_unless_an_endpoint_is_set_and_not_disabled() {
        assert!(OtelSettings::from_config(&Config::default()).unwrap().is_none());
        let on = Config { otel_endpoint: "http://collector:4317".into(), ..Config::default() };
        assert_eq!(OtelSettings::from_config(&on).unwrap().unwrap().endpoint, "http://collector:4317");
        let disabled = Config { otel_sdk_disabled: true, ..on.clone() };
        assert!(OtelSettings::from_config(&disabled).unwrap().is_none());
        let traces = Config { otel_traces_endpoint: "https://traces:4317".into(), ..on };
        assert_eq!(OtelSettings::from_config(&traces).unwrap().unwrap().endpoint, "https://traces:4317");
    }

    #[test]
    fn resource_headers_and_sampler_follow_the_specification() {
        let config = Config {
            otel_endpoint: "http://c:4317".into(),
            otel_headers: Some(Secret::new("Api-Key=s%3Dcret, x-tenant = blue")),
            otel_resource_attributes: "service.name=ignored,deployment.environment=prod%20eu".into(),
            otel_service_name: "pop-eu".into(),
            otel_traces_sampler: "parentbased_traceidratio".into(),
            otel_traces_sampler_arg: "0.25".into(),
            ..Config::default()
        };
        let s = OtelSettings::from_config(&config).unwrap().unwrap();
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
    fn mistakes_are_refused() {
        let base = Config { otel_endpoint: "http://c:4317".into(), ..Config::default() };
        for bad in [
            Config { otel_endpoint: "collector:4317".into(), ..base.clone() },
            Config { otel_traces_sampler: "sometimes".into(), ..base.clone() },
            Config { otel_traces_sampler: "traceidratio".into(), otel_traces_sampler_arg: "2".into(), ..base.clone() },
            Config { otel_headers: Some(Secret::new("novalue")), ..base.clone() },
            Config { otel_resource_attributes: "a=%zz".into(), ..base.clone() },
        ] {
            assert!(OtelSettings::from_config(&bad).is_err(), "{bad:?}");
        }
    }
}
