//! Deleting objects: DeleteObjects, 1000 keys a call, with the Content-MD5 header that stores
//! predating S3's newer checksums require (older MinIO, Ceph RGW), and one DeleteObject per key
//! for stores that refuse batch deletes altogether.

use super::{S3Store, sdk_error};
use crate::store::{RemoveReport, StoreError};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use futures::StreamExt;
use md5::Digest;
use std::sync::atomic::Ordering;

/// DeleteObjects accepts at most this many keys per call.
const DELETE_BATCH: usize = 1000;

/// Single deletes in flight at once, when batches are refused.
const SINGLE_DELETES_IN_FLIGHT: usize = 16;

/// Error codes with which a store says it will not take this batch delete at all (rather than
/// failing it for now): from then on keys are deleted one by one.
const BATCH_REFUSED: [&str; 6] =
    ["NotImplemented", "MissingContentMD5", "InvalidRequest", "MethodNotAllowed", "InvalidDigest", "BadDigest"];

impl S3Store {
    /// Deletes keys; keys that are already gone count as removed.
    pub(super) async fn delete_keys(&self, keys: &[String]) -> Result<RemoveReport, StoreError> {
        let mut report = RemoveReport::default();
        for batch in keys.chunks(DELETE_BATCH) {
            let part = if self.single_deletes.load(Ordering::Relaxed) {
                self.delete_singly(batch).await
            } else {
                self.delete_batch(batch).await?
            };
            report.removed += part.removed;
            report.failed.extend(part.failed);
        }
        Ok(report)
    }

    async fn delete_batch(&self, batch: &[String]) -> Result<RemoveReport, StoreError> {
        let objects = batch
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build().map_err(|e| StoreError::Failed(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        let sent = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .customize()
            .mutate_request(with_content_md5)
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e) if e.code().is_some_and(|code| BATCH_REFUSED.contains(&code)) || refused_status(&e) => {
                tracing::warn!(
                    code = e.code().unwrap_or("none"),
                    "the object store refuses DeleteObjects; deleting one key at a time from now on"
                );
                self.single_deletes.store(true, Ordering::Relaxed);
                return Ok(self.delete_singly(batch).await);
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let failed: Vec<(String, String)> = out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| (e.key().unwrap_or_default().to_owned(), e.code().unwrap_or("error").to_owned()))
            .collect();
        Ok(RemoveReport { removed: batch.len() - failed.len(), failed })
    }

    /// One DeleteObject per key, a few at a time; each failure is reported with its key.
    async fn delete_singly(&self, keys: &[String]) -> RemoveReport {
        // Owned values: borrowing futures in a buffered stream are not `Send` for async-trait.
        let results: Vec<(String, Result<(), StoreError>)> = futures::stream::iter(keys.to_vec())
            .map(|key| {
                let request = self.client.delete_object().bucket(&self.bucket).key(&key);
                async move { (key, request.send().await.map(|_| ()).map_err(sdk_error)) }
            })
            .buffer_unordered(SINGLE_DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut report = RemoveReport::default();
        for (key, result) in results {
            match result {
                Ok(()) | Err(StoreError::NotFound) => report.removed += 1,
                Err(e) => report.failed.push((key, e.to_string())),
            }
        }
        report
    }
}

/// A refusal without an S3 error code: 405 Method Not Allowed or 501 Not Implemented.
fn refused_status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    matches!(e, aws_sdk_s3::error::SdkError::ServiceError(service) if matches!(service.raw().status().as_u16(), 405 | 501))
}

/// Adds Content-MD5 to a DeleteObjects request. The SDK sends only the newer CRC32 checksum,
/// and S3-compatible stores that predate it refuse a batch delete without Content-MD5; S3
/// itself accepts (and checks) both.
fn with_content_md5(request: &mut HttpRequest) {
    use base64::Engine;
    if let Some(body) = request.body().bytes() {
        let digest = md5::Md5::digest(body);
        let value = base64::engine::general_purpose::STANDARD.encode(digest);
        request.headers_mut().insert("content-md5", value);
    }
}
