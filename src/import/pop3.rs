//! Any live POP3 server as a source: each mailbox is read with UIDL, LIST and RETR, as the
//! users' own clients read it, and nothing is deleted there. Messages keep the old server's
//! UIDLs and order. A message imported by an earlier run is not fetched again (with the store
//! as the destination) and never stored twice (with either destination).

use super::{ImportError, Put, Sink, Tally};
use crate::delivery::Spooler;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How to reach the old server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// TLS from the first byte (port 995).
    Implicit,
    /// STLS after the greeting (port 110).
    Starttls,
    /// No TLS: passwords cross the network in clear. Only for loopback or a trusted network.
    None,
}

/// The old server.
pub struct Source {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// PEM CA certificates to trust instead of the system's.
    pub ca: Option<std::path::PathBuf>,
}

/// One mailbox to pull: the login on the old server and the cloudpop account it goes to.
pub struct User {
    pub login: String,
    pub password: String,
    pub mailbox: String,
}

/// What went wrong talking to the old server.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{0}: not a host name")]
    ServerName(String),
    #[error("{0}")]
    TlsSetup(#[from] crate::tls::TlsError),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("the server sent data after its STLS answer")]
    AfterStls,
    #[error("login as {0} refused")]
    LoginRefused(String),
    #[error("{what}: {reply}")]
    Refused { what: String, reply: String },
    #[error("the server stopped answering")]
    Silent,
    #[error("the server closed the connection")]
    Closed,
    #[error("reply line too long")]
    LineTooLong,
    #[error("the UIDL listing goes past {0} messages")]
    ListingTooLong(usize),
    #[error("malformed UIDL line {0:?}")]
    MalformedUidl(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Longest reply line accepted from the old server.
const MAX_LINE: usize = 64 * 1024;
/// Time allowed for any one reply line.
const TIMEOUT: Duration = Duration::from_secs(120);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A POP3 connection in the TRANSACTION state.
struct Connection {
    io: BufReader<Box<dyn Stream>>,
}

impl Source {
    /// `users`: one `login:password[:mailbox]` per line, or the same separated by tabs (for
    /// passwords with a colon); blank lines and `#` comments are skipped.
    pub fn read_users(text: &str) -> Result<Vec<User>, ImportError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(n, line)| {
                let separator = if line.contains('\t') { '\t' } else { ':' };
                let mut parts = line.trim_end_matches('\r').splitn(3, separator);
                let (login, password) = (parts.next().unwrap_or(""), parts.next());
                let Some(password) = password.filter(|p| !p.is_empty() && !login.is_empty()) else {
                    return Err(ImportError::UsersLine(n + 1));
                };
                let mailbox = parts.next().filter(|m| !m.is_empty()).unwrap_or(login);
                Ok(User { login: login.to_owned(), password: password.to_owned(), mailbox: mailbox.to_owned() })
            })
            .collect()
    }

    fn tls(&self) -> Result<tokio_rustls::TlsConnector, SourceError> {
        let config = crate::tls::client_config(self.ca.as_deref(), None)?;
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    async fn connect(&self, user: &User) -> Result<Connection, SourceError> {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| SourceError::ConnectTimeout)?
            .map_err(|source| SourceError::Connect { addr: format!("{}:{}", self.host, self.port), source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|_| SourceError::ServerName(self.host.clone()))?;
        let stream: Box<dyn Stream> = match self.security {
            Security::Implicit => {
                Box::new(self.tls()?.connect(name.clone(), tcp).await.map_err(SourceError::Handshake)?)
            }
            Security::None | Security::Starttls => Box::new(tcp),
        };
        let mut conn = Connection { io: BufReader::new(stream) };
        conn.expect_ok("greeting").await?;
        if self.security == Security::Starttls {
            conn.command("STLS").await?;
            let Connection { io } = conn;
            // Nothing may be buffered from before the handshake.
            if !io.buffer().is_empty() {
                return Err(SourceError::AfterStls);
            }
            let tls = self.tls()?.connect(name, io.into_inner()).await.map_err(SourceError::Handshake)?;
            conn = Connection { io: BufReader::new(Box::new(tls)) };
        }
        conn.command(&format!("USER {}", user.login)).await?;
        conn.command(&format!("PASS {}", user.password))
            .await
            .map_err(|_| SourceError::LoginRefused(user.login.clone()))?;
        Ok(conn)
    }
}

impl Connection {
    async fn line(&mut self) -> Result<String, SourceError> {
        let mut line = Vec::new();
        let mut limited = (&mut self.io).take(MAX_LINE as u64);
        match tokio::time::timeout(TIMEOUT, limited.read_until(b'\n', &mut line)).await {
            Err(_) => Err(SourceError::Silent),
            Ok(Err(e)) => Err(SourceError::Io(e)),
            Ok(Ok(0)) => Err(SourceError::Closed),
            Ok(Ok(_)) if !line.ends_with(b"\n") => Err(SourceError::LineTooLong),
            Ok(Ok(_)) => Ok(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned()),
        }
    }

    async fn expect_ok(&mut self, what: &str) -> Result<String, SourceError> {
        let line = self.line().await?;
        if line.starts_with("+OK") {
            Ok(line)
        } else {
            Err(SourceError::Refused { what: what.to_owned(), reply: line })
        }
    }

    async fn command(&mut self, command: &str) -> Result<String, SourceError> {
        let stream = self.io.get_mut();
        stream.write_all(format!("{command}\r\n").as_bytes()).await?;
        stream.flush().await?;
        let verb = command.split(' ').next().unwrap_or(command);
        self.expect_ok(verb).await
    }

    /// The UIDL listing, parsed as it is read: (message number, UIDL), at most [`MAX_LISTED`].
    async fn uidls(&mut self) -> Result<Vec<(u64, String)>, SourceError> {
        self.command("UIDL").await?;
        let mut messages = Vec::new();
        loop {
            let line = self.line().await?;
            if line == "." {
                return Ok(messages);
            }
            if messages.len() == MAX_LISTED {
                return Err(SourceError::ListingTooLong(MAX_LISTED));
            }
            let line = line.strip_prefix('.').unwrap_or(&line);
            let mut words = line.split_whitespace();
            match (words.next().and_then(|n| n.parse().ok()), words.next()) {
                (Some(n), Some(uidl)) => messages.push((n, uidl.to_owned())),
                _ => return Err(SourceError::MalformedUidl(line.to_owned())),
            }
        }
    }

    /// RETR `n` into `spooler`, without the dot-stuffing, line by line (bounded memory). The
    /// reply is always read to its end; a spool that refused a line (the message is too large,
    /// the disk failed) is the inner error.
    async fn retrieve(
        &mut self,
        n: u64,
        mut spooler: Spooler,
    ) -> Result<Result<Spooler, crate::delivery::DeliveryError>, SourceError> {
        self.command(&format!("RETR {n}")).await?;
        let mut refused = None;
        let mut line = Vec::new();
        // Lines are read in pieces of at most MAX_LINE: only a piece that starts a line can be
        // the terminator or carry a stuffed dot.
        let mut line_start = true;
        loop {
            line.clear();
            let mut limited = (&mut self.io).take(MAX_LINE as u64);
            match tokio::time::timeout(TIMEOUT, limited.read_until(b'\n', &mut line)).await {
                Err(_) => return Err(SourceError::Silent),
                Ok(Err(e)) => return Err(SourceError::Io(e)),
                Ok(Ok(0)) => return Err(SourceError::Closed),
                Ok(Ok(_)) => {}
            }
            if line_start && (line == b".\r\n" || line == b".\n") {
                return Ok(match refused {
                    Some(e) => Err(e),
                    None => Ok(spooler),
                });
            }
            let content = if line_start { line.strip_prefix(b".").unwrap_or(&line) } else { &line };
            if refused.is_none()
                && let Err(e) = spooler.push(content).await
            {
                refused = Some(e);
            }
            line_start = line.ends_with(b"\n");
        }
    }
}

/// Most messages one mailbox of the old server may list: a listing past it is an error rather
/// than memory without bound (a hostile or broken server can send UIDL lines forever).
pub const MAX_LISTED: usize = 1_000_000;

/// Pulls `user`'s mailbox into `user.mailbox`.
pub async fn import(sink: &Sink, source: &Source, user: &User, tally: &Tally) -> Result<(), ImportError> {
    let mut conn = source.connect(user).await?;
    let mut messages = conn.uidls().await?;
    messages.sort_by_key(|(n, _)| *n);
    tally.expect(messages.len() as u64);
    let start_ms = crate::clock::unix_millis();
    let mut seen = std::collections::HashSet::with_capacity(messages.len());
    for (index, (n, uidl)) in messages.iter().enumerate() {
        let what = format!("{} message {n} ({uidl})", user.mailbox);
        if !seen.insert(uidl.as_str()) {
            tally.count(&what, Err(ImportError::RepeatedUidl(uidl.clone())));
            continue;
        }
        if sink.known(&user.mailbox, uidl).await {
            tally.count(&what, Ok(Put::AlreadyImported));
            continue;
        }
        let spooled = conn.retrieve(*n, sink.spooler().await?).await?;
        let put = sink.finish(&user.mailbox, uidl, start_ms + index as u64, spooled).await;
        tally.count(&what, put);
    }
    let _ = conn.command("QUIT").await;
    Ok(())
}

/// Reads a users file.
pub fn users_from(path: &Path) -> Result<Vec<User>, ImportError> {
    let text = std::fs::read_to_string(path).map_err(ImportError::file(path))?;
    Source::read_users(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_files_name_login_password_and_mailbox() {
        let users =
            Source::read_users("# old server\nalice\tpw:with:colons\talice@example.com\nbob:secret\n\n").unwrap();
        assert_eq!((users[0].login.as_str(), users[0].password.as_str()), ("alice", "pw:with:colons"));
        assert_eq!(users[0].mailbox, "alice@example.com");
        assert_eq!((users[1].login.as_str(), users[1].mailbox.as_str()), ("bob", "bob"));
        assert!(Source::read_users("nopassword\n").is_err());
        assert!(Source::read_users("carol:\n").is_err());
    }
}
