//! The gRPC management and ingest API: `cloudpop.v1.Admin`, `cloudpop.v1.Ingest`,
//! `grpc.health.v1` (reflecting real readiness of the store and locks) and server reflection.
//!
//! Layout: [`proto`] (generated code only), [`auth`] (tokens and scopes), [`tokens`] (where
//! they come from, reloaded), [`admin`], [`ingest`], [`status`] (domain errors to gRPC codes).

pub mod admin;
pub mod auth;
pub mod ingest;
pub mod proto;
pub mod status;
pub mod tokens;

use crate::backends::Backends;
use crate::ops::readiness::{Readiness, State as ReadyState};
use crate::tls::CertStore;
use auth::{Scope, Tokens};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{info, warn};

/// Largest message chunk of a Deliver frame (the proto's promise).
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot read API tokens: {0}")]
    Tokens(std::io::Error),
    #[error("API TLS configuration rejected: {0}")]
    Tls(String),
    #[error("cannot listen on {addr} for the API (api_listen): {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(
        "api_listen = {0:?} is reachable from the network without TLS: tokens and passwords would cross it \
         in clear. Set api_tls = true, listen on loopback, or set api_allow_cleartext = true if \
         something else encrypts the traffic (a service mesh)"
    )]
    Cleartext(String),
}

/// What the API needs to start: `api_*` settings, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSettings {
    /// Listen address; empty disables the API.
    pub listen: String,
    pub tokens: tokens::TokenSources,
    /// Serve TLS (with the POP3 certificate).
    pub tls: bool,
    /// Require client certificates signed by this CA (mutual TLS); needs `tls`.
    pub client_ca: Option<PathBuf>,
    /// Serve cleartext on a non-loopback address (a service mesh encrypts it).
    pub allow_cleartext: bool,
}

/// What the Admin service reports and uses that is not a backend.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// `fs` or `s3`.
    pub store: &'static str,
    /// `memory` or `redis`.
    pub locks: &'static str,
    /// The maildrop lease operators' deletions hold.
    pub lock_lease: Duration,
}

/// The API's TLS acceptor (when `api_tls`), built before anything starts so mistakes stop
/// startup. It serves the POP3 certificate, and follows it when its files are replaced.
pub fn tls_acceptor(settings: &ApiSettings, certs: &CertStore) -> Result<Option<TlsAcceptor>, ApiError> {
    if !settings.tls {
        return Ok(None);
    }
    crate::tls::api_acceptor(certs.resolver(), settings.client_ca.as_deref()).map(Some).map_err(|e| match e {
        // Name the setting, so the operator knows which file to fix.
        crate::tls::TlsError::Pem { path, message } if settings.client_ca.as_ref() == Some(&path) => {
            ApiError::Tls(format!("api_client_ca = {}: {message}", path.display()))
        }
        other => ApiError::Tls(other.to_string()),
    })
}

/// Accepted connections after their TLS handshake; handshakes run concurrently, so one slow
/// client cannot hold up the others.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    use crate::metrics::{TlsLabels, metrics};
    let (ready, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                let outcome = if matches!(handshake, Ok(Ok(_))) { "ok" } else { "failed" };
                metrics().tls_handshakes.get_or_create(&TlsLabels { listener: "api", outcome }).inc();
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// Binds the API listener; returns it with its address (for port 0). Without any token the API
/// could only refuse calls, so it is not started at all (and takes no port).
pub async fn bind(
    settings: &ApiSettings,
    tokens: &Tokens,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, ApiError> {
    if settings.listen.is_empty() {
        return Ok(None);
    }
    if tokens.is_empty() {
        info!("API not started: no api_admin_tokens or api_ingest_tokens configured");
        return Ok(None);
    }
    let loopback = settings.listen.parse::<SocketAddr>().is_ok_and(|a| a.ip().to_canonical().is_loopback());
    if !loopback && !settings.tls && !settings.allow_cleartext {
        return Err(ApiError::Cleartext(settings.listen.clone()));
    }
    let bind_err = |source| ApiError::Bind { addr: settings.listen.clone(), source };
    let listener = tokio::net::TcpListener::bind(&settings.listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok(Some((listener, addr)))
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    facts: Arc<ServerFacts>,
    backends: Backends,
    tls: Option<TlsAcceptor>,
    tokens: tokens::TokenStore,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(follow_readiness(reporter, readiness.subscribe()));

    let admin_tokens = tokens.clone();
    let admin = proto::admin_server::AdminServer::with_interceptor(
        admin::AdminService { backends: backends.clone(), facts: facts.clone() },
        move |req| admin_tokens.current().check(&req, Scope::Admin).map(|()| req),
    );
    let ingest_tokens = tokens.clone();
    // The proto promises chunks of up to 4 MiB: a frame is that plus its own encoding.
    let ingest = proto::ingest_server::IngestServer::new(ingest::IngestService { delivery: backends.delivery.clone() })
        .max_decoding_message_size(MAX_CHUNK + 64);
    let ingest = tonic::service::interceptor::InterceptedService::new(ingest, move |req: tonic::Request<()>| {
        ingest_tokens.current().check(&req, Scope::Ingest).map(|()| req)
    });
    // Reflection in both versions: grpc.reflection.v1, and v1alpha for the clients that speak
    // only it (grpcurl before 1.8.8, older Postman). Any valid token may read it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("descriptor sets are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("descriptor sets are valid");
    let token_check = move |req: tonic::Request<()>| tokens.current().check_any(&req).map(|()| req);
    let reflection_v1 = tonic::service::interceptor::InterceptedService::new(reflection_v1, token_check.clone());
    let reflection_v1alpha = tonic::service::interceptor::InterceptedService::new(reflection_v1alpha, token_check);

    let router = Server::builder()
        .timeout(Duration::from_secs(600))
        .layer(crate::telemetry::grpc::TraceLayer)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(ingest);
    info!(tls = tls.is_some(), "API serving");
    let result = match tls {
        Some(acceptor) => {
            let incoming = tls_incoming(listener, acceptor, shutdown.clone());
            router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
        }
        None => {
            use tokio_stream::StreamExt as _;
            // Without TCP_NODELAY, small replies wait for the peer's delayed ACK (~40 ms).
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|conn| conn.inspect(|tcp| drop(tcp.set_nodelay(true))));
            router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
        }
    };
    if let Err(e) = result {
        warn!(error = %e, "API server stopped");
    }
    Ok(())
}

/// Keeps `grpc.health.v1` in step with the process's readiness (the same state as `/readyz`).
async fn follow_readiness(reporter: tonic_health::server::HealthReporter, mut state: watch::Receiver<ReadyState>) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let mut last = None;
    loop {
        let ready = state.borrow_and_update().is_ready();
        if last != Some(ready) {
            let status = if ready { Serving } else { NotServing };
            for service in ["", "cloudpop.v1.Admin", "cloudpop.v1.Ingest", "cloudpop.v1.Pop3"] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(ready);
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}
