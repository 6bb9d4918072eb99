//! LMTP (RFC 2033): delivery from the provider's MTAs (Postfix `lmtp:`, Exim's `lmtp`
//! transport) into the same pipeline as the gRPC Ingest API.
//!
//! A transaction is `LHLO`, `MAIL FROM`, one or more `RCPT TO`, `DATA`; after the data the
//! server answers once per accepted recipient, in order, so one message can be stored for some
//! mailboxes and refused (temporarily or for good) for others. The data is dot-unstuffed and
//! spooled chunk by chunk (bounded memory for any size), and each `250` is sent only after that
//! recipient's copy is durably stored. Only clients in `lmtp_trusted_networks` are served.
//!
//! Layout: this file (listener, connection, command loop), [`command`] (parsing), [`data`]
//! (the DATA section), [`address`] (recipient -> mailbox), [`trace`] (trace header fields).

pub mod address;
pub mod command;
pub mod data;
pub mod trace;

use crate::delivery::{self, DeliveryError, Outcome};
use crate::names::AccountName;
use crate::session::Context;
use address::AddressRule;
use command::{Command, Refusal};
use ipnet::IpNet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::field::Empty;
use tracing::{Instrument, debug, info, info_span, warn};

/// Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4 asks for 512 at least).
const MAX_LINE: usize = 2048;

/// Most recipients of one transaction (RFC 5321 section 4.5.3.1.8 asks for 100 at least).
const MAX_RECIPIENTS: usize = 100;

/// Idle time allowed between commands, and between two reads of the data (RFC 5321 section
/// 4.5.3.2.7 asks servers to wait five minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Malformed or out-of-order commands tolerated before the connection is closed.
const MAX_ERRORS: u32 = 20;

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

/// Serves one connection (and its TLS continuation after STARTTLS) to the end.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<Context>, settings: Arc<Settings>) {
    let id = crate::session::session_id();
    let span =
        info_span!("lmtp.session", otel.kind = "server", session = %id, %peer, lhlo = Empty, tls.version = Empty);
    async {
        let mut session = Session::new(&ctx, &settings, &id, peer, span.clone());
        let greeting = format!("220 {} LMTP cloudpop ready\r\n", settings.hostname);
        let result = match stream.write_all(greeting.as_bytes()).await {
            Ok(()) => session.run(&mut stream).await,
            Err(e) => Err(e),
        };
        let result = match (result, ctx.tls.as_ref()) {
            (Ok(Next::StartTls), Some(tls)) => {
                match crate::tls::handshake::accept(tls, stream, IDLE_TIMEOUT, "lmtp", &span).await {
                    Ok(mut tls_stream) => {
                        session.start_tls();
                        session.run(&mut tls_stream).await.map(|_| ())
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

/// How a command loop ended.
enum Next {
    Quit,
    StartTls,
}

/// One accepted recipient of the current transaction.
struct Recipient {
    /// The address as the client gave it (for `Delivered-To` and the reply).
    address: String,
    mailbox: AccountName,
}

/// The protocol state of one connection.
struct Session<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    id: &'a str,
    peer: SocketAddr,
    span: tracing::Span,
    tls: bool,
    helo: Option<String>,
    sender: Option<String>,
    recipients: Vec<Recipient>,
    errors: u32,
    out: Vec<u8>,
}

impl<'a> Session<'a> {
    fn new(ctx: &'a Context, settings: &'a Settings, id: &'a str, peer: SocketAddr, span: tracing::Span) -> Self {
        Self {
            ctx,
            settings,
            id,
            peer,
            span,
            tls: false,
            helo: None,
            sender: None,
            recipients: Vec::new(),
            errors: 0,
            out: Vec::with_capacity(1024),
        }
    }

    /// After the TLS handshake everything said before it is forgotten (RFC 3207 section 4.2).
    fn start_tls(&mut self) {
        self.tls = true;
        self.helo = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        use std::io::Write;
        let _ = write!(self.out, "{code} {enhanced} {text}\r\n");
    }

    fn refuse(&mut self, refusal: &Refusal) {
        self.errors += 1;
        self.reply(refusal.code, refusal.enhanced, refusal.text);
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> io::Result<()> {
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads and carries out commands until QUIT, STARTTLS or the end of the connection.
    /// Replies to pipelined commands are sent together, once no more input is waiting.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> io::Result<Next> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        // The tail of an overlong line is being skipped.
        let mut skipping = false;
        loop {
            if self.errors > MAX_ERRORS {
                self.reply(421, "4.7.0", "Too many errors, closing the connection");
                self.flush(stream).await?;
                return Ok(Next::Quit);
            }
            if let Some(end) = memchr::memchr(b'\n', &buf) {
                let line: Vec<u8> = buf.drain(..=end).collect();
                if std::mem::take(&mut skipping) {
                    continue;
                }
                if line.len() > MAX_LINE {
                    self.refuse(&Refusal { code: 500, enhanced: "5.5.2", text: "Line too long" });
                    continue;
                }
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                match command::parse(line) {
                    Ok(command) => {
                        if let Some(next) = self.command(command, stream, &mut buf).await? {
                            return Ok(next);
                        }
                    }
                    Err(refusal) => self.refuse(&refusal),
                }
                continue;
            }
            if buf.len() > MAX_LINE {
                buf.clear();
                if !skipping {
                    skipping = true;
                    self.refuse(&Refusal { code: 500, enhanced: "5.5.2", text: "Line too long" });
                }
            }
            self.flush(stream).await?;
            let read = tokio::select! {
                // A shutdown under way wins over input that is waiting too: a session whose
                // transaction finished during the drain is told to go, whatever it sends next.
                biased;
                () = self.ctx.closing.cancelled() => {
                    self.reply(421, "4.3.2", "Service shutting down, try again later");
                    self.flush(stream).await?;
                    return Ok(Next::Quit);
                }
                read = tokio::time::timeout(IDLE_TIMEOUT, read_some(stream, &mut buf)) => read,
            };
            match read {
                Ok(Ok(0)) => return Ok(Next::Quit),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.reply(421, "4.4.2", "Idle for too long, closing the connection");
                    self.flush(stream).await?;
                    return Ok(Next::Quit);
                }
            }
        }
    }

    /// Carries out one command; `Some` ends the loop.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        command: Command,
        stream: &mut S,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<Next>> {
        let bad_sequence = Refusal { code: 503, enhanced: "5.5.1", text: "Bad sequence of commands" };
        match command {
            Command::Lhlo(name) => {
                self.reset();
                self.span.record("lhlo", name.as_str());
                let mut lines = vec![self.settings.hostname.clone(), "PIPELINING".into(), "ENHANCEDSTATUSCODES".into()];
                lines.push("8BITMIME".into());
                lines.push(format!("SIZE {}", self.settings.max_size));
                if self.settings.starttls && !self.tls && self.ctx.tls.is_some() {
                    lines.push("STARTTLS".into());
                }
                let last = lines.len() - 1;
                for (i, line) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    self.out.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
                }
                self.helo = Some(name);
            }
            Command::SmtpGreeting => {
                self.refuse(&Refusal { code: 500, enhanced: "5.5.1", text: "This is an LMTP server: use LHLO" });
            }
            Command::Mail { .. } | Command::Rcpt(_) | Command::Data if self.helo.is_none() => {
                self.refuse(&Refusal { code: 503, enhanced: "5.5.1", text: "Send LHLO first" });
            }
            Command::Mail { from, size } => {
                if self.sender.is_some() {
                    self.refuse(&bad_sequence);
                } else if size.is_some_and(|size| size > self.settings.max_size) {
                    self.reply(552, "5.3.4", "Message size exceeds the fixed maximum message size");
                } else {
                    self.sender = Some(from);
                    self.reply(250, "2.1.0", "Sender OK");
                }
            }
            Command::Rcpt(_) if self.sender.is_none() => self.refuse(&bad_sequence),
            Command::Rcpt(address) => self.recipient(address).await,
            Command::Data if self.sender.is_none() || self.recipients.is_empty() => {
                self.refuse(&Refusal { code: 503, enhanced: "5.5.1", text: "No valid recipients" });
            }
            Command::Data => {
                self.data(stream, buf).await?;
                self.reset();
            }
            Command::Rset => {
                self.reset();
                self.reply(250, "2.0.0", "Reset");
            }
            Command::Noop => self.reply(250, "2.0.0", "OK"),
            Command::Vrfy => self.reply(252, "2.5.0", "Cannot verify the user, but will try delivery"),
            Command::Quit => {
                self.reply(221, "2.0.0", "Bye");
                self.flush(stream).await?;
                return Ok(Some(Next::Quit));
            }
            Command::StartTls if self.tls || !self.settings.starttls || self.ctx.tls.is_none() => {
                self.refuse(&Refusal { code: 502, enhanced: "5.5.1", text: "STARTTLS not available" });
            }
            Command::StartTls => {
                // Anything pipelined behind STARTTLS was sent in clear: it is dropped, never
                // taken as said under TLS.
                buf.clear();
                self.reply(220, "2.0.0", "Ready to start TLS");
                self.flush(stream).await?;
                return Ok(Some(Next::StartTls));
            }
        }
        Ok(None)
    }

    /// `RCPT TO`: the mailbox must exist and take mail now (it is checked again at delivery).
    /// With a directory (`auth_backend`), a recipient without a mailbox yet is looked up
    /// there and gets its mailbox now, as at a first login.
    async fn recipient(&mut self, address: String) {
        if self.recipients.len() >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        let mailbox = match self.settings.rule.mailbox(&address) {
            Ok(mailbox) => mailbox,
            Err(_) => return self.reply(550, "5.1.1", "No such mailbox"),
        };
        let backends = &self.ctx.backends;
        let found = match backends.accounts.get_cached(&mailbox).await {
            Ok(None) => match backends.auth.recipient(&self.settings.rule.without_subaddress(&address)).await {
                Ok(record) => Ok(record),
                Err(e) => Err(e.to_string()),
            },
            other => other.map_err(|e| e.to_string()),
        };
        let mailbox = match &found {
            Ok(Some(record)) => AccountName::parse(&record.name).unwrap_or(mailbox),
            _ => mailbox,
        };
        match found {
            Ok(Some(account)) if account.deleting => self.reply(550, "5.1.1", "No such mailbox"),
            Ok(Some(account)) if account.disabled => self.reply(550, "5.2.1", "Mailbox disabled"),
            Ok(Some(_)) => {
                self.recipients.push(Recipient { address, mailbox });
                self.reply(250, "2.1.5", "Recipient OK");
            }
            Ok(None) => self.reply(550, "5.1.1", "No such mailbox"),
            Err(e) => {
                warn!(error = %e, "account lookup failed for an LMTP recipient");
                self.reply(451, "4.3.0", "Temporary failure looking up the mailbox, try again later");
            }
        }
    }

    /// `DATA`: receives the message, then stores one copy per recipient and answers for each.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S, buf: &mut Vec<u8>) -> io::Result<()> {
        let span = info_span!(
            "lmtp.deliver",
            recipients = self.recipients.len(),
            size = Empty,
            stored = Empty,
            otel.status_code = Empty,
        );
        let traceparent = crate::telemetry::traceparent_of(&span);
        let recorded = span.clone();
        async {
            let mut spooler = self.ctx.backends.delivery.spooler(false).await;
            // An intermediate reply: no enhanced status code (RFC 2034 gives them to 2xx, 4xx, 5xx).
            self.out.extend_from_slice(b"354 Send the message, ending with <CRLF>.<CRLF>\r\n");
            self.flush(stream).await?;
            // Read to the end marker whatever happens, so the client's next command is read as
            // one; a failed spool keeps its first error and the rest is discarded.
            let mut unstuffer = data::Unstuffer::default();
            let mut chunk = Vec::with_capacity(READ_CHUNK + 1024);
            loop {
                chunk.clear();
                let end = unstuffer.feed(buf, &mut chunk);
                if let Ok(spool) = &mut spooler
                    && let Err(e) = spool.push(&chunk).await
                {
                    spooler = Err(e);
                }
                if let Some(end) = end {
                    buf.drain(..end);
                    break;
                }
                buf.clear();
                match tokio::time::timeout(IDLE_TIMEOUT, read_some(stream, buf)).await {
                    Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in DATA")),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        self.reply(421, "4.4.2", "Timed out waiting for the message data");
                        self.flush(stream).await?;
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "DATA timed out"));
                    }
                }
            }
            let message = match spooler {
                Ok(spool) => spool.finish().await,
                Err(e) => Err(e),
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    let (code, enhanced, text) = refusal_for(&e);
                    if code == 451 {
                        warn!(error = %e, "cannot spool an LMTP message");
                    }
                    recorded.record("otel.status_code", "ERROR");
                    info!(error = %e, "LMTP message refused");
                    for _ in 0..self.recipients.len() {
                        self.reply(code, enhanced, text);
                    }
                    return Ok(());
                }
            };
            recorded.record("size", message.size);
            let now_secs = crate::clock::unix_secs();
            let sender = self.sender.clone().unwrap_or_default();
            let helo = self.helo.clone().unwrap_or_default();
            let trace = trace::Trace {
                sender: &sender,
                helo: &helo,
                peer: self.peer.ip(),
                by: &self.settings.hostname,
                tls: self.tls,
                id: self.id,
                now_secs,
            };
            let mut stored = 0;
            let recipients = std::mem::take(&mut self.recipients);
            let targets: Vec<delivery::Recipient<'_>> = recipients
                .iter()
                .map(|recipient| delivery::Recipient {
                    mailbox: recipient.mailbox.as_str(),
                    address: &recipient.address,
                    options: delivery::Options {
                        header: if self.settings.trace_headers {
                            trace.header_for(&recipient.address)
                        } else {
                            Vec::new()
                        },
                        traceparent: traceparent.clone(),
                        ..Default::default()
                    },
                })
                .collect();
            let outcomes = self.ctx.backends.delivery.deliver(&message, delivery::Via::Lmtp, &targets).await;
            for (recipient, outcome) in recipients.iter().zip(outcomes) {
                if matches!(outcome, Outcome::Stored(_)) {
                    stored += 1;
                }
                let (code, enhanced, text) = self.outcome_reply(&outcome);
                let text = match &outcome {
                    Outcome::Stored(message) => format!("<{}> {text} as {}", recipient.address, message.id),
                    _ => format!("<{}> {text}", recipient.address),
                };
                self.reply(code, enhanced, &text);
            }
            recorded.record("stored", stored);
            if stored == 0 {
                recorded.record("otel.status_code", "ERROR");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    fn outcome_reply(&self, outcome: &Outcome) -> (u16, &'static str, &'static str) {
        match outcome {
            Outcome::Stored(_) | Outcome::Duplicate(_) => (250, "2.0.0", "Delivered"),
            Outcome::UnknownMailbox | Outcome::InvalidName(_) => (550, "5.1.1", "No such mailbox"),
            Outcome::Disabled => (550, "5.2.1", "Mailbox disabled"),
            Outcome::OverQuota(_) if self.settings.quota_tempfail => (452, "4.2.2", "Mailbox full"),
            Outcome::OverQuota(_) => (552, "5.2.2", "Mailbox full"),
            Outcome::Failed(_) => (451, "4.3.0", "Temporary failure storing the message, try again later"),
        }
    }
}

/// The reply to every recipient when the message itself could not be taken.
fn refusal_for(error: &DeliveryError) -> (u16, &'static str, &'static str) {
    match error {
        DeliveryError::TooLarge(_) => (552, "5.3.4", "Message size exceeds the fixed maximum message size"),
        DeliveryError::Empty => (554, "5.6.0", "Empty message"),
        DeliveryError::Malformed(_) => (554, "5.6.0", "Malformed message"),
        DeliveryError::Read(_) | DeliveryError::Spool(_) => (451, "4.3.0", "Temporary failure receiving the message"),
    }
}

/// Reads what the client has sent (up to [`READ_CHUNK`]) onto the end of `buf`.
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let mut limited = (&mut *stream).take(READ_CHUNK as u64);
    limited.read_buf(buf).await
}
