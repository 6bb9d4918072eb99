//! Span export that never slows a session down, and counts what it loses.
//!
//! Finished spans go to the SDK's batch processor, which exports from its own thread. In front
//! of it, [`Admission`] keeps count of spans waiting for export and drops (and counts) new ones
//! once the queue is full, so a dead or black-holed collector costs a session one atomic
//! increment per span, never a wait. [`Counting`] counts the spans of batches the collector
//! did not accept. Both feed `cloudpop_spans_dropped_total`.

use crate::ops::metrics::metrics;
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
