//! The Ingest service: streamed delivery to one or more mailboxes.

use super::proto::{self, DeliverRequest, DeliverResponse, DeliveryStatus, RecipientResult, deliver_request::Frame};
use super::status;
use crate::delivery::{self, DeliveryService, Outcome, Recipient, Spooled, Via};
use crate::store::TraceParent;
use tonic::{Request, Response, Status, Streaming};
use tracing::field::Empty;
use tracing::{Instrument, info, info_span};

/// Most recipients in one envelope.
pub const MAX_RECIPIENTS: usize = 100;

pub struct IngestService {
    pub delivery: DeliveryService,
}

#[tonic::async_trait]
impl proto::ingest_server::Ingest for IngestService {
    async fn deliver(&self, request: Request<Streaming<DeliverRequest>>) -> Result<Response<DeliverResponse>, Status> {
        let traceparent = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut frames = request.into_inner();
        let envelope = match frames.message().await?.and_then(|f| f.frame) {
            Some(Frame::Envelope(envelope)) => envelope,
            _ => return Err(Status::invalid_argument("the first frame must be the envelope")),
        };
        if envelope.recipients.is_empty() || envelope.recipients.len() > MAX_RECIPIENTS {
            return Err(Status::invalid_argument(format!("an envelope needs 1 to {MAX_RECIPIENTS} recipients")));
        }
        let key = match envelope.idempotency_key.as_str() {
            "" => None,
            raw => Some(crate::delivery::idempotency_marker(raw).ok_or_else(|| {
                Status::invalid_argument("idempotency_key must be 1-128 characters from A-Z a-z 0-9 . _ - :")
            })?),
        };
        let uidl = match envelope.uidl.as_str() {
            "" => None,
            raw if crate::store::ids::is_valid_kept_uidl(raw) => Some(raw.to_owned()),
            _ => {
                return Err(Status::invalid_argument(
                    "uidl must be 1-70 characters from 0x21-0x7E, and not the form of this server's own UIDLs",
                ));
            }
        };
        let received_ms = match envelope.received_unix_ms {
            0 => None,
            ms if ms > 0 && ms < 0xffff_ffff_ffff => Some(ms as u64),
            _ => return Err(Status::invalid_argument("received_unix_ms is out of range")),
        };
        let span = info_span!(
            "ingest.deliver",
            recipients = envelope.recipients.len(),
            size = Empty,
            stored = Empty,
            otel.status_code = Empty,
        );
        // Retrieval links to this: our own span when traces are exported (it sits in the
        // caller's trace), else the caller's context as it was sent.
        let traceparent =
            crate::telemetry::traceparent_of(&span).or_else(|| traceparent.as_deref().and_then(TraceParent::parse));
        let options = delivery::Options { idempotency_key: key, uidl, received_ms, traceparent, header: Vec::new() };
        let recorded = span.clone();
        async move {
            let message = self.receive(&mut frames).await?;
            recorded.record("size", message.size);
            let recipients: Vec<Recipient<'_>> = envelope
                .recipients
                .iter()
                .map(|r| Recipient { mailbox: r, address: r, options: options.clone() })
                .collect();
            let outcomes = self.delivery.deliver(&message, Via::Grpc, &recipients).await;
            let results: Vec<RecipientResult> = envelope
                .recipients
                .iter()
                .zip(outcomes)
                .map(|(recipient, outcome)| result(recipient, outcome))
                .collect();
            let stored = results.iter().filter(|r| r.status == DeliveryStatus::Stored as i32).count();
            let duplicates = results.iter().filter(|r| r.status == DeliveryStatus::Duplicate as i32).count();
            recorded.record("stored", stored);
            if stored + duplicates == 0 {
                recorded.record("otel.status_code", "ERROR");
            }
            info!(size = message.size, stored, "delivered");
            whole_call_status(&results)?;
            Ok(Response::new(DeliverResponse { results, size: message.size }))
        }
        .instrument(span)
        .await
    }
}

impl IngestService {
    /// Receives the message frames into the spool. Only a stream that ends with an End frame
    /// declaring what was sent is a whole message: a sender that died half-way must not get a
    /// truncated copy stored.
    async fn receive(&self, frames: &mut Streaming<DeliverRequest>) -> Result<Spooled, Status> {
        let mut spooler = self.delivery.spooler(true).await.map_err(status::delivery)?;
        let mut sent = 0u64;
        loop {
            let Some(frame) = frames.message().await? else {
                return Err(Status::invalid_argument(
                    "the stream ended without an End frame: the message may be incomplete; nothing was stored",
                ));
            };
            match frame.frame {
                Some(Frame::Chunk(bytes)) => {
                    sent += bytes.len() as u64;
                    spooler.push(&bytes).await.map_err(status::delivery)?;
                }
                Some(Frame::End(end)) if end.size != sent => {
                    return Err(Status::invalid_argument(format!(
                        "the End frame declares {} octets but {sent} were sent; nothing was stored",
                        end.size
                    )));
                }
                Some(Frame::End(_)) => break,
                Some(Frame::Envelope(_)) => {
                    return Err(Status::invalid_argument("only the first frame may be an envelope"));
                }
                None => return Err(Status::invalid_argument("empty frame")),
            }
        }
        if frames.message().await?.is_some() {
            return Err(Status::invalid_argument("frames after the End frame; nothing was stored"));
        }
        spooler.finish().await.map_err(status::delivery)
    }
}

fn result(recipient: &str, outcome: Outcome) -> RecipientResult {
    let (status, message_id, detail) = match outcome {
        Outcome::Stored(stored) => (DeliveryStatus::Stored, stored.id, String::new()),
        Outcome::Duplicate(id) => (DeliveryStatus::Duplicate, id, "already delivered with this idempotency key".into()),
        Outcome::UnknownMailbox => (DeliveryStatus::UnknownMailbox, String::new(), "no such mailbox".into()),
        Outcome::InvalidName(e) => (DeliveryStatus::UnknownMailbox, String::new(), e.to_string()),
        Outcome::Disabled => (DeliveryStatus::Disabled, String::new(), "mailbox is disabled".into()),
        Outcome::OverQuota(why) => (DeliveryStatus::OverQuota, String::new(), why.into()),
        Outcome::Failed(e) => (DeliveryStatus::TemporaryFailure, String::new(), e.to_string()),
    };
    RecipientResult { recipient: recipient.to_owned(), status: status as i32, message_id, detail }
}

/// When no recipient got the message and all failed alike, the call itself fails with the code
/// that says why, so single-recipient callers need not read the results.
fn whole_call_status(results: &[RecipientResult]) -> Result<(), Status> {
    let all = |s: DeliveryStatus| results.iter().all(|r| r.status == s as i32);
    let detail = results.first().map(|r| r.detail.clone()).unwrap_or_default();
    if all(DeliveryStatus::OverQuota) {
        Err(Status::resource_exhausted(format!("over quota: {detail}")))
    } else if all(DeliveryStatus::UnknownMailbox) {
        Err(Status::not_found(format!("unknown mailbox: {detail}")))
    } else if all(DeliveryStatus::TemporaryFailure) {
        Err(Status::unavailable(format!("storage unavailable: {detail}")))
    } else {
        Ok(())
    }
}
