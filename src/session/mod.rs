//! One POP3 connection: drives the pure [`Machine`] with real IO.
//!
//! The loop is generic over the stream, so plain TCP, STLS-upgraded and implicit-TLS
//! connections share one code path. After STLS the loop starts again over the TLS stream with a
//! fresh parser: nothing read before the handshake survives it.
//!
//! Layout: this file (the connection and its span, STLS), [`stream`] (one stream's loop:
//! answer what is buffered, wait for input), [`login`] (credentials, lock, snapshot),
//! [`retrieve`] (RETR/TOP streaming and UPDATE), [`proxied`] (PROXY headers), [`settings`].
//! The held maildrop lock is [`crate::coord::lock::held::HeldLease`].

mod login;
pub mod proxied;
mod read_ahead;
mod retrieve;
mod settings;
mod stream;

pub use settings::Pop3Settings;
use stream::{Session, Transfer, WRITE_CHUNK};
pub(crate) use stream::{read_into, session_id};

use crate::backends::Backends;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, debug, info_span};

/// Everything a session needs, shared by all sessions of a process.
pub struct Context {
    pub settings: Pop3Settings,
    pub backends: Backends,
    /// Present when TLS is configured (always, with the self-signed default).
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when the listeners close during a graceful shutdown: sessions still in
    /// AUTHORIZATION are refused at their next command; sessions in TRANSACTION go on.
    pub closing: CancellationToken,
    /// Cancelled when the shutdown grace ends (or at once on a fast shutdown): every session
    /// closes now, and none enters UPDATE.
    pub cut: CancellationToken,
    /// The process's memory for messages read ahead, in KiB permits (`retr_read_ahead_total_mib`).
    pub read_ahead_pool: Arc<tokio::sync::Semaphore>,
}

/// How a connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 110 role: plaintext with STLS.
    Plain,
    /// Port 995 role: TLS from the first byte.
    ImplicitTls,
}

impl Listener {
    /// The listener's name in logs, metrics and traces.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Plain => "pop3",
            Listener::ImplicitTls => "pop3s",
        }
    }
}

/// Serves one accepted connection to the end, giving its address slot back at login. Errors
/// are logged, never propagated.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    listener: Listener,
    ctx: Arc<Context>,
    address_slot: Option<crate::limits::AddressSlot>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = session_id();
    let span = info_span!(
        "pop3.session",
        otel.kind = "server",
        session = %id,
        %peer,
        listener = listener.name(),
        tls.version = Empty,
        account = Empty,
        trace_id = Empty,
    );
    crate::telemetry::record_trace_id(&span);
    let login_deadline = Instant::now() + ctx.settings.login_deadline;
    let address_slot = crate::limits::UntilLogin::new(address_slot);
    let conn = Connection { ctx: &ctx, id: &id, peer, span: span.clone(), listener, login_deadline, address_slot };
    async {
        let result = match (listener, ctx.tls.clone()) {
            (Listener::ImplicitTls, Some(tls)) => match Box::pin(conn.handshake(&tls, stream)).await {
                Ok(tls_stream) => {
                    let binding = login::channel_binding(&tls_stream);
                    Box::pin(conn.session(true, binding).run(tls_stream, true)).await.map(|_| ())
                }
                Err(e) => Err(e),
            },
            (Listener::ImplicitTls, None) => Err(io::Error::other("implicit TLS listener without TLS configuration")),
            (Listener::Plain, tls) => match Box::pin(conn.session(false, None).run(stream, true)).await {
                Ok(Some(plain)) => match tls {
                    Some(tls) => match Box::pin(conn.handshake(&tls, plain)).await {
                        Ok(tls_stream) => {
                            debug!("STLS handshake complete");
                            let binding = login::channel_binding(&tls_stream);
                            Box::pin(conn.session(true, binding).run(tls_stream, false)).await.map(|_| ())
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => debug!("connection closed"),
            Err(e) => debug!(error = %e, "connection ended"),
        }
    }
    .instrument(span)
    .await
}

/// What the streams of one connection (two after STLS) share.
struct Connection<'a> {
    ctx: &'a Context,
    id: &'a str,
    peer: SocketAddr,
    /// The `pop3.session` span: the account is recorded on it after login.
    span: tracing::Span,
    listener: Listener,
    /// The connection must reach TRANSACTION by then (STLS does not restart the clock).
    login_deadline: Instant,
    address_slot: Arc<crate::limits::UntilLogin>,
}

impl<'a> Connection<'a> {
    fn session(&self, tls_active: bool, channel_binding: Option<Vec<u8>>) -> Session<'a> {
        let mut session = Session::new(self.ctx, self.id, self.peer, tls_active, self.span.clone());
        session.machine.set_channel_binding(channel_binding);
        session.login_deadline = self.login_deadline;
        session.address_slot = self.address_slot.clone();
        session
    }

    async fn handshake<S>(&self, tls: &TlsAcceptor, stream: S) -> io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.ctx.settings.login_timeout;
        crate::tls::handshake::accept(tls, stream, timeout, self.listener.name(), &self.span).await
    }
}
