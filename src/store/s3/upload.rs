//! Writing one new message to S3 in bounded memory: a single PutObject when it fits in one part,
//! otherwise a multipart upload that is invisible until completed and aborted if abandoned.

use super::TRACEPARENT_METADATA;
use super::{index, sdk_error};
use crate::store::{NewMessage, StoreError, StoredMessage, TraceParent};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

/// Part size of multipart uploads (S3 requires at least 5 MiB for all parts but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct S3NewMessage {
    client: Client,
    bucket: String,
    key: String,
    id: String,
    /// Where a late-arrival marker would go (see the index module).
    late_prefix: String,
    buffer: Vec<u8>,
    size: u64,
    /// Upload id and finished parts, once the message outgrew one part.
    multipart: Option<(String, Vec<CompletedPart>)>,
    traceparent: Option<TraceParent>,
    done: bool,
}

impl S3NewMessage {
    pub fn new(client: Client, bucket: String, key: String, id: String, late_prefix: String) -> Self {
        Self {
            client,
            bucket,
            key,
            id,
            late_prefix,
            buffer: Vec::new(),
            size: 0,
            multipart: None,
            traceparent: None,
            done: false,
        }
    }

    /// A message committed long after its id was made may sort under an index watermark
    /// written meanwhile: its marker makes logins see it. The marker goes first, so no message
    /// is ever stored without it (readers ignore a marker until its message is there).
    async fn mark_if_late(&self) -> Result<Option<String>, StoreError> {
        if !index::is_late(&self.id, crate::clock::pool_millis()) {
            return Ok(None);
        }
        let stored = StoredMessage { id: self.id.clone(), size: self.size };
        let marker = format!("{}{}", self.late_prefix, index::late_name(&stored));
        let put = self.client.put_object().bucket(&self.bucket).key(&marker).body(ByteStream::from_static(b"")).send();
        put.await.map_err(sdk_error)?;
        Ok(Some(marker))
    }

    /// The object's user metadata: the delivery trace context, when there is one.
    fn metadata(&self) -> Option<std::collections::HashMap<String, String>> {
        let traceparent = self.traceparent.as_ref()?;
        Some([(TRACEPARENT_METADATA.to_owned(), traceparent.as_str().to_owned())].into())
    }

    async fn upload_part(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("message/rfc822")
                .set_metadata(self.metadata())
                .send()
                .await
                .map_err(sdk_error)?;
            let upload_id = created.upload_id().ok_or_else(|| StoreError::Failed("no upload id returned".into()))?;
            self.multipart = Some((upload_id.to_owned(), Vec::new()));
        }
        let (upload_id, parts) = self.multipart.as_mut().expect("multipart upload started above");
        let number = parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id.as_str())
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build());
        Ok(())
    }
}

#[async_trait]
impl NewMessage for S3NewMessage {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(chunk);
        self.size += chunk.len() as u64;
        while self.buffer.len() >= PART_SIZE {
            let rest = self.buffer.split_off(PART_SIZE);
            let part = std::mem::replace(&mut self.buffer, rest);
            self.upload_part(part).await?;
        }
        Ok(())
    }

    fn set_trace_parent(&mut self, traceparent: &TraceParent) {
        self.traceparent = Some(traceparent.clone());
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredMessage, StoreError> {
        let body = std::mem::take(&mut self.buffer);
        let marker = self.mark_if_late().await?;
        let committed = self.commit_object(body).await;
        if let (Err(_), Some(marker)) = (&committed, marker) {
            // Harmless if it stays (readers ignore it), but tidier gone.
            let _ = self.client.delete_object().bucket(&self.bucket).key(marker).send().await;
        }
        committed?;
        self.done = true;
        Ok(StoredMessage { id: self.id.clone(), size: self.size })
    }
}

impl S3NewMessage {
    /// Writes the object: one PUT, or the rest of the multipart upload and its completion.
    async fn commit_object(&mut self, body: Vec<u8>) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("message/rfc822")
                .set_metadata(self.metadata())
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(sdk_error)?;
        } else {
            if !body.is_empty() {
                self.upload_part(body).await?;
            }
            let (upload_id, parts) = self.multipart.clone().expect("multipart upload in progress");
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }
}

impl Drop for S3NewMessage {
    fn drop(&mut self) {
        // An abandoned multipart upload would otherwise hold storage until a lifecycle rule
        // cleans it up.
        if let (false, Some((upload_id, _))) = (self.done, self.multipart.take()) {
            let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await;
                });
            }
        }
    }
}
