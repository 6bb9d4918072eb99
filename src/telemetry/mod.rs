//! Logs and traces: the `tracing` subscriber of `cloudpop serve`, with human or JSON log lines
//! and, when a collector is configured, OpenTelemetry spans exported over OTLP/gRPC.
//!
//! Layout: [`settings`] (collector, resource, sampler from `otel_*` and `OTEL_*`), [`export`]
//! (batching that never blocks a session, and drop counting), [`grpc`] (gRPC server spans that
//! join the caller's trace). The helpers here put W3C trace context into and out of spans.

pub mod export;
pub mod grpc;
pub mod settings;

use crate::config::LogFormat;
use crate::store::TraceParent;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
pub use settings::OtelSettings;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Why logging or tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// What logging and tracing were configured with.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Log filter in `tracing` syntax; `RUST_LOG` overrides it.
    pub log: String,
    pub log_format: LogFormat,
    /// Trace export; `None` when off.
    pub otel: Option<OtelSettings>,
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] exports what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes queued spans, giving up after a short while (the collector may be gone).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
        }
    }
}

/// The log filter: `RUST_LOG` when set, else the `log` setting.
fn log_filter(log: &str) -> Result<EnvFilter, TelemetryError> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => log.to_owned(),
    };
    EnvFilter::try_new(&directives).map_err(|e| TelemetryError::Filter(format!("{directives:?}: {e}")))
}

/// Installs the global subscriber. Must run inside the tokio runtime (the exporter's channel
/// is created there).
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(&settings.log)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match settings.log_format {
        LogFormat::Text => fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed(),
        // Every line carries the fields of the spans it happened in: session id, trace id, peer.
        LogFormat::Json => {
            fmt::layer().json().with_current_span(false).with_span_list(true).with_writer(std::io::stderr).boxed()
        }
    }
    .with_filter(filter);
    let (traces, provider) = match &settings.otel {
        Some(otel) => {
            let provider = tracer_provider(otel)?;
            let tracer = provider.tracer("cloudpop");
            // Only cloudpop's own spans and events, at info and above: the SDKs' internals
            // (HTTP, Redis, S3 client) stay out of the traces.
            let targets = Targets::new().with_target("cloudpop", LevelFilter::INFO);
            let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(targets);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// The OTLP/gRPC exporter behind the batching and counting of [`export`].
fn tracer_provider(settings: &OtelSettings) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (key, value) in &settings.headers {
        // Checked by OtelSettings::from_config already.
        if let (Ok(key), Ok(value)) = (key.parse::<tonic::metadata::MetadataKey<_>>(), value.parse()) {
            metadata.insert(key, value);
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .with_metadata(metadata)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let in_flight = export::InFlight::default();
    let queue = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(2048usize);
    let batches = BatchSpanProcessor::builder(export::Counting::new(exporter, in_flight.clone()))
        .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(queue).build())
        .build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(settings.resource.iter().map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(export::Admission::new(batches, in_flight, queue))
        .with_sampler(settings.sampler.build())
        .with_resource(resource)
        .build())
}

/// Records the span's trace id in its `trace_id` field, so log lines can be matched to the
/// trace. Nothing happens when traces are not exported.
pub fn record_trace_id(span: &tracing::Span) {
    let cx = span.context();
    let context = cx.span().span_context().clone();
    if context.is_valid() {
        span.record("trace_id", tracing::field::display(context.trace_id()));
    }
}

/// Reads one `traceparent` header.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The span context a stored `traceparent` names.
pub fn span_context(traceparent: &TraceParent) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(&OneHeader(traceparent.as_str()));
    let context = cx.span().span_context().clone();
    context.is_valid().then_some(context)
}

/// Links `span` to the trace that delivered a message (a retrieval to its delivery).
pub fn link_to_delivery(span: &tracing::Span, traceparent: &TraceParent) {
    if let Some(context) = span_context(traceparent) {
        span.add_link(context);
    }
}

/// The W3C `traceparent` of `span`, to keep beside a message it stores; `None` when traces are
/// off and no caller sent one.
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    let context = cx.span().span_context().clone();
    if !context.is_valid() {
        return None;
    }
    let flags = if context.is_sampled() { "01" } else { "00" };
    TraceParent::parse(&format!("00-{}-{}-{flags}", context.trace_id(), context.span_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_trace_context_becomes_a_link_target() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let context = span_context(&tp).unwrap();
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        for bad in ["", "00-0000-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zz"]
        {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }
}
