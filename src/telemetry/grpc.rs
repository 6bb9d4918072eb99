//! A span per gRPC call that joins the caller's trace: the W3C `traceparent` (and
//! `tracestate`) request metadata becomes the parent of the server span, so a delivery shows up
//! inside the trace of the service that sent it.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::task::{Context, Poll};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Wraps a gRPC server in [`Traced`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced { inner }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Health checks and reflection are called every few seconds by probes: not worth a trace.
fn traced(path: &str) -> bool {
    !path.starts_with("/grpc.health.") && !path.starts_with("/grpc.reflection.")
}

impl<S, B, R> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !traced(path) {
            return Box::pin(self.inner.call(request));
        }
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
        let _ = span.set_parent(parent);
        let future = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = future.await?;
                // Errors are usually sent as headers only ("trailers-only"); a success's
                // status travels in the trailers, which this layer does not wait for.
                let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
                if let Some(status) = status {
                    recorded.record("rpc.grpc.status_code", status);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
