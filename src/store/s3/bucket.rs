//! Whether the configured bucket exists. A misspelt `s3_bucket` must not read as "no such
//! account": some stores answer a GetObject in a missing bucket with NoSuchKey (s3s-fs), and a
//! HEAD's 404 has no body to tell a missing key from a missing bucket, so every user would be
//! told their password is wrong and every delivery would bounce. HeadBucket tells them apart:
//! the readiness probe asks it, and so does an account lookup that found nothing until the
//! bucket has been seen once.

use super::{S3Store, sdk_error};
use crate::store::StoreError;
use std::sync::atomic::{AtomicU8, Ordering};

/// (0: not asked yet.)
const PRESENT: u8 = 1;
const MISSING: u8 = 2;

/// What this process last learned about the bucket.
#[derive(Default)]
pub(super) struct BucketSeen(AtomicU8);

impl S3Store {
    /// One HeadBucket: `Ok` while the bucket exists; a missing bucket is an error that names it.
    pub(super) async fn check_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await.map_err(sdk_error) {
            Ok(_) => {
                self.bucket_seen.0.store(PRESENT, Ordering::Relaxed);
                Ok(())
            }
            Err(StoreError::NotFound) => {
                if self.bucket_seen.0.swap(MISSING, Ordering::Relaxed) != MISSING {
                    tracing::error!(bucket = %self.bucket, "the bucket does not exist: check s3_bucket");
                }
                Err(self.bucket_missing())
            }
            Err(e) => Err(e),
        }
    }

    /// Called where the store found no account record: `Ok` if that means there is none, an
    /// error if the bucket itself is missing (or has not been seen yet and cannot be checked).
    pub(super) async fn confirm_absent(&self) -> Result<(), StoreError> {
        if self.bucket_seen.0.load(Ordering::Relaxed) == PRESENT {
            return Ok(());
        }
        self.check_bucket().await
    }

    fn bucket_missing(&self) -> StoreError {
        StoreError::Unavailable(format!("the bucket {:?} does not exist (s3_bucket)", self.bucket))
    }
}
