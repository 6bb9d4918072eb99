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
            let stored = self.deliver(stream, &message, crate::telemetry::traceparent_of(&recorded)).await?;
            recorded.record("stored", stored);
            if stored == 0 {
                recorded.record("otel.status_code", "ERROR");
            }
            self.machine.end_transaction();
            Ok(if self.ctx.cut.is_cancelled() {
                Step::Close(crate::protocol::lmtp::shutdown_reply())
            } else {
                Step::Reply(Vec::new())
            })
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

    /// Stores `message` for every recipient in turn, with their trace fields when configured,
    /// sending each recipient's reply as soon as its copy is stored: an MTA that gives up, or a
    /// connection cut later, loses only the replies not sent yet. When the shutdown grace ends
    /// (`cut`), the copy being stored is abandoned and the recipients left get `451 4.3.2`, so
    /// the MTA retries only those. The number of copies stored.
    async fn deliver<S>(
        &mut self,
        stream: &mut S,
        message: &Spooled,
        traceparent: Option<crate::store::TraceParent>,
    ) -> io::Result<usize>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let trace = trace::Trace {
            sender: self.machine.sender(),
            helo: self.machine.helo(),
            peer: self.peer.ip(),
            by: &self.settings.hostname,
            tls: self.machine.tls(),
            id: self.id,
            now_secs: crate::clock::unix_secs(),
        };
        let headers: Vec<Vec<u8>> = self
            .machine
            .recipients()
            .iter()
            .map(|r| if self.settings.trace_headers { trace.header_for(&r.address) } else { Vec::new() })
            .collect();
        let mut stored = 0;
        for (index, header) in headers.into_iter().enumerate() {
            let recipient = &self.machine.recipients()[index];
            let (mailbox, address) = (recipient.mailbox.to_string(), recipient.address.clone());
            let one = [delivery::Recipient {
                mailbox: &mailbox,
                address: &address,
                options: delivery::Options { header, traceparent: traceparent.clone(), ..Default::default() },
            }];
            let outcome = tokio::select! {
                biased;
                () = self.ctx.cut.cancelled() => Delivered::NotTried,
                mut outcomes = self.ctx.backends.delivery.deliver(message, Via::Lmtp, &one) => {
                    delivered(outcomes.pop().expect("one outcome per recipient"))
                }
            };
            stored += usize::from(matches!(outcome, Delivered::Stored(_)));
            self.out.extend(self.machine.recipient_reply(index, &outcome));
            self.flush(stream).await?;
        }
        Ok(stored)
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
        DeliveryError::SpoolFull => DataRefusal::SpoolFull,
    }
}
