//! The operations surface: an HTTP listener (`ops_listen`) with `/metrics`, `/healthz` and
//! `/readyz`, present whether or not the gRPC API is enabled.
//!
//! Layout: [`readiness`] (the probe loop and drain flag shared with gRPC health); the
//! Prometheus families it serves are [`crate::metrics`].

pub mod readiness;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use readiness::Readiness;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Binds `ops_listen`; `None` when it is empty (disabled).
pub async fn bind(addr: &str) -> std::io::Result<Option<(TcpListener, SocketAddr)>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok(Some((listener, local)))
}

/// Serves the operations endpoints until `stop` is cancelled.
pub async fn serve(listener: TcpListener, readiness: Readiness, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        warn!(error = %e, "operations listener stopped");
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::metrics().encode(),
    )
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let state = readiness.current();
    let status = if state.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{}\n", state.describe()))
}
