//! RETR and TOP, streamed from the store through the dot-stuffer in bounded memory, and the
//! UPDATE state that QUIT enters.
//!
//! A message's span (`pop3.retr` / `pop3.top`) carries a span link to the trace that delivered
//! it, when the delivery's trace context was kept with the message.

use super::{Session, Transfer, WRITE_CHUNK};
use crate::coord::lock::held::{RemoveStopped, removed_ids};
use crate::metrics::{VerbLabels, metrics};
use crate::protocol::dotstuff::{DotStuffer, TopCut};
use crate::protocol::machine::UpdateOutcome;
use crate::protocol::response::{self, Code};
use crate::store::{Opened, RemoveReport, StoreError};
use std::io;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tracing::field::Empty;
use tracing::{Instrument, info, info_span, warn};

impl Session<'_> {
    /// RETR (`top` is `None`) and TOP: sends `header` then the message, dot-stuffed.
    pub(super) async fn send_message<S>(
        &mut self,
        stream: &mut S,
        header: Vec<u8>,
        number: u64,
        key: &str,
        top: Option<u64>,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let verb = if top.is_some() { "TOP" } else { "RETR" };
        let span = info_span!(
            "pop3.retrieve",
            otel.name = if top.is_some() { "pop3.top" } else { "pop3.retr" },
            message.id = %key,
            top.lines = top,
            octets = Empty,
            ttfb_ms = Empty,
            otel.status_code = Empty,
        );
        let started = Instant::now();
        // The client must take the reply at the minimum rate (flush enforces it).
        self.transfer = Some(Transfer::new(&self.ctx.settings));
        let sent =
            self.stream_message(stream, header, (number, key), top, &span, started).instrument(span.clone()).await;
        self.transfer = None;
        let labels = VerbLabels { verb };
        match &sent {
            Ok(Some(octets)) => {
                span.record("octets", octets);
                metrics().retrieved_bytes.get_or_create(&labels).inc_by(*octets);
                metrics().retrieve_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
            }
            Ok(None) | Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        sent.map(|_| ())
    }

    /// The octets of the message sent (before dot-stuffing), or `None` when it was not sent.
    async fn stream_message<S>(
        &mut self,
        stream: &mut S,
        header: Vec<u8>,
        (number, key): (u64, &str),
        top: Option<u64>,
        span: &tracing::Span,
        started: Instant,
    ) -> io::Result<Option<u64>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(lease) = &self.lease else { return Ok(None) };
        // Held until the message is sent: what was read ahead counts against the process's
        // read-ahead memory until then.
        let mut _read_ahead_permit = None;
        let opened = match self.read_ahead.take(key).await {
            Some(read) => {
                _read_ahead_permit = Some(read.permit);
                Ok(Opened { body: Box::pin(std::io::Cursor::new(read.body)), delivered_by: read.delivered_by })
            }
            None => self.ctx.backends.messages.open(lease.maildrop(), key).await,
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(StoreError::NotFound) => {
                self.out.extend(response::err(None, "Message was removed by another process"));
                return Ok(None);
            }
            Err(e) => {
                warn!(error = %e, "opening message failed");
                let code = if e.is_temporary() { Code::SysTemp } else { Code::SysPerm };
                self.out.extend(response::err(Some(code), "Cannot read the message now, try again later"));
                return Ok(None);
            }
        };
        // The messages after this one are likely next (see `read_ahead`), once this one opened:
        // after a RETR any that fit the budget, after a TOP (a scan of headers) only those
        // small enough that reading them whole costs no more than the TOP itself would.
        let largest = if top.is_some() { super::read_ahead::LARGEST_FOR_TOP } else { u64::MAX };
        let next = self.machine.live_after(number, super::read_ahead::MAX_MESSAGES);
        self.read_ahead.schedule(&self.ctx.backends.messages, lease.maildrop(), next, largest);
        if let Some(traceparent) = &opened.delivered_by {
            crate::telemetry::link_to_delivery(span, traceparent);
        }
        let mut body = opened.body;
        self.out.extend(header);
        let mut stuffer = DotStuffer::new();
        let mut cut = top.map(TopCut::new);
        // Read into spare capacity: nothing is zeroed per RETR.
        let mut chunk = Vec::with_capacity(WRITE_CHUNK);
        let mut octets = 0u64;
        let mut first = true;
        loop {
            // A read failure after "+OK" cannot be reported in-band: the connection is dropped.
            chunk.clear();
            let n = body.read_buf(&mut chunk).await?;
            if first {
                // Time to first byte: until the first octets of the message are ready to send.
                let ttfb = started.elapsed();
                span.record("ttfb_ms", ttfb.as_secs_f64() * 1000.0);
                let verb = if top.is_some() { "TOP" } else { "RETR" };
                metrics().retrieve_first_byte.get_or_create(&VerbLabels { verb }).observe(ttfb.as_secs_f64());
                first = false;
            }
            if n == 0 {
                break;
            }
            let data = match &mut cut {
                Some(cut) => cut.take(&chunk[..n]),
                None => &chunk[..n],
            };
            octets += data.len() as u64;
            stuffer.encode(data, &mut self.out);
            if self.out.len() >= WRITE_CHUNK {
                // An operator's EndSession, or a lease another frontend may hold by now, stops a
                // long transfer too: the reply cannot be ended in-band, so the connection is cut.
                if self.lease.as_ref().is_some_and(|lease| lease.is_lost() || lease.is_ended()) {
                    info!("transfer stopped: the session was ended or its maildrop lock lost");
                    return Err(io::Error::other("the session was ended during a transfer"));
                }
                self.flush(stream).await?;
            }
            if cut.as_ref().is_some_and(TopCut::is_done) {
                break;
            }
        }
        stuffer.finish(&mut self.out);
        Ok(Some(octets))
    }

    /// UPDATE state (`pop3.update`): confirm the lease is still ours, then remove the marked
    /// messages.
    pub(super) async fn update(&mut self, uids: &[String], octets: u64) -> UpdateOutcome {
        let span =
            info_span!("pop3.update", marked = uids.len(), deleted = Empty, outcome = Empty, otel.status_code = Empty);
        let outcome = self.apply_deletions(uids).instrument(span.clone()).await;
        if outcome.1 > 0
            && let Some(lease) = &self.lease
        {
            let usage = self.ctx.backends.usage.as_ref();
            let counted = match outcome.0 {
                // All of them: the counter takes away exactly what went.
                UpdateOutcome::Applied => usage.add(lease.maildrop(), -(outcome.1 as i64), -(octets as i64)).await,
                // Some of them: recount at the next delivery that needs it.
                UpdateOutcome::Failed(_) => usage.forget(lease.maildrop()).await,
            };
            if let Err(e) = counted {
                warn!(error = %e, "cannot take removed messages off the mailbox's usage");
            }
        }
        match &outcome {
            (UpdateOutcome::Applied, deleted) => {
                span.record("deleted", deleted);
                span.record("outcome", "applied");
            }
            (UpdateOutcome::Failed(_), deleted) => {
                span.record("deleted", deleted);
                span.record("outcome", "failed");
                span.record("otel.status_code", "ERROR");
            }
        }
        outcome.0
    }

    /// The outcome, and how many messages are gone.
    async fn apply_deletions(&mut self, uids: &[String]) -> (UpdateOutcome, usize) {
        let Some(lease) = &self.lease else { return (UpdateOutcome::Applied, 0) };
        if uids.is_empty() && !self.upkeep.needed(0) {
            return (UpdateOutcome::Applied, 0);
        }
        match lease.remove(self.ctx.backends.messages.as_ref(), uids, self.upkeep).await {
            (report, None) => {
                self.forget_removed(uids, &report);
                if report.failed.is_empty() {
                    info!(removed = report.removed, "update applied");
                    return (UpdateOutcome::Applied, report.removed);
                }
                warn!(removed = report.removed, failed = report.failed.len(), "update partly applied");
                let why = format!("{} of {} could not be removed", report.failed.len(), uids.len());
                (UpdateOutcome::Failed(why), report.removed)
            }
            (report, Some(RemoveStopped::Fenced)) => {
                warn!(removed = report.removed, "update stopped: the maildrop lock was lost or the session ended");
                let why = if report.removed == 0 {
                    "the maildrop lock was lost; nothing was removed".to_owned()
                } else {
                    format!("the maildrop lock was lost after {} of {} were removed", report.removed, uids.len())
                };
                (UpdateOutcome::Failed(why), report.removed)
            }
            (report, Some(RemoveStopped::Store(e))) => {
                warn!(error = %e, removed = report.removed, "update failed");
                (UpdateOutcome::Failed("message store unavailable".into()), report.removed)
            }
        }
    }

    /// Keeps the retention bookkeeping in step with what UPDATE removed.
    fn forget_removed(&mut self, uids: &[String], report: &RemoveReport) {
        if self.expire_days.is_none() {
            return;
        }
        for id in removed_ids(uids, report) {
            self.retrieved.remove(id);
            self.deleted.push(id.clone());
        }
    }
}
