//! Span export that never slows a session down, and counts what it loses.
//!
//! Finished spans go to the SDK's batch processor, which exports from its own thread. In front
//! of it, [`Admission`] keeps count of spans waiting for export and drops (and counts) new ones
//! once the queue is full, so a dead or black-holed collector costs a session one atomic
//! increment per span, never a wait. [`Counting`] counts the spans of batches the collector
//! did not accept. Both feed `cloudpop_spans_dropped_total`.

use crate::metrics::metrics;
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Spans accepted for export and not yet exported (or given up on).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Admits finished spans while fewer than `capacity` wait for export.
#[derive(Debug)]
pub struct Admission<P> {
    inner: P,
    in_flight: InFlight,
    capacity: usize,
}

impl<P> Admission<P> {
    pub fn new(inner: P, in_flight: InFlight, capacity: usize) -> Self {
        Self { inner, in_flight, capacity }
    }
}

impl<P: SpanProcessor> SpanProcessor for Admission<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Spans that are recorded but not sampled are never exported; nothing to count.
        if span.span_context.is_sampled() && self.in_flight.0.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.in_flight.0.fetch_sub(1, Ordering::AcqRel);
            metrics().spans_dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that releases admitted spans once a batch is done, counting failed batches.
#[derive(Debug)]
pub struct Counting<E> {
    inner: E,
    in_flight: InFlight,
}

impl<E> Counting<E> {
    pub fn new(inner: E, in_flight: InFlight) -> Self {
        Self { inner, in_flight }
    }
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.in_flight.0.fetch_sub(spans, Ordering::AcqRel);
        if result.is_err() {
            metrics().spans_dropped.inc_by(spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use std::sync::Mutex;

    /// Holds on to what it is given, like a batch processor whose exporter is stuck.
    #[derive(Debug, Default)]
    struct Stuck(Mutex<Vec<SpanData>>);

    impl SpanProcessor for Stuck {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn span(sampled: bool) -> SpanData {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let context = SpanContext::new(TraceId::from(7u128), SpanId::from(9u64), flags, false, TraceState::default());
        SpanData {
            span_context: context,
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: "test".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let before = metrics().spans_dropped.get();
        let admission = Admission::new(Stuck::default(), InFlight::default(), 3);
        for _ in 0..5 {
            admission.on_end(span(true));
        }
        admission.on_end(span(false)); // never exported, never counted
        assert_eq!(admission.inner.0.lock().unwrap().len(), 4, "3 admitted + 1 unsampled passed through");
        assert!(metrics().spans_dropped.get() >= before + 2);
        // Once a batch is exported, room opens up again.
        admission.in_flight.0.fetch_sub(3, Ordering::AcqRel);
        admission.on_end(span(true));
        assert_eq!(admission.inner.0.lock().unwrap().len(), 5);
    }
}
