//! `cloudpop check`: end-to-end checks of a running deployment from a client's side, for
//! `helm test`, smoke tests and an operator's shell. Each check connects the way a client does
//! and says in one line what it saw.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest a reply line may be before the peer is taken for something other than POP3.
const MAX_LINE: usize = 4096;
/// Most CAPA lines accepted.
const MAX_CAPA_LINES: usize = 100;

/// What a check of a POP3 listener saw instead of a working one.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("POP3 at {addr}: no complete answer within {} s", .secs)]
    Timeout { addr: String, secs: u64 },
    #[error("POP3 at {addr}: cannot connect: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("POP3 at {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("POP3 at {addr}: the greeting is {line:?}, not +OK")]
    Greeting { addr: String, line: String },
    #[error("POP3 at {addr}: CAPA answered {line:?}")]
    Capa { addr: String, line: String },
    #[error("POP3 at {addr}: CAPA did not end after {MAX_CAPA_LINES} lines")]
    EndlessCapa { addr: String },
    #[error("POP3 at {addr}: the server closed the connection")]
    Closed { addr: String },
    #[error("POP3 at {addr}: a reply line longer than {MAX_LINE} octets")]
    LongLine { addr: String },
}

/// Connects to the POP3 listener at `addr` (`host:port`), expects the greeting, asks CAPA and
/// quits. Returns the capabilities.
pub async fn pop3_capa(addr: &str, limit: Duration) -> Result<Vec<String>, CheckError> {
    timeout(limit, pop3_capa_inner(addr))
        .await
        .map_err(|_| CheckError::Timeout { addr: addr.to_owned(), secs: limit.as_secs() })?
}

async fn pop3_capa_inner(addr: &str) -> Result<Vec<String>, CheckError> {
    let owned = || addr.to_owned();
    let stream = TcpStream::connect(addr).await.map_err(|source| CheckError::Connect { addr: owned(), source })?;
    let (read, mut write) = stream.into_split();
    let mut lines = Lines { reader: BufReader::new(read), addr };
    let greeting = lines.next().await?;
    if !greeting.starts_with("+OK") {
        return Err(CheckError::Greeting { addr: owned(), line: greeting });
    }
    write.write_all(b"CAPA\r\n").await.map_err(|source| CheckError::Io { addr: owned(), source })?;
    let status = lines.next().await?;
    if !status.starts_with("+OK") {
        return Err(CheckError::Capa { addr: owned(), line: status });
    }
    let mut capabilities = Vec::new();
    loop {
        let line = lines.next().await?;
        if line == "." {
            break;
        }
        if capabilities.len() == MAX_CAPA_LINES {
            return Err(CheckError::EndlessCapa { addr: owned() });
        }
        capabilities.push(line);
    }
    // A polite goodbye; the checks above are what counted.
    let _ = write.write_all(b"QUIT\r\n").await;
    let _ = lines.next().await;
    Ok(capabilities)
}

/// CRLF-terminated lines of a POP3 reply, bounded in length.
struct Lines<'a, R> {
    reader: BufReader<R>,
    addr: &'a str,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<'_, R> {
    async fn next(&mut self) -> Result<String, CheckError> {
        let addr = || self.addr.to_owned();
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| CheckError::Io { addr: addr(), source })?;
        if read == 0 {
            return Err(CheckError::Closed { addr: addr() });
        }
        if !line.ends_with(b"\n") {
            return Err(CheckError::LongLine { addr: addr() });
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }
}
