//! The input buffer of a line-based protocol connection: bytes read from the peer go in at the
//! back, command lines (through a [`LineFramer`]) or raw bytes (a message's data) come out at
//! the front. Taking from the front is O(1); the unread rest moves to the front only before
//! more is read, and it is short (at most a line, or what the peer pipelined).
//!
//! No IO: the driver reads into [`LineBuffer::space`] and reports with [`LineBuffer::filled`],
//! blocking or async alike.

use super::framing::{Frame, LineFramer};

/// Buffered input and the framer that splits it into lines.
#[derive(Debug)]
pub struct LineBuffer {
    /// Input in `start..end`; bytes after `end` are room handed out for a read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    framer: LineFramer,
}

impl LineBuffer {
    /// A buffer whose lines may be `max_line` octets long, terminator included.
    pub fn new(max_line: usize) -> Self {
        Self { buf: Vec::new(), start: 0, end: 0, framer: LineFramer::new(max_line) }
    }

    /// The next line, an overlong line's report, or `NeedMore` once every buffered byte is
    /// taken or waits for its line's end; what it returns is consumed.
    pub fn next_line(&mut self) -> Frame<'_> {
        loop {
            let base = self.start;
            let (used, frame) = self.framer.next_frame(&self.buf[base..self.end]);
            // A line always starts at the front of what the framer was given.
            let line = match frame {
                Frame::Line(line) => Some(line.len()),
                Frame::TooLong => None,
                Frame::NeedMore => {
                    self.start += used;
                    // The end of an overlong line was skipped: more lines may follow it.
                    if used > 0 && !self.is_empty() {
                        continue;
                    }
                    return Frame::NeedMore;
                }
            };
            self.start += used;
            // The line stays in place (consumed) until the next read.
            return match line {
                Some(len) => Frame::Line(&self.buf[base..base + len]),
                None => Frame::TooLong,
            };
        }
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` unread bytes as read (raw data taken with [`LineBuffer::unread`]).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        self.framer.restart_search();
    }

    /// Drops everything unread (input pipelined behind STARTTLS, for example).
    pub fn clear(&mut self) {
        self.buf.clear();
        (self.start, self.end) = (0, 0);
        self.framer.restart_search();
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Room for `want` more bytes at the back, after moving the unread ones to the front. Read
    /// into it, then call [`LineBuffer::filled`] with how many bytes came. A read abandoned
    /// half-way (a cancelled future) leaves the buffer as it was.
    pub fn space(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        self.buf.resize(self.end + want, 0);
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into the last [`LineBuffer::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Gives back memory a burst of input grew, once everything is read (an idle connection
    /// keeps at most `keep` bytes of capacity).
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.is_empty() && self.buf.capacity() > keep {
            self.buf = Vec::new();
            (self.start, self.end) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(buffer: &mut LineBuffer, bytes: &[u8]) {
        let space = buffer.space(bytes.len() + 3);
        space[..bytes.len()].copy_from_slice(bytes);
        buffer.filled(bytes.len());
    }

    #[test]
    fn lines_and_raw_bytes_come_out_in_order_whatever_the_reads() {
        let script = b"LHLO x\r\nDATA\r\nraw bytes\r\n.\r\nQUIT\r\n";
        for chunk in [1, 2, 3, 7, 64] {
            let mut buffer = LineBuffer::new(64);
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut raw = false;
            for piece in script.chunks(chunk) {
                feed(&mut buffer, piece);
                loop {
                    if raw {
                        // Raw mode up to and including the line "." (as a DATA reader would).
                        let unread = buffer.unread();
                        match unread.windows(5).position(|w| w == b"\r\n.\r\n") {
                            Some(at) => {
                                seen.push(unread[..at].to_vec());
                                buffer.consume(at + 5);
                                raw = false;
                            }
                            None => break,
                        }
                        continue;
                    }
                    match buffer.next_line() {
                        Frame::Line(line) => {
                            raw = line == b"DATA";
                            seen.push(line.to_vec());
                        }
                        Frame::TooLong => seen.push(b"(too long)".to_vec()),
                        Frame::NeedMore => break,
                    }
                }
            }
            let expected: Vec<Vec<u8>> =
                [&b"LHLO x"[..], b"DATA", b"raw bytes", b"QUIT"].iter().map(|l| l.to_vec()).collect();
            assert_eq!(seen, expected, "chunk size {chunk}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn a_short_read_keeps_only_what_came_and_idle_buffers_shrink() {
        let mut buffer = LineBuffer::new(64);
        let space = buffer.space(4096);
        space[..5].copy_from_slice(b"NOOP\n");
        buffer.filled(5);
        assert_eq!(buffer.unread(), b"NOOP\n");
        assert_eq!(buffer.next_line(), Frame::Line(b"NOOP"));
        assert!(buffer.is_empty());
        buffer.shrink_idle(1024);
        assert_eq!(buffer.buf.capacity(), 0);
        let space = buffer.space(8);
        space[..3].copy_from_slice(b"abc");
        buffer.filled(3);
        buffer.clear();
        assert!(buffer.is_empty() && buffer.unread().is_empty());
    }
}
