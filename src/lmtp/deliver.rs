//! An LMTP transaction's DATA: the message is received into the spool (to its end marker,
//! whatever happens, so the next command is read as one), then stored for every recipient
//! through the delivery service, each with its own trace header fields.

use super::{Connection, IDLE_TIMEOUT, READ_CHUNK};
use crate::delivery::{self, DeliveryError, Outcome, Spooled, Via};
use crate::protocol::lines::LineBuffer;
use crate::protocol::lmtp::data::Unstuffer;
use crate::protocol::lmtp::{self, DataRefusal, Delivered, Step, trace};
use crate::session::read_into;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::field::Empty;
use tracing::{Instrument, info, info_span, warn};

impl Connection<'_> {
    /// Receives the data after `354` and delivers it; the machine's next step.
    pub(super) async fn receive_and_deliver<S>(&mut self, stream: &mut S, input: &mut LineBuffer) -> io::Result<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let span = info_span!(
            "lmtp.deliver",
            recipients = self.machine.recipients().len(),
            size = Empty,
            stored = Empty,
            otel.status_code = Empty,
        );
        let recorded = span.clone();
        async {
            let message = match self.receive(stream, input).await? {
                Ok(message) => message,
                Err(e) => {
                    if matches!(e, DeliveryError::Read(_) | DeliveryError::Spool(_)) {
                        warn!(error = %e, "cannot spool an LMTP message");
                    }
                    recorded.record("otel.status_code", "ERROR");
                    info!(error = %e, "LMTP message refused");
                    return Ok(self.machine.data_refused(refusal(&e)));
                }
            };
            recorded.record("size", message.size);
            let outcomes = self.deliver(&message, crate::telemetry::traceparent_of(&recorded)).await;
            let stored = outcomes.iter().filter(|o| matches!(o, Delivered::Stored(_))).count();
            recorded.record("stored", stored);
            if stored == 0 {
                recorded.record("otel.status_code", "ERROR");
            }
            Ok(self.machine.delivered(&outcomes))
        }
        .instrument(span)
        .await
    }

    /// Reads to the end marker whatever happens, so the client's next command is read as one;
    /// a failed spool keeps its first error and the rest is discarded.
    async fn receive<S>(&mut self, stream: &mut S, input: &mut LineBuffer) -> io::Result<Result<Spooled, DeliveryError>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut spooler = self.ctx.backends.delivery.spooler(false).await;
        let mut unstuffer = Unstuffer::default();
        let mut chunk = Vec::new();
        loop {
            chunk.clear();
            let end = unstuffer.feed(input.unread(), &mut chunk);
            if let Ok(spool) = &mut spooler
                && let Err(e) = spool.push(&chunk).await
            {
                spooler = Err(e);
            }
            if let Some(end) = end {
                input.consume(end);
                break;
            }
            input.consume(input.unread().len());
            match tokio::time::timeout(IDLE_TIMEOUT, read_into(stream, input, READ_CHUNK)).await {
                Ok(Ok(0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in DATA")),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.out.extend(lmtp::data_timeout_reply());
                    self.flush(stream).await?;
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "DATA timed out"));
                }
            }
        }
        Ok(match spooler {
            Ok(spool) => spool.finish().await,
            Err(e) => Err(e),
        })
    }

    /// Stores `message` for every recipient, with their trace fields when configured.
    async fn deliver(&self, message: &Spooled, traceparent: Option<crate::store::TraceParent>) -> Vec<Delivered> {
        let trace = trace::Trace {
            sender: self.machine.sender(),
            helo: self.machine.helo(),
            peer: self.peer.ip(),
            by: &self.settings.hostname,
            tls: self.machine.tls(),
            id: self.id,
            now_secs: crate::clock::unix_secs(),
        };
        let recipients: Vec<delivery::Recipient<'_>> = self
            .machine
            .recipients()
            .iter()
            .map(|recipient| delivery::Recipient {
                mailbox: recipient.mailbox.as_str(),
                address: &recipient.address,
                options: delivery::Options {
                    header: if self.settings.trace_headers { trace.header_for(&recipient.address) } else { Vec::new() },
                    traceparent: traceparent.clone(),
                    ..Default::default()
                },
            })
            .collect();
        let outcomes = self.ctx.backends.delivery.deliver(message, Via::Lmtp, &recipients).await;
        outcomes.into_iter().map(delivered).collect()
    }
}

/// The LMTP answer's view of a delivery outcome.
fn delivered(outcome: Outcome) -> Delivered {
    match outcome {
        Outcome::Stored(message) => Delivered::Stored(message.id),
        Outcome::Duplicate(_) => Delivered::Duplicate,
        Outcome::UnknownMailbox | Outcome::InvalidName(_) => Delivered::NoSuchMailbox,
        Outcome::Disabled => Delivered::Disabled,
        Outcome::OverQuota(_) => Delivered::OverQuota,
        Outcome::Failed(_) => Delivered::TemporaryFailure,
    }
}

/// The LMTP answer's view of a message that was not taken.
fn refusal(error: &DeliveryError) -> DataRefusal {
    match error {
        DeliveryError::TooLarge(_) => DataRefusal::TooLarge,
        DeliveryError::Empty => DataRefusal::Empty,
        DeliveryError::Malformed(_) => DataRefusal::Malformed,
        DeliveryError::Read(_) | DeliveryError::Spool(_) => DataRefusal::Temporary,
    }
}
