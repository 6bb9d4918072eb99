//! Storing new mail: line endings normalised to CRLF on the fly, size capped, committed
//! atomically. Used by `cloudpop deliver` now and by the ingest API later.

use crate::accounts::Accounts;
use crate::names::{AccountName, InvalidName};
use crate::store::{MessageStore, StoreError, StoredMessage};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a delivery was refused or failed. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("unknown mailbox {0}")]
    UnknownMailbox(AccountName),
    #[error("message is empty")]
    Empty,
    #[error("message exceeds the maximum size of {0} octets")]
    TooLarge(u64),
    #[error("reading the message failed: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rewrites CR LF, lone LF and lone CR as CR LF, chunk by chunk.
#[derive(Debug, Default)]
pub struct CrlfNormalizer {
    pending_cr: bool,
    ends_with_newline: bool,
    seen_any: bool,
}

impl CrlfNormalizer {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 2);
        for &b in input {
            self.seen_any = true;
            match b {
                b'\r' => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.pending_cr = true;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                    self.ends_with_newline = true;
                }
                _ => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                        self.pending_cr = false;
                    }
                    out.push(b);
                    self.ends_with_newline = false;
                }
            }
        }
    }

    /// Flushes a trailing CR and makes sure the message ends with CRLF, so the size in LIST is
    /// exactly what RETR sends.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || (self.seen_any && !self.ends_with_newline) {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.ends_with_newline = true;
    }
}

/// Reads a message from `input` and stores it in `mailbox`, in chunks of bounded size.
pub async fn deliver(
    store: &dyn MessageStore,
    accounts: &Accounts,
    mailbox: &str,
    mut input: impl AsyncRead + Unpin,
    max_size: u64,
) -> Result<StoredMessage, DeliveryError> {
    let mailbox = AccountName::parse(mailbox)?;
    if !accounts.exists(&mailbox).await? {
        return Err(DeliveryError::UnknownMailbox(mailbox));
    }
    let mut message = store.create(&mailbox).await?;
    let mut normalizer = CrlfNormalizer::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(70 * 1024);
    let mut written = 0u64;
    loop {
        let n = input.read(&mut chunk).await.map_err(DeliveryError::Read)?;
        out.clear();
        if n == 0 {
            normalizer.finish(&mut out);
        } else {
            normalizer.push(&chunk[..n], &mut out);
        }
        written += out.len() as u64;
        if written > max_size {
            return Err(DeliveryError::TooLarge(max_size));
        }
        message.write(&out).await?;
        if n == 0 {
            break;
        }
    }
    if written == 0 {
        return Err(DeliveryError::Empty);
    }
    Ok(message.commit().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut n = CrlfNormalizer::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            n.push(piece, &mut out);
        }
        n.finish(&mut out);
        out
    }

    #[test]
    fn every_line_ending_becomes_crlf() {
        let input = b"a\nb\r\nc\rd\r\r\ne\n\nf";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(normalize(input, chunk), b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\nf\r\n", "chunk {chunk}");
        }
        assert_eq!(normalize(b"x\r", 1), b"x\r\n");
        assert_eq!(normalize(b"", 1), b"");
    }
}
