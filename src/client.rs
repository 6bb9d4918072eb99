//! The command line's client of a running server's gRPC API (`--api URL`), so that `account`,
//! `deliver` and `admin` work against any deployment, embedded or cloud.

use crate::api::proto::admin_client::AdminClient;
use crate::api::proto::ingest_client::IngestClient;
use crate::api::proto::{DeliverRequest, DeliverResponse, End, Envelope, deliver_request::Frame};
use crate::secret::Secret;
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Chunk size of streamed deliveries.
const CHUNK: usize = 256 * 1024;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Secret);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0.expose())
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the API token contains invalid characters"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// Why the API could not be reached, or did not say it serves.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid API URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Ca { path: std::path::PathBuf, source: std::io::Error },
    #[error("TLS setup failed: {0}")]
    Tls(tonic::transport::Error),
    #[error("cannot reach the API at {url}: {source}")]
    Connect { url: String, source: tonic::transport::Error },
    #[error(
        "{0} is not encrypted and not on this machine: the API token and passwords would cross the network in \
         clear. Use https:// (the server's api_tls), or --allow-cleartext where something else encrypts the traffic"
    )]
    Cleartext(String),
    #[error("health check at {url} failed: {message}")]
    Health { url: String, message: String },
    #[error("the API at {url} reports {status}")]
    NotServing { url: String, status: &'static str },
}

/// A connection to the API at `url`, over TLS for `https://` (trusting `ca` when given, else the
/// system roots).
async fn channel(url: &str, ca: Option<&Path>) -> Result<Channel, ClientError> {
    let mut endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| ClientError::Url { url: url.to_owned(), reason: e.to_string() })?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|source| ClientError::Ca { path: ca.to_path_buf(), source })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(ClientError::Tls)?;
    }
    endpoint.connect().await.map_err(|source| ClientError::Connect { url: url.to_owned(), source })
}

/// Whether `url` names this machine: `localhost` or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Asks the server's `grpc.health.v1` service (open, no token) whether it is serving.
pub async fn health(url: &str, ca: Option<&Path>) -> Result<(), ClientError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = HealthClient::new(channel(url, ca).await?);
    let reply = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| ClientError::Health { url: url.to_owned(), message: status.message().to_owned() })?;
    match reply.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(ClientError::NotServing { url: url.to_owned(), status: other.as_str_name() }),
    }
}

/// Connected clients of both services (clones share the connection).
#[derive(Clone)]
pub struct ApiClient {
    pub admin: AdminClient<Authed>,
    pub ingest: IngestClient<Authed>,
}

impl ApiClient {
    /// Connects to `url` (`http://` or `https://`), trusting `ca` for https when given. The
    /// token (and any password a call carries) never goes over `http://` to another host unless
    /// `allow_cleartext` says so.
    pub async fn connect(
        url: &str,
        token: Secret,
        ca: Option<&Path>,
        allow_cleartext: bool,
    ) -> Result<Self, ClientError> {
        if url.starts_with("http://") && !allow_cleartext && !is_loopback_url(url) {
            return Err(ClientError::Cleartext(url.to_owned()));
        }
        let channel = channel(url, ca).await?;
        Ok(Self {
            admin: AdminClient::with_interceptor(channel.clone(), Bearer(token.clone())),
            ingest: IngestClient::with_interceptor(channel, Bearer(token)),
        })
    }

    /// Streams one message to `recipients`.
    pub async fn deliver(
        &mut self,
        recipients: Vec<String>,
        idempotency_key: String,
        input: impl AsyncRead + Unpin + Send + 'static,
    ) -> Result<DeliverResponse, tonic::Status> {
        self.deliver_envelope(Envelope { recipients, idempotency_key, ..Envelope::default() }, input).await
    }

    /// Streams one message with a whole envelope (a kept UIDL and receipt time, for imports).
    pub async fn deliver_envelope(
        &mut self,
        envelope: Envelope,
        mut input: impl AsyncRead + Unpin + Send + 'static,
    ) -> Result<DeliverResponse, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel::<DeliverRequest>(4);
        let envelope = DeliverRequest { frame: Some(Frame::Envelope(envelope)) };
        // A read error drops the sender without the End frame, so the server stores nothing.
        let reader = tokio::spawn(async move {
            if tx.send(envelope).await.is_err() {
                return Ok(());
            }
            let mut size = 0u64;
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let n = input.read(&mut chunk).await?;
                if n == 0 {
                    let _ = tx.send(DeliverRequest { frame: Some(Frame::End(End { size })) }).await;
                    return Ok::<(), std::io::Error>(());
                }
                chunk.truncate(n);
                size += n as u64;
                if tx.send(DeliverRequest { frame: Some(Frame::Chunk(chunk)) }).await.is_err() {
                    return Ok(());
                }
            }
        });
        let reply = self.ingest.deliver(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        match reader.await {
            Ok(Err(e)) => return Err(tonic::Status::cancelled(format!("reading the message failed: {e}"))),
            Err(e) => return Err(tonic::Status::internal(e.to_string())),
            Ok(Ok(())) => {}
        }
        reply.map(tonic::Response::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for url in ["http://127.0.0.1:7110", "http://localhost:7110", "http://[::1]:7110", "http://127.9.9.9"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in
            ["http://10.0.0.5:7110", "http://cloudpop-api.mail.svc:7110", "http://127.0.0.1.example.net", "nonsense"]
        {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
