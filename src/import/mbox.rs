//! mbox files (mboxrd and mboxo, as MTAs, mutt and Thunderbird write them): one message per
//! `From ` separator line, `>From ` lines unescaped once, the blank line before the next
//! separator dropped.
//!
//! UIDLs are assigned, the same on every run: the message's own `X-UIDL` field when it has one
//! that is valid and not repeated in the file (older POP3 servers such as qpopper kept UIDLs
//! there), else `mbox-` and the MD5 of the message, with `-2`, `-3`... for identical copies.

use super::{ImportError, Sink, Tally};
use md5::Digest;
use std::collections::HashSet;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Longest piece of a line handled at once: a file with a line of gigabytes is read in pieces,
/// never whole.
pub const MAX_PIECE: usize = 64 * 1024;

/// One message split out of an mbox, whole (for tests and the fuzz target; imports stream).
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub uidl: String,
    pub received_ms: u64,
}

/// What the splitter makes of a piece of the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A message starts.
    Begin,
    /// The next bytes of the current message.
    Data(Vec<u8>),
    /// The current message ended, with its UIDL and receipt time.
    End { uidl: String, received_ms: u64 },
    /// The current message ended empty: nothing to import.
    Discard,
}

/// The message being split: its digest and header UIDL so far, and a blank line held back (the
/// mbox's own if a separator or the end follows).
struct Current {
    digest: md5::Md5,
    header_uidl: Option<String>,
    in_header: bool,
    held: Option<Vec<u8>>,
    size: u64,
    secs: u64,
}

/// Splits an mbox piece by piece into messages, assigning UIDLs and receipt times as they end;
/// memory stays bounded whatever the size of a message or a line.
#[derive(Default)]
pub struct Splitter {
    current: Option<Current>,
    /// Every UIDL given so far.
    seen: HashSet<String>,
    last_ms: u64,
}

impl Splitter {
    /// Feeds one piece of a line (at most [`MAX_PIECE`]; `line_start` when it begins a line).
    pub fn piece(&mut self, piece: &[u8], line_start: bool, out: &mut Vec<Step>) {
        if line_start && let Some(rest) = piece.strip_prefix(b"From ") {
            let secs = asctime_secs(&String::from_utf8_lossy(rest)).unwrap_or(0);
            self.finish(out);
            self.begin(secs, out);
            return;
        }
        if self.current.is_none() {
            self.begin(0, out);
        }
        let current = self.current.as_mut().expect("begun above");
        if let Some(held) = current.held.take() {
            Self::data(current, held, out);
        }
        if line_start && (piece == b"\n" || piece == b"\r\n") {
            current.in_header = false;
            current.held = Some(piece.to_vec());
            return;
        }
        if line_start && current.in_header && piece.ends_with(b"\n") && current.header_uidl.is_none() {
            current.header_uidl = header_uidl(piece);
        }
        // mboxrd: one '>' comes off every `>+From ` line.
        let quoted = if line_start { piece.iter().take_while(|&&b| b == b'>').count() } else { 0 };
        let bytes = if quoted > 0 && piece[quoted..].starts_with(b"From ") { &piece[1..] } else { piece };
        Self::data(current, bytes.to_vec(), out);
    }

    fn begin(&mut self, secs: u64, out: &mut Vec<Step>) {
        let digest = md5::Md5::new();
        self.current = Some(Current { digest, header_uidl: None, in_header: true, held: None, size: 0, secs });
        out.push(Step::Begin);
    }

    fn data(current: &mut Current, bytes: Vec<u8>, out: &mut Vec<Step>) {
        current.digest.update(&bytes);
        current.size += bytes.len() as u64;
        out.push(Step::Data(bytes));
    }

    /// Ends the current message (at a separator, or at the end of the file).
    pub fn finish(&mut self, out: &mut Vec<Step>) {
        let Some(current) = self.current.take() else { return };
        // A blank line still held belongs to the mbox, not the message.
        if current.size == 0 {
            out.push(Step::Discard);
            return;
        }
        let base = match current.header_uidl {
            Some(uidl) if !self.seen.contains(&uidl) => uidl,
            _ => format!("mbox-{}", hex(&current.digest.finalize())),
        };
        let mut uidl = base.clone();
        for copy in 2.. {
            if !self.seen.contains(&uidl) {
                break;
            }
            uidl = format!("{base}-{copy}");
        }
        self.seen.insert(uidl.clone());
        self.last_ms = (current.secs * 1000).max(self.last_ms + 1);
        out.push(Step::End { uidl, received_ms: self.last_ms });
    }
}

/// Splits a whole mbox in memory (tests, the fuzz target): the messages it holds.
pub fn split_all(data: &[u8]) -> Vec<Message> {
    let mut splitter = Splitter::default();
    let mut steps = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        for (i, piece) in line.chunks(MAX_PIECE).enumerate() {
            splitter.piece(piece, i == 0, &mut steps);
        }
    }
    splitter.finish(&mut steps);
    let (mut messages, mut body) = (Vec::new(), Vec::new());
    for step in steps {
        match step {
            Step::Begin | Step::Discard => body.clear(),
            Step::Data(bytes) => body.extend_from_slice(&bytes),
            Step::End { uidl, received_ms } => {
                messages.push(Message { body: std::mem::take(&mut body), uidl, received_ms })
            }
        }
    }
    messages
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of a header line if it is an `X-UIDL:` field with a valid UIDL.
fn header_uidl(line: &[u8]) -> Option<String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > 7 && line[..7].eq_ignore_ascii_case(b"x-uidl:") {
        let value = String::from_utf8_lossy(&line[7..]).trim().to_owned();
        return crate::store::ids::is_valid_uidl(&value).then_some(value);
    }
    None
}

/// Seconds since the epoch of a separator line's date (`sender Wed Dec  2 18:00:00 2026`).
fn asctime_secs(rest: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let words: Vec<&str> = rest.split_whitespace().collect();
    let at = words.iter().position(|w| MONTHS.contains(w))?;
    let month = MONTHS.iter().position(|m| *m == words[at])? as i64 + 1;
    let day: i64 = words.get(at + 1)?.parse().ok()?;
    let mut time = words.get(at + 2)?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (time.next()??, time.next()??, time.next().flatten().unwrap_or(0));
    let year: i64 = words.get(at + 3)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
}

/// Imports every message of the mbox at `file` into `mailbox`, each streamed into the spool
/// piece by piece (bounded memory for any message or line).
pub async fn import(sink: &Sink, mailbox: &str, file: &Path, tally: &Tally) -> Result<(), ImportError> {
    let input = tokio::fs::File::open(file).await.map_err(ImportError::file(file))?;
    let mut reader = BufReader::new(input);
    let mut splitter = Splitter::default();
    let (mut piece, mut steps) = (Vec::new(), Vec::new());
    let mut spool = None;
    let (mut index, mut line_start) = (0, true);
    loop {
        piece.clear();
        let n = (&mut reader)
            .take(MAX_PIECE as u64)
            .read_until(b'\n', &mut piece)
            .await
            .map_err(ImportError::file(file))?;
        if n == 0 {
            splitter.finish(&mut steps);
        } else {
            splitter.piece(&piece, line_start, &mut steps);
            line_start = piece.ends_with(b"\n");
        }
        for step in steps.drain(..) {
            match step {
                Step::Begin => spool = Some(Ok(sink.spooler().await?)),
                Step::Data(bytes) => {
                    if let Some(Ok(spooler)) = &mut spool
                        && let Err(e) = spooler.push(&bytes).await
                    {
                        spool = Some(Err(e));
                    }
                }
                Step::Discard => spool = None,
                Step::End { uidl, received_ms } => {
                    index += 1;
                    tally.expect(1);
                    let what = format!("{mailbox} {} message {index}", file.display());
                    let put = match spool.take() {
                        _ if sink.known(mailbox, &uidl).await => Ok(super::Put::AlreadyImported),
                        Some(spooled) => sink.finish(mailbox, &uidl, received_ms, spooled).await,
                        None => Err(ImportError::NoResult),
                    };
                    tally.count(&what, put);
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &[u8]) -> Vec<Message> {
        split_all(text)
    }

    #[test]
    fn messages_separators_escapes_and_uidls() {
        let mbox = b"From a@example.org Wed Dec  2 18:00:00 2026\nSubject: one\nX-UIDL: old-uidl-1\n\n>From the start\n>>From deeper\n\nFrom b@example.org Wed Dec  2 18:00:00 2026\nSubject: two\n\nbody\n\nFrom c@example.org Thu Jan  1 00:00:00 1970\nSubject: two\n\nbody\n";
        let messages = split(mbox);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].body, b"Subject: one\nX-UIDL: old-uidl-1\n\nFrom the start\n>From deeper\n");
        assert_eq!(messages[0].uidl, "old-uidl-1");
        assert_eq!(messages[0].received_ms, 1_796_234_400_000);
        assert_eq!(messages[1].body, b"Subject: two\n\nbody\n");
        assert!(messages[1].uidl.starts_with("mbox-") && messages[1].uidl.len() == 37);
        assert_eq!(messages[2].uidl, format!("{}-2", messages[1].uidl), "identical copies get their own UIDLs");
        assert!(messages[1].received_ms < messages[2].received_ms, "the file's order is kept");
        // The same file gives the same UIDLs on every run.
        assert_eq!(split(mbox), messages);
        // A message whose X-UIDL names a UIDL already given gets its own.
        let tricky = format!(
            "From x\nSubject: two\n\nbody\n\nFrom y\nSubject: two\n\nbody\n\nFrom z\nX-UIDL: {}-2\n\nz\n",
            messages[1].uidl
        );
        let uidls: Vec<String> = split(tricky.as_bytes()).into_iter().map(|m| m.uidl).collect();
        assert_eq!(uidls.len(), 3);
        assert!(uidls[0] != uidls[1] && uidls[1] != uidls[2] && uidls[0] != uidls[2], "{uidls:?}");
    }
}
