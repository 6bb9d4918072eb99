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
use tokio::io::{AsyncBufReadExt, BufReader};

/// One message split out of an mbox.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub uidl: String,
    pub received_ms: u64,
}

/// Assigns UIDLs and receipt times as messages come out of the file.
#[derive(Default)]
pub struct Splitter {
    current: Option<(Vec<u8>, u64)>,
    /// Every UIDL given so far.
    seen: HashSet<String>,
    last_ms: u64,
}

impl Splitter {
    /// Feeds one line (with its line ending); returns the message a separator line finished.
    pub fn line(&mut self, line: &[u8]) -> Option<Message> {
        if let Some(rest) = line.strip_prefix(b"From ") {
            let secs = asctime_secs(&String::from_utf8_lossy(rest)).unwrap_or(0);
            let finished = self.finish();
            self.current = Some((Vec::new(), secs));
            return finished;
        }
        let (body, _) = self.current.get_or_insert_with(|| (Vec::new(), 0));
        // mboxrd: one '>' comes off every `>+From ` line.
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            body.extend_from_slice(&line[1..]);
        } else {
            body.extend_from_slice(line);
        }
        None
    }

    /// The last message, at the end of the file.
    pub fn finish(&mut self) -> Option<Message> {
        let (mut body, secs) = self.current.take()?;
        // The blank line before a separator belongs to the mbox, not the message.
        if body.ends_with(b"\n\n") || body.ends_with(b"\r\n\r\n") {
            body.truncate(body.len() - if body.ends_with(b"\r\n") { 2 } else { 1 });
        }
        if body.is_empty() {
            return None;
        }
        let base = match header_uidl(&body) {
            Some(uidl) if !self.seen.contains(&uidl) => uidl,
            _ => format!("mbox-{}", hex(&md5::Md5::digest(&body))),
        };
        let mut uidl = base.clone();
        for copy in 2.. {
            if !self.seen.contains(&uidl) {
                break;
            }
            uidl = format!("{base}-{copy}");
        }
        self.seen.insert(uidl.clone());
        self.last_ms = (secs * 1000).max(self.last_ms + 1);
        Some(Message { body, uidl, received_ms: self.last_ms })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of an `X-UIDL:` field in the header section, if it is a valid UIDL.
fn header_uidl(message: &[u8]) -> Option<String> {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if line.len() > 7 && line[..7].eq_ignore_ascii_case(b"x-uidl:") {
            let value = String::from_utf8_lossy(&line[7..]).trim().to_owned();
            return crate::store::ids::is_valid_uidl(&value).then_some(value);
        }
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

/// Imports every message of the mbox at `file` into `mailbox`.
pub async fn import(sink: &Sink, mailbox: &str, file: &Path, tally: &Tally) -> Result<(), ImportError> {
    let input = tokio::fs::File::open(file).await.map_err(ImportError::file(file))?;
    let mut reader = BufReader::new(input);
    let mut splitter = Splitter::default();
    let mut line = Vec::new();
    let mut index = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await.map_err(ImportError::file(file))?;
        let message = if n == 0 { splitter.finish() } else { splitter.line(&line) };
        if let Some(message) = message {
            index += 1;
            tally.expect(1);
            let what = format!("{mailbox} {} message {index}", file.display());
            if sink.known(mailbox, &message.uidl).await {
                tally.count(&what, Ok(super::Put::AlreadyImported));
            } else {
                let put = sink.message(mailbox, &message.uidl, message.received_ms, message.body.as_slice()).await;
                tally.count(&what, put);
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
        let mut splitter = Splitter::default();
        let mut out: Vec<Message> = text.split_inclusive(|&b| b == b'\n').filter_map(|l| splitter.line(l)).collect();
        out.extend(splitter.finish());
        out
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
