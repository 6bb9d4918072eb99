//! LMTP (RFC 2033): delivery from the provider's MTAs (Postfix `lmtp:`, Exim's `lmtp`
//! transport) into the same delivery service as the gRPC Ingest API.
//!
//! The protocol itself (command legality, the transaction, every reply) is the pure
//! [`crate::protocol::lmtp::Machine`]; this driver reads lines into it and carries out the steps
//! it asks for: looking recipients up, receiving the data (dot-unstuffed and spooled chunk by
//! chunk: bounded memory for any size), delivering it, and STARTTLS. After the data the server
//! answers once per accepted recipient, in order, and each `250` is sent only after that
//! recipient's copy is durably stored. Only clients in `lmtp_trusted_networks` are served
//! (checked by the shared acceptor).

mod deliver;

use crate::names::AccountName;
use crate::protocol::framing::Frame;
use crate::protocol::lines::LineBuffer;
use crate::protocol::lmtp::address::AddressRule;
use crate::protocol::lmtp::{self, Lookup, Machine, Step};
use crate::session::{Context, read_into};
use ipnet::IpNet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::field::Empty;
use tracing::{Instrument, debug, info_span, warn};

/// Idle time allowed between commands, and between two reads of the data (RFC 5321 section
/// 4.5.3.2.7 asks servers to wait five minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Data read from the client at once.
const READ_CHUNK: usize = 64 * 1024;

/// The listener's settings (`lmtp_*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How a recipient address becomes a mailbox name.
    pub rule: AddressRule,
    /// Only these client networks may connect (the MTAs).
    pub trusted: Vec<IpNet>,
    /// The name in greetings and `Received:` lines.
    pub hostname: String,
    /// Add `Return-Path:` and `Received:` to stored messages.
    pub trace_headers: bool,
    /// A full mailbox is `452 4.2.2` (retry) instead of `552 5.2.2` (bounce).
    pub quota_tempfail: bool,
    /// Offer STARTTLS.
    pub starttls: bool,
    /// Largest message accepted, in octets after CRLF normalisation.
    pub max_size: u64,
    pub max_connections: usize,
}

/// How a connection's command loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    StartTls,
}

/// Serves one connection (and its TLS continuation after STARTTLS) to the end.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<Context>, settings: Arc<Settings>) {
    let id = crate::session::session_id();
    let span =
        info_span!("lmtp.session", otel.kind = "server", session = %id, %peer, lhlo = Empty, tls.version = Empty);
    async {
        let machine = Machine::new(lmtp::Settings {
            hostname: settings.hostname.clone(),
            max_size: settings.max_size,
            starttls: settings.starttls && ctx.tls.is_some(),
            quota_tempfail: settings.quota_tempfail,
            rule: settings.rule.clone(),
        });
        let mut conn =
            Connection { ctx: &ctx, settings: &settings, id: &id, peer, span: span.clone(), machine, out: Vec::new() };
        conn.out.extend(conn.machine.greeting());
        let result = match (conn.run(&mut stream).await, ctx.tls.as_ref()) {
            (Ok(Ending::StartTls), Some(tls)) => {
                match crate::tls::handshake::accept(tls, stream, IDLE_TIMEOUT, "lmtp", &span).await {
                    Ok(mut tls_stream) => {
                        conn.machine.start_tls();
                        conn.run(&mut tls_stream).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                }
            }
            (result, _) => result.map(|_| ()),
        };
        match result {
            Ok(()) => debug!("LMTP connection closed"),
            Err(e) => debug!(error = %e, "LMTP connection ended"),
        }
    }
    .instrument(span.clone())
    .await
}

/// One LMTP connection: the machine and the IO it asks for.
struct Connection<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    id: &'a str,
    peer: SocketAddr,
    span: tracing::Span,
    machine: Machine,
    out: Vec<u8>,
}

impl Connection<'_> {
    /// Reads and carries out commands until QUIT, STARTTLS or the end of the connection.
    /// Replies to pipelined commands are sent together, once no more input is waiting.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> io::Result<Ending> {
        let mut input = LineBuffer::new(lmtp::MAX_LINE);
        loop {
            if let Some(ending) = self.answer_buffered(stream, &mut input).await? {
                return Ok(ending);
            }
            self.flush(stream).await?;
            let read = tokio::select! {
                // A shutdown under way wins over input that is waiting too: a session whose
                // transaction finished during the drain is told to go, whatever it sends next.
                biased;
                () = self.ctx.closing.cancelled() => return self.close_with(stream, lmtp::shutdown_reply()).await,
                read = tokio::time::timeout(IDLE_TIMEOUT, read_into(stream, &mut input, READ_CHUNK)) => read,
            };
            match read {
                Ok(Ok(0)) => return Ok(Ending::Close),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return self.close_with(stream, lmtp::idle_reply()).await,
            }
        }
    }

    /// Carries out every complete command already buffered; `Some` when the loop is done.
    async fn answer_buffered<S>(&mut self, stream: &mut S, input: &mut LineBuffer) -> io::Result<Option<Ending>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut step = match input.next_line() {
                Frame::Line(line) => self.machine.on_line(line),
                Frame::TooLong => self.machine.on_line_too_long(),
                Frame::NeedMore => return Ok(None),
            };
            if !self.machine.helo().is_empty() {
                self.span.record("lhlo", self.machine.helo());
            }
            loop {
                step = match step {
                    Step::Reply(reply) => {
                        self.out.extend(reply);
                        break;
                    }
                    Step::LookUp { address, mailbox } => {
                        let found = self.look_up(&address, mailbox).await;
                        self.machine.recipient_found(found)
                    }
                    Step::ReceiveData(reply) => {
                        self.out.extend(reply);
                        self.flush(stream).await?;
                        self.receive_and_deliver(stream, input).await?
                    }
                    Step::StartTls(reply) => {
                        // Anything pipelined behind STARTTLS was sent in clear: it is dropped,
                        // never taken as said under TLS.
                        input.clear();
                        self.out.extend(reply);
                        self.flush(stream).await?;
                        return Ok(Some(Ending::StartTls));
                    }
                    Step::Close(reply) => return self.close_with(stream, reply).await.map(Some),
                }
            }
        }
    }

    /// `RCPT TO`: the mailbox must exist and take mail now (it is checked again at delivery).
    /// With a directory (`auth_backend`), a recipient without a mailbox yet is looked up
    /// there and gets its mailbox now, as at a first login.
    async fn look_up(&self, address: &str, mailbox: AccountName) -> Lookup {
        let backends = &self.ctx.backends;
        let found = match backends.accounts.get_for_delivery(&mailbox).await {
            Ok(None) => backends
                .auth
                .recipient(&self.settings.rule.without_subaddress(address))
                .await
                .map_err(|e| e.to_string()),
            other => other.map_err(|e| e.to_string()),
        };
        match found {
            Ok(Some(account)) if account.deleting => Lookup::NoSuchMailbox,
            Ok(Some(account)) if account.disabled => Lookup::Disabled,
            Ok(Some(account)) => Lookup::Found(AccountName::parse(&account.name).unwrap_or(mailbox)),
            Ok(None) => Lookup::NoSuchMailbox,
            Err(e) => {
                warn!(error = %e, "account lookup failed for an LMTP recipient");
                Lookup::Unavailable
            }
        }
    }

    async fn close_with<S: AsyncWrite + Unpin>(&mut self, stream: &mut S, reply: Vec<u8>) -> io::Result<Ending> {
        self.out.extend(reply);
        self.flush(stream).await?;
        Ok(Ending::Close)
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> io::Result<()> {
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }
}
