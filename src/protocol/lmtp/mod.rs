//! LMTP (RFC 2033) as pure logic: which command is legal when, the transaction's state, and
//! every reply text. The LMTP driver feeds it lines and carries out the steps it
//! asks for (look a recipient up, receive and deliver the data, start TLS, close), the way the
//! POP3 [`super::machine::Machine`] is driven.
//!
//! A transaction is `LHLO`, `MAIL FROM`, one or more `RCPT TO`, `DATA`; after the data the
//! server answers once per accepted recipient, in order.
//!
//! Layout: this file (the machine), [`command`] (parsing a line), [`data`] (the DATA section's
//! end marker and unstuffing), [`address`] (recipient -> mailbox), [`trace`] (the trace header
//! fields of a final delivery).

pub mod address;
pub mod command;
pub mod data;
pub mod trace;

#[cfg(test)]
mod tests;

use crate::names::AccountName;
use command::{Command, Refusal};
use std::io::Write;

/// Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4 asks for 512 at least).
pub const MAX_LINE: usize = 2048;

/// Most recipients of one transaction (RFC 5321 section 4.5.3.1.8 asks for 100 at least).
pub const MAX_RECIPIENTS: usize = 100;

/// Malformed or out-of-order commands tolerated before the connection is closed.
pub const MAX_ERRORS: u32 = 20;

/// What the machine needs to know of its listener.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name in the greeting and the LHLO reply.
    pub hostname: String,
    /// Largest message accepted (the SIZE extension).
    pub max_size: u64,
    /// STARTTLS is configured and a certificate is there.
    pub starttls: bool,
    /// A full mailbox is `452 4.2.2` (retry) instead of `552 5.2.2` (bounce).
    pub quota_tempfail: bool,
    /// How a recipient address becomes a mailbox name.
    pub rule: address::AddressRule,
}

/// One accepted recipient of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as the client gave it (for `Delivered-To` and the reply).
    pub address: String,
    pub mailbox: AccountName,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this (possibly nothing) and read on.
    Reply(Vec<u8>),
    /// Look the recipient up (its mailbox by the address rule is `mailbox`), then call
    /// [`Machine::recipient_found`].
    LookUp { address: String, mailbox: AccountName },
    /// Send this `354`, receive the data, store it for [`Machine::recipients`], then call
    /// [`Machine::delivered`] (or [`Machine::data_refused`] when the message was not taken).
    ReceiveData(Vec<u8>),
    /// Send this, drop whatever input is buffered (it came in clear), complete a TLS
    /// handshake, then call [`Machine::start_tls`].
    StartTls(Vec<u8>),
    /// Send this and close the connection.
    Close(Vec<u8>),
}

/// What looking a recipient up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A mailbox that takes mail, under its own name.
    Found(AccountName),
    NoSuchMailbox,
    Disabled,
    /// The account store or the directory did not answer.
    Unavailable,
}

/// What became of the message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Stored under this id.
    Stored(String),
    /// Stored before, by an earlier attempt.
    Duplicate,
    NoSuchMailbox,
    Disabled,
    OverQuota,
    TemporaryFailure,
    /// Not tried: the server is shutting down.
    NotTried,
}

/// Why the message itself was not taken (the same answer for every recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRefusal {
    TooLarge,
    Empty,
    Malformed,
    /// Receiving or spooling failed on our side.
    Temporary,
    /// The spool is full with other deliveries.
    SpoolFull,
}

/// The reply to a line longer than [`MAX_LINE`].
const TOO_LONG: Refusal = Refusal { code: 500, enhanced: "5.5.2", text: "Line too long" };
const BAD_SEQUENCE: Refusal = Refusal { code: 503, enhanced: "5.5.1", text: "Bad sequence of commands" };

/// The state of one LMTP connection.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    tls: bool,
    helo: Option<String>,
    sender: Option<String>,
    recipients: Vec<Recipient>,
    /// The address of a recipient being looked up.
    pending: Option<String>,
    errors: u32,
}

/// One reply line.
fn line(code: u16, enhanced: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 12);
    let _ = write!(out, "{code} {enhanced} {text}\r\n");
    out
}

/// `421` when the server shuts down.
pub fn shutdown_reply() -> Vec<u8> {
    line(421, "4.3.2", "Service shutting down, try again later")
}

/// `421` after too long without a command.
pub fn idle_reply() -> Vec<u8> {
    line(421, "4.4.2", "Idle for too long, closing the connection")
}

/// `421` after too long without the rest of the data.
pub fn data_timeout_reply() -> Vec<u8> {
    line(421, "4.4.2", "Timed out waiting for the message data")
}

impl Machine {
    pub fn new(settings: Settings) -> Self {
        Self { settings, tls: false, helo: None, sender: None, recipients: Vec::new(), pending: None, errors: 0 }
    }

    pub fn greeting(&self) -> Vec<u8> {
        format!("220 {} LMTP cloudpop ready\r\n", self.settings.hostname).into_bytes()
    }

    /// The recipients of the transaction, in the order they were accepted.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// The client's LHLO name, the envelope sender and whether TLS is on (for trace fields).
    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or_default()
    }

    pub fn sender(&self) -> &str {
        self.sender.as_deref().unwrap_or_default()
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// After the TLS handshake everything said before it is forgotten (RFC 3207 section 4.2).
    pub fn start_tls(&mut self) {
        self.tls = true;
        self.helo = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    /// Counts a refusal; past [`MAX_ERRORS`] the connection is closed.
    fn refuse(&mut self, refusal: &Refusal) -> Step {
        self.errors += 1;
        let reply = line(refusal.code, refusal.enhanced, refusal.text);
        if self.errors > MAX_ERRORS {
            let mut reply = reply;
            reply.extend(line(421, "4.7.0", "Too many errors, closing the connection"));
            return Step::Close(reply);
        }
        Step::Reply(reply)
    }

    /// A line longer than [`MAX_LINE`]; its rest is skipped by the framer.
    pub fn on_line_too_long(&mut self) -> Step {
        self.refuse(&TOO_LONG)
    }

    /// One command line, without its line end.
    pub fn on_line(&mut self, text: &[u8]) -> Step {
        match command::parse(text) {
            Ok(command) => self.command(command),
            Err(refusal) => self.refuse(&refusal),
        }
    }

    fn command(&mut self, command: Command) -> Step {
        match command {
            Command::Lhlo(name) => self.lhlo(name),
            Command::SmtpGreeting => {
                self.refuse(&Refusal { code: 500, enhanced: "5.5.1", text: "This is an LMTP server: use LHLO" })
            }
            Command::Mail { .. } | Command::Rcpt(_) | Command::Data if self.helo.is_none() => {
                self.refuse(&Refusal { code: 503, enhanced: "5.5.1", text: "Send LHLO first" })
            }
            Command::Mail { .. } if self.sender.is_some() => self.refuse(&BAD_SEQUENCE),
            Command::Mail { size: Some(size), .. } if size > self.settings.max_size => {
                Step::Reply(line(552, "5.3.4", "Message size exceeds the fixed maximum message size"))
            }
            Command::Mail { from, .. } => {
                self.sender = Some(from);
                Step::Reply(line(250, "2.1.0", "Sender OK"))
            }
            Command::Rcpt(_) if self.sender.is_none() => self.refuse(&BAD_SEQUENCE),
            Command::Rcpt(address) => self.rcpt(address),
            Command::Data if self.sender.is_none() || self.recipients.is_empty() => {
                self.refuse(&Refusal { code: 503, enhanced: "5.5.1", text: "No valid recipients" })
            }
            // An intermediate reply: no enhanced status code (RFC 2034 gives them to 2xx, 4xx, 5xx).
            Command::Data => Step::ReceiveData(b"354 Send the message, ending with <CRLF>.<CRLF>\r\n".to_vec()),
            Command::Rset => {
                self.reset();
                Step::Reply(line(250, "2.0.0", "Reset"))
            }
            Command::Noop => Step::Reply(line(250, "2.0.0", "OK")),
            Command::Vrfy => Step::Reply(line(252, "2.5.0", "Cannot verify the user, but will try delivery")),
            Command::Quit => Step::Close(line(221, "2.0.0", "Bye")),
            Command::StartTls if self.tls || !self.settings.starttls => {
                self.refuse(&Refusal { code: 502, enhanced: "5.5.1", text: "STARTTLS not available" })
            }
            Command::StartTls => Step::StartTls(line(220, "2.0.0", "Ready to start TLS")),
        }
    }

    fn lhlo(&mut self, name: String) -> Step {
        self.reset();
        let mut lines = vec![self.settings.hostname.clone(), "PIPELINING".into(), "ENHANCEDSTATUSCODES".into()];
        lines.push("8BITMIME".into());
        lines.push(format!("SIZE {}", self.settings.max_size));
        if self.settings.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        let mut reply = Vec::new();
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(reply, "250{sep}{text}\r\n");
        }
        self.helo = Some(name);
        Step::Reply(reply)
    }

    fn rcpt(&mut self, address: String) -> Step {
        if self.recipients.len() >= MAX_RECIPIENTS {
            return Step::Reply(line(452, "4.5.3", "Too many recipients"));
        }
        match self.settings.rule.mailbox(&address) {
            Ok(mailbox) => {
                self.pending = Some(address.clone());
                Step::LookUp { address, mailbox }
            }
            Err(_) => Step::Reply(line(550, "5.1.1", "No such mailbox")),
        }
    }

    /// Continues after [`Step::LookUp`].
    pub fn recipient_found(&mut self, found: Lookup) -> Step {
        let Some(address) = self.pending.take() else {
            return Step::Reply(Vec::new());
        };
        Step::Reply(match found {
            Lookup::Found(mailbox) => {
                self.recipients.push(Recipient { address, mailbox });
                line(250, "2.1.5", "Recipient OK")
            }
            Lookup::NoSuchMailbox => line(550, "5.1.1", "No such mailbox"),
            Lookup::Disabled => line(550, "5.2.1", "Mailbox disabled"),
            Lookup::Unavailable => line(451, "4.3.0", "Temporary failure looking up the mailbox, try again later"),
        })
    }

    /// Continues after [`Step::ReceiveData`] when the message was stored (or not) for each
    /// recipient, in order: one reply each. The transaction ends.
    pub fn delivered(&mut self, outcomes: &[Delivered]) -> Step {
        let reply = outcomes.iter().enumerate().flat_map(|(i, outcome)| self.recipient_reply(i, outcome)).collect();
        self.end_transaction();
        Step::Reply(reply)
    }

    /// The reply for the `index`th accepted recipient, sent as soon as its copy is stored (RFC
    /// 2033 section 4.2: one reply per recipient, in order); call [`Self::end_transaction`]
    /// after the last.
    pub fn recipient_reply(&self, index: usize, outcome: &Delivered) -> Vec<u8> {
        let Some(recipient) = self.recipients.get(index) else { return Vec::new() };
        let (code, enhanced, text) = self.outcome_reply(outcome);
        let text = match outcome {
            Delivered::Stored(id) => format!("<{}> {text} as {id}", recipient.address),
            _ => format!("<{}> {text}", recipient.address),
        };
        line(code, enhanced, &text)
    }

    /// Ends the transaction after the last recipient's reply.
    pub fn end_transaction(&mut self) {
        self.reset();
    }

    /// Continues after [`Step::ReceiveData`] when the message itself was not taken: the same
    /// answer for every recipient. The transaction ends.
    pub fn data_refused(&mut self, refusal: DataRefusal) -> Step {
        let (code, enhanced, text) = match refusal {
            DataRefusal::TooLarge => (552, "5.3.4", "Message size exceeds the fixed maximum message size"),
            DataRefusal::Empty => (554, "5.6.0", "Empty message"),
            DataRefusal::Malformed => (554, "5.6.0", "Malformed message"),
            DataRefusal::Temporary => (451, "4.3.0", "Temporary failure receiving the message"),
            DataRefusal::SpoolFull => (452, "4.3.1", "Insufficient system storage, try again later"),
        };
        let reply = line(code, enhanced, text).repeat(self.recipients.len());
        self.reset();
        Step::Reply(reply)
    }

    fn outcome_reply(&self, outcome: &Delivered) -> (u16, &'static str, &'static str) {
        match outcome {
            Delivered::Stored(_) | Delivered::Duplicate => (250, "2.0.0", "Delivered"),
            Delivered::NoSuchMailbox => (550, "5.1.1", "No such mailbox"),
            Delivered::Disabled => (550, "5.2.1", "Mailbox disabled"),
            Delivered::OverQuota if self.settings.quota_tempfail => (452, "4.2.2", "Mailbox full"),
            Delivered::OverQuota => (552, "5.2.2", "Mailbox full"),
            Delivered::TemporaryFailure => (451, "4.3.0", "Temporary failure storing the message, try again later"),
            Delivered::NotTried => (451, "4.3.2", "Service shutting down, try again later"),
        }
    }
}
