//! A message on its way in: normalised to CRLF, size-capped, optionally checked to be RFC 5322
//! mail, and written to a private temporary file, so memory stays bounded whatever its size.
//! Every spooled octet holds room in the process's spool budget (`max_spool_mib`) until the
//! message is gone: deliveries beyond it are refused at once rather than filling the disk (a
//! pod's spool volume has a size limit, and going past it evicts the pod).

use super::{CrlfNormalizer, DeliveryError, HeaderCheck};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Receives a message chunk by chunk into a temporary file.
pub struct Spooler {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    normalizer: CrlfNormalizer,
    /// The RFC 5322 check, for callers that want it (the API); `None` takes any bytes.
    headers: Option<HeaderCheck>,
    buf: Vec<u8>,
    size: u64,
    max_size: u64,
    room: Room,
}

/// The spool room a message holds, in KiB, given back when it is dropped.
struct Room {
    budget: std::sync::Arc<tokio::sync::Semaphore>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    held_kib: u64,
}

impl Room {
    /// Holds room for `size` octets in all, or fails if the spool is full.
    fn grow_to(&mut self, size: u64) -> Result<(), DeliveryError> {
        let want = size.div_ceil(1024);
        if want <= self.held_kib {
            return Ok(());
        }
        let more = u32::try_from(want - self.held_kib).map_err(|_| DeliveryError::SpoolFull)?;
        let permit = self.budget.clone().try_acquire_many_owned(more).map_err(|_| DeliveryError::SpoolFull)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.held_kib = want;
        Ok(())
    }
}

/// A complete, normalised, checked message waiting in the spool.
pub struct Spooled {
    path: tempfile::TempPath,
    pub size: u64,
    _room: Room,
}

impl Spooled {
    /// The message, from its first byte.
    pub async fn open(&self) -> std::io::Result<tokio::fs::File> {
        tokio::fs::File::open(&self.path).await
    }
}

impl Spooler {
    /// A spool for one message; `check_headers` refuses input that does not look like mail.
    pub async fn new(
        spool_dir: &Path,
        max_size: u64,
        check_headers: bool,
        budget: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> Result<Self, DeliveryError> {
        // The spool holds mail: private like the store (tempfile creates its files 0600).
        crate::store::fs::private_dir(spool_dir).await.map_err(DeliveryError::Spool)?;
        let named = tempfile::Builder::new().prefix("msg-").tempfile_in(spool_dir).map_err(DeliveryError::Spool)?;
        let (file, path) = named.into_parts();
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            path,
            normalizer: CrlfNormalizer::default(),
            headers: check_headers.then(HeaderCheck::default),
            buf: Vec::with_capacity(70 * 1024),
            size: 0,
            max_size,
            room: Room { budget, held: None, held_kib: 0 },
        })
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), DeliveryError> {
        self.buf.clear();
        self.normalizer.push(chunk, &mut self.buf);
        self.write_buf().await
    }

    async fn write_buf(&mut self) -> Result<(), DeliveryError> {
        self.size += self.buf.len() as u64;
        if self.size > self.max_size {
            return Err(DeliveryError::TooLarge(self.max_size));
        }
        self.room.grow_to(self.size)?;
        if let Some(headers) = &mut self.headers {
            headers.push(&self.buf);
        }
        self.file.write_all(&self.buf).await.map_err(DeliveryError::Spool)
    }

    /// Reads a whole stream into the spool.
    pub async fn read_from(&mut self, mut input: impl AsyncRead + Unpin) -> Result<(), DeliveryError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut chunk).await.map_err(DeliveryError::Read)?;
            if n == 0 {
                return Ok(());
            }
            self.push(&chunk[..n]).await?;
        }
    }

    pub async fn finish(mut self) -> Result<Spooled, DeliveryError> {
        self.buf.clear();
        self.normalizer.finish(&mut self.buf);
        self.write_buf().await?;
        if self.size == 0 {
            return Err(DeliveryError::Empty);
        }
        if let Some(headers) = self.headers.take() {
            headers.finish().map_err(DeliveryError::Malformed)?;
        }
        self.file.flush().await.map_err(DeliveryError::Spool)?;
        Ok(Spooled { path: self.path, size: self.size, _room: self.room })
    }
}
