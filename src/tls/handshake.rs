//! The server side of a TLS handshake, the same for every listener (POP3 implicit TLS and
//! STLS, LMTP STARTTLS): bounded in time, counted, and the negotiated version recorded on the
//! connection's span.

use crate::metrics::{TlsLabels, metrics};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Completes a handshake on `stream` within `timeout`, counted under `listener`; records
/// `tls.version` on `span`.
pub async fn accept<S>(
    tls: &TlsAcceptor,
    stream: S,
    timeout: Duration,
    listener: &'static str,
    span: &tracing::Span,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let accepted = tokio::time::timeout(timeout, tls.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
        .and_then(|r| r);
    let outcome = if accepted.is_ok() { "ok" } else { "failed" };
    metrics().tls_handshakes.get_or_create(&TlsLabels { listener, outcome }).inc();
    let tls_stream = accepted?;
    span.record("tls.version", version_name(tls_stream.get_ref().1.protocol_version()));
    Ok(tls_stream)
}

/// `1.3`, `1.2` (the only ones offered) or `other`.
fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    }
}
