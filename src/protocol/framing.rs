//! Splits the client's byte stream into command lines, with a hard cap on line length.
//!
//! The framer never allocates and never blocks: it looks at the bytes the caller has buffered and
//! says how many it consumed and what they were. "Need more bytes" is an ordinary answer.

/// What the framer found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its CRLF (a bare LF is accepted too).
    Line(&'a [u8]),
    /// A line longer than the limit. Its bytes are discarded up to and including the next LF; a
    /// line that never ends is reported again for every further `limit * 64` bytes.
    TooLong,
    /// Not enough bytes buffered to decide.
    NeedMore,
}

/// Stateful line splitter; one per connection (and a fresh one after STLS).
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Bytes of an overlong line thrown away so far, while we wait for its end.
    discarding: Option<u64>,
    /// Bytes at the front of the caller's buffer already searched for a line end (the caller
    /// hands the same unconsumed bytes back, with more behind them).
    searched: usize,
}

impl LineFramer {
    /// A framer accepting lines of at most `max_line` octets including the line terminator.
    pub fn new(max_line: usize) -> Self {
        Self { max_line: max_line.max(8), discarding: None, searched: 0 }
    }

    /// Forgets how far the caller's bytes were searched: its buffer no longer starts where it
    /// did (raw data was taken from it, or it was emptied).
    pub fn restart_search(&mut self) {
        self.searched = 0;
    }

    /// Examines `buf` and returns how many bytes to drop from its front, and what they were. A
    /// line is always at the front of `buf`. Callers usually want [`super::lines::LineBuffer`].
    pub fn next_frame<'a>(&mut self, buf: &'a [u8]) -> (usize, Frame<'a>) {
        let from = self.searched.min(buf.len());
        let newline = memchr::memchr(b'\n', &buf[from..]).map(|i| from + i);
        let (used, frame) = self.frame(buf, newline);
        self.searched = if used == 0 { buf.len() } else { 0 };
        (used, frame)
    }

    fn frame<'a>(&mut self, buf: &'a [u8], newline: Option<usize>) -> (usize, Frame<'a>) {
        if let Some(discarded) = self.discarding {
            let consumed = newline.map_or(buf.len(), |i| i + 1);
            if newline.is_some() {
                self.discarding = None;
                return (consumed, Frame::NeedMore);
            }
            let limit = (self.max_line as u64) * 64;
            let total = discarded + consumed as u64;
            self.discarding = Some(total);
            let crossed = total / limit > discarded / limit;
            return (consumed, if crossed { Frame::TooLong } else { Frame::NeedMore });
        }
        match newline {
            Some(i) if i + 1 > self.max_line => (i + 1, Frame::TooLong),
            Some(i) => {
                let line = &buf[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (i + 1, Frame::Line(line))
            }
            None if buf.len() > self.max_line => {
                self.discarding = Some(buf.len() as u64);
                (buf.len(), Frame::TooLong)
            }
            None => (0, Frame::NeedMore),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::lines::LineBuffer;

    /// What a driver sees when it feeds `input` in pieces of `chunk` bytes.
    fn frames(input: &[u8], chunk: usize, max: usize) -> Vec<Option<Vec<u8>>> {
        let mut buffer = LineBuffer::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buffer.append(piece);
            loop {
                match buffer.next_line() {
                    Frame::Line(line) => out.push(Some(line.to_vec())),
                    Frame::TooLong => out.push(None),
                    Frame::NeedMore => break,
                }
            }
        }
        out
    }

    #[test]
    fn chunking_never_changes_the_result() {
        let long = vec![b'x'; 100];
        let mut script = b"USER a\r\nPASS b c\r\nSTAT\nLIST 1\r\n".to_vec();
        script.extend_from_slice(&long);
        script.extend_from_slice(b"\r\nNOOP\r\n\r\nQUIT\r\n");
        let expected = frames(&script, script.len(), 40);
        assert_eq!(expected.len(), 8, "{expected:?}");
        assert_eq!(expected[4], None);
        assert_eq!(expected[5], Some(b"NOOP".to_vec()));
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(frames(&script, chunk, 40), expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn limit_counts_the_terminator() {
        assert_eq!(frames(b"abcdefg\r\n", 1, 9), vec![Some(b"abcdefg".to_vec())]);
        assert_eq!(frames(b"abcdefgh\r\n", 1, 9), vec![None]);
        assert_eq!(frames(b"abcdefgh\r\n", 64, 9), vec![None]);
    }

    #[test]
    fn endless_line_is_reported_again_but_memory_stays_bounded() {
        let garbage = vec![0xffu8; 10 * 64 * 16];
        let got = frames(&garbage, 7, 10);
        assert!(got.len() >= 10 && got.iter().all(Option::is_none), "{}", got.len());
    }
}
