//! A store decorator that gives every call a trace span and a metric, whatever the backend.
//!
//! Backends stay free of observability code: the S3 backend only adds what it alone knows (the
//! S3 operation, HTTP status and attempt of each request) to the span opened here.

use super::{
    AccountRecord, AccountStore, IndexSeen, MaildropView, MarkerKey, MessageStore, NewMessage, Opened, Precondition,
    RemoveReport, StoreError, StoredMessage, TraceParent, Version,
};
use crate::metrics::metrics;
use crate::names::AccountName;
use async_trait::async_trait;
use std::cell::Cell;
use std::time::Instant;
use tracing::field::Empty;
use tracing::{Instrument, info_span};

tokio::task_local! {
    /// Requests to the backing store made inside [`count_calls`].
    static CALLS: Cell<u32>;
}

/// Runs `call`, counting the requests it makes to the backing store: HTTP requests for S3
/// (each page and retry), one per operation for the embedded store.
pub async fn count_calls<T>(call: impl Future<Output = T>) -> (T, u32) {
    CALLS.scope(Cell::new(0), async { (call.await, CALLS.with(Cell::get)) }).await
}

/// Counts one request, when someone is counting.
pub(crate) fn count_call() {
    let _ = CALLS.try_with(|calls| calls.set(calls.get() + 1));
}

/// Any store, observed. `backend` names it in metrics and spans (`fs`, `s3`).
pub struct Observed<S> {
    inner: S,
    backend: &'static str,
    /// The backend counts its own requests (S3 counts HTTP requests); otherwise each operation
    /// counts as one.
    counts_own_requests: bool,
}

impl<S> Observed<S> {
    pub fn new(inner: S, backend: &'static str) -> Self {
        Self { inner, backend, counts_own_requests: false }
    }

    /// For a backend that calls [`count_call`] for every request it sends.
    pub fn counting_own_requests(inner: S, backend: &'static str) -> Self {
        Self { inner, backend, counts_own_requests: true }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        span_name: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.counts_own_requests {
            count_call();
        }
        observe(self.backend, operation, span_name, call).await
    }
}

/// The metric label of a result.
fn outcome<T>(result: &Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound) => "not_found",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Failed(_)) => "failed",
        Err(StoreError::Invalid(_)) => "invalid",
        Err(StoreError::Conflict) => "conflict",
    }
}

/// Runs one store call inside a `store.*` span and counts it.
async fn observe<T>(
    backend: &'static str,
    operation: &'static str,
    span_name: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let span = info_span!(
        "store",
        otel.name = span_name,
        store.backend = backend,
        store.operation = operation,
        outcome = Empty,
        otel.status_code = Empty,
        s3.operation = Empty,
        http.status_code = Empty,
        s3.attempt = Empty,
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let outcome = outcome(&result);
    span.record("outcome", outcome);
    if !matches!(outcome, "ok" | "not_found") {
        span.record("otel.status_code", "ERROR");
    }
    metrics().store_call(backend, operation, outcome, started.elapsed());
    result
}

#[async_trait]
impl<S: MessageStore> MessageStore for Observed<S> {
    async fn list(&self, maildrop: &AccountName) -> Result<Vec<StoredMessage>, StoreError> {
        self.observe("list", "store.list", self.inner.list(maildrop)).await
    }

    async fn list_page(
        &self,
        maildrop: &AccountName,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        self.observe("list_page", "store.list_page", self.inner.list_page(maildrop, after, limit)).await
    }

    async fn view(&self, maildrop: &AccountName) -> Result<MaildropView, StoreError> {
        self.observe("list", "store.list", self.inner.view(maildrop)).await
    }

    async fn upkeep(
        &self,
        maildrop: &AccountName,
        fence: u64,
        removing: &[String],
        seen: IndexSeen,
    ) -> Result<(), StoreError> {
        self.observe("upkeep", "store.upkeep", self.inner.upkeep(maildrop, fence, removing, seen)).await
    }

    async fn open(&self, maildrop: &AccountName, id: &str) -> Result<Opened, StoreError> {
        self.observe("open", "store.open", self.inner.open(maildrop, id)).await
    }

    async fn create_with_id(&self, maildrop: &AccountName, id: &str) -> Result<Box<dyn NewMessage>, StoreError> {
        let new = self.observe("create", "store.create", self.inner.create_with_id(maildrop, id)).await?;
        Ok(Box::new(ObservedNew { inner: new, backend: self.backend }))
    }

    async fn exists(&self, maildrop: &AccountName, id: &str) -> Result<bool, StoreError> {
        self.observe("exists", "store.exists", self.inner.exists(maildrop, id)).await
    }

    async fn get_marker(&self, maildrop: &AccountName, key: &MarkerKey) -> Result<Option<String>, StoreError> {
        self.observe("get_marker", "store.get_marker", self.inner.get_marker(maildrop, key)).await
    }

    async fn put_marker(&self, maildrop: &AccountName, key: &MarkerKey, value: &str) -> Result<(), StoreError> {
        self.observe("put_marker", "store.put_marker", self.inner.put_marker(maildrop, key, value)).await
    }

    async fn get_ledger(&self, maildrop: &AccountName) -> Result<Option<String>, StoreError> {
        self.observe("get_ledger", "store.get_ledger", self.inner.get_ledger(maildrop)).await
    }

    async fn put_ledger(&self, maildrop: &AccountName, text: &str) -> Result<(), StoreError> {
        self.observe("put_ledger", "store.put_ledger", self.inner.put_ledger(maildrop, text)).await
    }

    async fn ledgers(&self) -> Result<Vec<AccountName>, StoreError> {
        self.observe("ledgers", "store.ledgers", self.inner.ledgers()).await
    }

    async fn remove(&self, maildrop: &AccountName, ids: &[String]) -> Result<RemoveReport, StoreError> {
        self.observe("remove", "store.remove", self.inner.remove(maildrop, ids)).await
    }

    async fn remove_maildrop(&self, maildrop: &AccountName) -> Result<(), StoreError> {
        self.observe("remove_maildrop", "store.remove_maildrop", self.inner.remove_maildrop(maildrop)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Probes run every few seconds on every frontend: counted, but not traced.
        let started = Instant::now();
        let result = self.inner.ping().await;
        metrics().store_call(self.backend, "ping", outcome(&result), started.elapsed());
        result
    }
}

#[async_trait]
impl<S: AccountStore> AccountStore for Observed<S> {
    async fn get_versioned(&self, name: &AccountName) -> Result<Option<(AccountRecord, Version)>, StoreError> {
        self.observe("account_get", "store.account_get", self.inner.get_versioned(name)).await
    }

    async fn put(&self, record: &AccountRecord, expect: Precondition) -> Result<Version, StoreError> {
        self.observe("account_put", "store.account_put", self.inner.put(record, expect)).await
    }

    async fn pool_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        self.observe("secret_get", "store.secret_get", self.inner.pool_secret(name)).await
    }

    async fn delete(&self, name: &AccountName) -> Result<bool, StoreError> {
        self.observe("account_delete", "store.account_delete", self.inner.delete(name)).await
    }

    async fn list(&self) -> Result<Vec<AccountName>, StoreError> {
        self.observe("account_list", "store.account_list", self.inner.list()).await
    }
}

/// A message being written; its commit is observed (the writes are the caller's streaming).
struct ObservedNew {
    inner: Box<dyn NewMessage>,
    backend: &'static str,
}

#[async_trait]
impl NewMessage for ObservedNew {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.inner.write(chunk).await
    }

    fn set_trace_parent(&mut self, traceparent: &TraceParent) {
        self.inner.set_trace_parent(traceparent);
    }

    async fn commit(self: Box<Self>) -> Result<StoredMessage, StoreError> {
        let backend = self.backend;
        observe(backend, "commit", "store.commit", self.inner.commit()).await
    }
}
