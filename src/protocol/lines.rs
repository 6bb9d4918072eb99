//! The input buffer of a line-based protocol connection: bytes read from the peer go in at the
//! back, command lines (through a [`LineFramer`]) or raw bytes (a message's data) come out at
//! the front. Taking from the front is O(1); the unread rest moves to the front only before
//! more is read, and it is short (at most a line, or what the peer pipelined).
//!
//! No IO: the driver appends what it reads to [`LineBuffer::tail`] (an async reader's
//! `read_buf` writes into its spare capacity, untouched until then, so an idle connection's
//! buffer costs no resident memory), or copies bytes in with [`LineBuffer::append`].

use super::framing::{Frame, LineFramer};

/// Buffered input and the framer that splits it into lines.
#[derive(Debug)]
pub struct LineBuffer {
    /// Input; the unread part starts at `start`.
    buf: Vec<u8>,
    start: usize,
    framer: LineFramer,
}

impl LineBuffer {
    /// A buffer whose lines may be `max_line` octets long, terminator included.
    pub fn new(max_line: usize) -> Self {
        Self { buf: Vec::new(), start: 0, framer: LineFramer::new(max_line) }
    }

    /// The next line, an overlong line's report, or `NeedMore` once every buffered byte is
    /// taken or waits for its line's end; what it returns is consumed.
    pub fn next_line(&mut self) -> Frame<'_> {
        loop {
            let base = self.start;
            let (used, frame) = self.framer.next_frame(&self.buf[base..]);
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
        &self.buf[self.start..]
    }

    /// Marks `n` unread bytes as read (raw data taken with [`LineBuffer::unread`]).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        self.framer.restart_search();
    }

    /// Drops everything unread (input pipelined behind STARTTLS, for example).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.framer.restart_search();
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The buffer to append at most `want` more bytes to, after moving the unread ones to the
    /// front and reserving room for them. Only append: what is already there is the input.
    pub fn tail(&mut self, want: usize) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Copies `bytes` in at the back.
    pub fn append(&mut self, bytes: &[u8]) {
        self.tail(bytes.len()).extend_from_slice(bytes);
    }

    /// Gives back memory a burst of input grew, once everything is read (an idle connection
    /// keeps at most `keep` bytes of capacity).
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.is_empty() && self.buf.capacity() > keep {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_raw_bytes_come_out_in_order_whatever_the_reads() {
        let script = b"LHLO x\r\nDATA\r\nraw bytes\r\n.\r\nQUIT\r\n";
        for chunk in [1, 2, 3, 7, 64] {
            let mut buffer = LineBuffer::new(64);
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut raw = false;
            for piece in script.chunks(chunk) {
                buffer.append(piece);
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
    fn room_is_reserved_not_filled_and_idle_buffers_shrink() {
        let mut buffer = LineBuffer::new(64);
        buffer.append(b"NO");
        let tail = buffer.tail(4096);
        assert!(tail.capacity() >= 4096 + 2 && tail.len() == 2, "room is reserved, not written");
        tail.extend_from_slice(b"OP\nQU");
        assert_eq!(buffer.next_line(), Frame::Line(b"NOOP"));
        assert_eq!(buffer.unread(), b"QU");
        // The unread rest moves to the front only before the next read.
        assert_eq!(buffer.tail(8).as_slice(), b"QU");
        buffer.consume(2);
        assert!(buffer.is_empty());
        buffer.shrink_idle(1024);
        assert_eq!(buffer.buf.capacity(), 0);
        buffer.append(b"abc");
        buffer.clear();
        assert!(buffer.is_empty() && buffer.unread().is_empty());
    }
}
