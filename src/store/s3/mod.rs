//! The cloud backend: messages and accounts as objects in an S3-compatible store.
//!
//! Login lists keys and sizes (ListObjectsV2, paginated) and never reads a body. RETR streams
//! the object body. New messages become visible all at once: one PutObject for small ones, a
//! multipart upload (invisible until completed) for large ones, so memory per delivery is bounded
//! by one part. Nothing relies on conditional writes, which some stores (Garage) ignore: ids
//! carry 48 random bits besides the time, so two deliveries never pick the same key.

mod bucket;
mod delete;
mod endpoint;
mod index;
mod keys;
mod observe;
mod upload;

pub use keys::KeyLayout;

use super::{
    AccountRecord, AccountStore, IndexSeen, MaildropView, MarkerKey, MessageStore, NewMessage, Opened, Precondition,
    RemoveReport, StoreError, StoredMessage, TraceParent, Version,
};
use crate::names::AccountName;
use crate::secret::Secret;
use crate::store::ids::{MessageId, is_message_id};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;
use tokio::io::AsyncRead;

/// The user metadata key (`x-amz-meta-traceparent`) that keeps a message's delivery trace context.
pub const TRACEPARENT_METADATA: &str = "traceparent";

/// Connection settings (`s3_*`), with the keys already read.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub path_style: bool,
    pub access_key: Option<(String, Secret)>,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// Messages and accounts in one bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    keys: KeyLayout,
    /// Longest wait for one chunk of a body being read.
    read_timeout: Duration,
    /// Set once the store has refused a DeleteObjects call: deletions go one key at a time.
    single_deletes: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bucket_seen: std::sync::Arc<bucket::BucketSeen>,
}

impl S3Store {
    /// Builds the client. No request is made: a store that is down now can come up later.
    pub async fn new(settings: &S3Settings) -> Self {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        use aws_sdk_s3::config::{
            Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
        };

        crate::metrics::metrics().with_s3();

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(settings.timeout)
            .operation_timeout(settings.timeout * settings.max_attempts + Duration::from_secs(2))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .timeout_config(timeouts);
        if let Some((id, secret)) = &settings.access_key {
            let creds = aws_sdk_s3::config::Credentials::new(id, secret.expose(), None, None, "cloudpop-config");
            loader = loader.credentials_provider(creds);
        }
        let shared = loader.load().await;
        // Checksums only where S3 requires them: several compatible stores reject the newer
        // streaming-checksum encodings.
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .interceptor(observe::RequestCounter)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Bodies have cloudpop's own per-chunk timeout (`TimedRead`, `s3_timeout_secs`);
            // the SDK's throughput monitor on every body would only watch them twice.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            // The endpoint once per bucket, not once per key (see `endpoint`).
            .endpoint_resolver(endpoint::CachedEndpoint::default());
        if !settings.endpoint.is_empty() {
            builder = builder.endpoint_url(&settings.endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket.clone(),
            keys: KeyLayout::new(&settings.prefix),
            read_timeout: settings.timeout,
            single_deletes: Default::default(),
            bucket_seen: Default::default(),
        }
    }

    /// Every key and size under `prefix`, following ListObjectsV2 continuation tokens.
    async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.list_after(prefix, "").await
    }

    /// Every key and size under `prefix` that sorts after `start_after` (nothing skipped if
    /// empty), following ListObjectsV2 continuation tokens.
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let request = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
        let request = if start_after.is_empty() { request } else { request.start_after(start_after) };
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_error)?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push((key.to_owned(), object.size().unwrap_or(0).max(0) as u64));
                }
            }
        }
        Ok(out)
    }

    async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let body = tokio::time::timeout(self.read_timeout, out.body.collect())
                    .await
                    .map_err(|_| StoreError::Unavailable("timed out reading an object".into()))?
                    .map_err(|e| StoreError::Unavailable(format!("reading an object failed: {e}")))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) => match sdk_error(e) {
                StoreError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn put_small(&self, key: &str, text: &str) -> Result<(), StoreError> {
        let body = ByteStream::from(text.as_bytes().to_vec());
        self.client.put_object().bucket(&self.bucket).key(key).body(body).send().await.map_err(sdk_error)?;
        Ok(())
    }

    /// Deletes keys (gone ones count as deleted); an error names the first that stayed.
    async fn delete_all(&self, keys: &[String]) -> Result<(), StoreError> {
        match self.delete_keys(keys).await?.failed.first() {
            None => Ok(()),
            Some((key, code)) => Err(StoreError::Unavailable(format!("could not delete {key}: {code}"))),
        }
    }
}

#[async_trait]
impl MessageStore for S3Store {
    async fn ping(&self) -> Result<(), StoreError> {
        // One HeadBucket: a cheap request that also tells a misspelt bucket apart.
        self.check_bucket().await
    }

    async fn list(&self, maildrop: &AccountName) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.read_maildrop(maildrop).await?.messages)
    }

    async fn view(&self, maildrop: &AccountName) -> Result<MaildropView, StoreError> {
        self.view_maildrop(maildrop).await
    }

    /// One ListObjectsV2 from the key after `after`, whatever the maildrop's size. It lists the
    /// objects themselves, not the index: a message whose removal is under way may still show.
    async fn list_page(
        &self,
        maildrop: &AccountName,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let prefix = self.keys.maildrop(maildrop);
        // The delimiter folds the late markers (`~late/`, after every id) into one prefix.
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .max_keys(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        if !after.is_empty() {
            request = request.start_after(format!("{prefix}{after}"));
        }
        let out = request.send().await.map_err(sdk_error)?;
        let mut page: Vec<StoredMessage> = out
            .contents()
            .iter()
            .filter_map(|object| {
                let id = object.key()?.strip_prefix(&prefix).and_then(MessageId::parse)?;
                Some(StoredMessage { id: id.into_string(), size: object.size().unwrap_or(0).max(0) as u64 })
            })
            .collect();
        // A store may return fewer keys than asked (S3 at most 1,000) and say it stopped early.
        let more = page.len() > limit || (page.len() == limit && out.is_truncated().unwrap_or(false));
        page.truncate(limit);
        Ok((page, more))
    }

    async fn upkeep(
        &self,
        maildrop: &AccountName,
        fence: u64,
        removing: &[String],
        seen: IndexSeen,
    ) -> Result<(), StoreError> {
        self.rewrite_index(maildrop, fence, removing, seen).await
    }

    async fn open(&self, maildrop: &AccountName, id: &str) -> Result<Opened, StoreError> {
        if !is_message_id(id) {
            return Err(StoreError::NotFound);
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.keys.message(maildrop, id))
            .send()
            .await
            .map_err(sdk_error)?;
        // Kept as object metadata at delivery, so it costs no request of its own.
        let delivered_by = out.metadata().and_then(|m| m.get(TRACEPARENT_METADATA)).and_then(|v| TraceParent::parse(v));
        Ok(Opened { body: Box::pin(TimedRead::new(out.body.into_async_read(), self.read_timeout)), delivered_by })
    }

    async fn create_with_id(&self, maildrop: &AccountName, id: &str) -> Result<Box<dyn NewMessage>, StoreError> {
        if !is_message_id(id) {
            return Err(StoreError::Invalid(format!("{id:?} is not a message id")));
        }
        let key = self.keys.message(maildrop, id);
        let late = self.keys.late_prefix(maildrop);
        Ok(Box::new(upload::S3NewMessage::new(self.client.clone(), self.bucket.clone(), key, id.to_owned(), late)))
    }

    async fn exists(&self, maildrop: &AccountName, id: &str) -> Result<bool, StoreError> {
        if !is_message_id(id) {
            return Ok(false);
        }
        let head = self.client.head_object().bucket(&self.bucket).key(self.keys.message(maildrop, id)).send().await;
        match head.map_err(sdk_error) {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get_marker(&self, maildrop: &AccountName, key: &MarkerKey) -> Result<Option<String>, StoreError> {
        let bytes = self.get_small(&self.keys.marker(maildrop, key.as_str())).await?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn put_marker(&self, maildrop: &AccountName, key: &MarkerKey, value: &str) -> Result<(), StoreError> {
        self.put_small(&self.keys.marker(maildrop, key.as_str()), value).await
    }

    async fn get_ledger(&self, maildrop: &AccountName) -> Result<Option<String>, StoreError> {
        let bytes = self.get_small(&self.keys.ledger(maildrop)).await?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn put_ledger(&self, maildrop: &AccountName, text: &str) -> Result<(), StoreError> {
        let key = self.keys.ledger(maildrop);
        if text.is_empty() { self.delete_all(&[key]).await } else { self.put_small(&key, text).await }
    }

    async fn ledgers(&self) -> Result<Vec<AccountName>, StoreError> {
        let keys = self.list_prefix(&self.keys.ledgers()).await?;
        let mut names: Vec<AccountName> = keys.iter().filter_map(|(k, _)| self.keys.ledger_of(k)).collect();
        names.sort();
        Ok(names)
    }

    async fn remove(&self, maildrop: &AccountName, ids: &[String]) -> Result<RemoveReport, StoreError> {
        let keys: Vec<String> =
            ids.iter().filter(|id| is_message_id(id)).map(|id| self.keys.message(maildrop, id)).collect();
        let skipped = ids.len() - keys.len();
        let mut report = self.delete_keys(&keys).await?;
        report.removed += skipped;
        // Callers know messages by id.
        let prefix = self.keys.maildrop(maildrop);
        for (key, _) in &mut report.failed {
            if let Some(id) = key.strip_prefix(&prefix) {
                *key = id.to_owned();
            }
        }
        Ok(report)
    }

    async fn remove_maildrop(&self, maildrop: &AccountName) -> Result<(), StoreError> {
        let mut keys: Vec<String> =
            self.list_prefix(&self.keys.maildrop(maildrop)).await?.into_iter().map(|(k, _)| k).collect();
        keys.extend(self.list_prefix(&self.keys.markers(maildrop)).await?.into_iter().map(|(k, _)| k));
        keys.extend(self.list_prefix(&self.keys.indexes(maildrop)).await?.into_iter().map(|(k, _)| k));
        keys.push(self.keys.ledger(maildrop));
        self.delete_all(&keys).await
    }
}

#[async_trait]
impl AccountStore for S3Store {
    async fn get_versioned(&self, name: &AccountName) -> Result<Option<(AccountRecord, Version)>, StoreError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(self.keys.account(name)).send().await {
            Ok(out) => out,
            Err(e) => {
                return match sdk_error(e) {
                    StoreError::NotFound => self.confirm_absent().await.map(|()| None),
                    other => Err(other),
                };
            }
        };
        let etag = out.e_tag().map(str::to_owned).ok_or_else(|| StoreError::Failed("no ETag on a record".into()))?;
        let body = tokio::time::timeout(self.read_timeout, out.body.collect())
            .await
            .map_err(|_| StoreError::Unavailable("timed out reading an object".into()))?
            .map_err(|e| StoreError::Unavailable(format!("reading an object failed: {e}")))?;
        serde_json::from_slice(&body.into_bytes())
            .map(|record| Some((record, Version(etag))))
            .map_err(|e| StoreError::Failed(format!("account record for {name} is corrupt: {e}")))
    }

    /// `If-None-Match: *` to create, `If-Match: <etag>` to replace (S3 since 2024, MinIO, Ceph
    /// RGW; Garage ignores them, see the cloud-mode docs).
    async fn put(&self, record: &AccountRecord, expect: Precondition) -> Result<Version, StoreError> {
        let name = AccountName::parse(&record.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let body = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Failed(e.to_string()))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.keys.account(&name))
            .content_type("application/json")
            .body(ByteStream::from(body));
        let request = match expect {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Unchanged(Version(etag)) => request.if_match(etag),
        };
        let out = request.send().await.map_err(sdk_error)?;
        out.e_tag().map(|etag| Version(etag.to_owned())).ok_or_else(|| StoreError::Failed("no ETag on a PUT".into()))
    }

    async fn pool_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = self.keys.secret(name);
        if self.get_small(&key).await?.is_none() {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| StoreError::Failed(e.to_string()))?;
            let made = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from(secret.to_vec()))
                .send()
                .await
                .map_err(sdk_error);
            match made {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        let bytes = self.get_small(&key).await?.ok_or(StoreError::NotFound)?;
        bytes.try_into().map_err(|_| StoreError::Failed(format!("the secret {key} is not 32 bytes")))
    }

    async fn delete(&self, name: &AccountName) -> Result<bool, StoreError> {
        let key = self.keys.account(name);
        if self.get_small(&key).await?.is_none() {
            return Ok(false);
        }
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(sdk_error)?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<AccountName>, StoreError> {
        let mut names: Vec<AccountName> = self
            .list_prefix(&self.keys.accounts())
            .await?
            .into_iter()
            .filter_map(|(k, _)| self.keys.account_of(&k))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// Maps SDK failures to what the POP3 layer needs to know: gone, retry later, or broken.
pub(crate) fn sdk_error<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown").to_owned();
            match code.as_str() {
                "NoSuchKey" | "NotFound" | "NoSuchUpload" => StoreError::NotFound,
                "PreconditionFailed" | "ConditionalRequestConflict" => StoreError::Conflict,
                "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" | "Throttling" => {
                    StoreError::Unavailable(format!("object store answered {code}"))
                }
                // Mail waits (4xx to MTAs, [SYS/TEMP] to clients) until the bucket is fixed.
                "NoSuchBucket" => StoreError::Unavailable("the bucket does not exist (s3_bucket)".into()),
                "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    StoreError::Failed(format!("object store answered {code}"))
                }
                _ => StoreError::Unavailable(format!("object store answered {code}")),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unavailable("object store timed out".into()),
        SdkError::DispatchFailure(_) => StoreError::Unavailable("object store unreachable".into()),
        SdkError::ResponseError(_) => StoreError::Unavailable("object store sent an unreadable response".into()),
        _ => StoreError::Failed(format!(
            "object store request failed: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&err)
        )),
    }
}

/// A body reader that fails instead of hanging when the store stops sending.
struct TimedRead<R> {
    inner: R,
    timeout: Duration,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<R> TimedRead<R> {
    fn new(inner: R, timeout: Duration) -> Self {
        Self { inner, timeout, deadline: None }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TimedRead<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "object store stopped sending the message",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
