//! The DATA section of an LMTP transaction: dot-unstuffing and the end marker, chunk by chunk.
//!
//! Only `CR LF . CR LF` ends the data. A bare LF is data (the spool turns it into CR LF
//! later), so `LF . LF` or `LF . CR LF` never ends a message: a sender cannot smuggle a second
//! transaction past an MTA that reads the end marker differently (the "SMTP smuggling"
//! attacks). A dot that starts a line is removed after either line ending, as senders that
//! stuff line by line (Python's smtplib among them) expect.

/// Where the reader is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of the data, or of a line after CR LF.
    LineStart,
    /// At the start of a line after a bare LF: a dot here is stuffing, never the end.
    LfStart,
    /// A dot at the start of a line after CR LF.
    Dot,
    /// `.` CR at the start of a line after CR LF.
    DotCr,
    /// Inside a line.
    Mid,
    /// CR inside a line.
    Cr,
}

/// Reads the data after `354` until `CR LF . CR LF`.
#[derive(Debug)]
pub struct Unstuffer {
    state: State,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Self { state: State::LineStart }
    }
}

impl Unstuffer {
    /// Appends the message bytes of `input` to `out`, without the dots added by stuffing.
    /// Returns `Some(n)` when the end marker finished at `input[n - 1]` (bytes from `n` on are
    /// the client's next commands), `None` when more data is needed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                // The common case: copy up to the next line-ending byte at once.
                match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                    Some(at) => {
                        out.extend_from_slice(&input[i..i + at]);
                        i += at;
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        return None;
                    }
                }
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::Dot, b'\r') => State::DotCr,
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return Some(i);
                }
                // `.` CR then something else: the dot was stuffing, the CR is data.
                (State::DotCr, b) => {
                    out.push(b'\r');
                    Self::after_cr(b, out)
                }
                (State::Cr, b) => Self::after_cr(b, out),
                // A dot that starts a line after a bare LF is stuffing: removed.
                (State::LfStart, b'.') => State::Mid,
                // The first byte after a removed dot, or of a line, or inside one.
                (State::LineStart | State::LfStart | State::Dot | State::Mid, b) => {
                    out.push(b);
                    match b {
                        b'\r' => State::Cr,
                        b'\n' => State::LfStart,
                        _ => State::Mid,
                    }
                }
            };
        }
        None
    }

    fn after_cr(b: u8, out: &mut Vec<u8>) -> State {
        out.push(b);
        match b {
            b'\n' => State::LineStart,
            b'\r' => State::Cr,
            _ => State::Mid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `size`; returns the message and where the end marker ended.
    fn read(input: &[u8], size: usize) -> (Vec<u8>, Option<usize>) {
        let mut reader = Unstuffer::default();
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in input.chunks(size) {
            if let Some(n) = reader.feed(chunk, &mut out) {
                return (out, Some(offset + n));
            }
            offset += chunk.len();
        }
        (out, None)
    }

    #[test]
    fn dots_are_unstuffed_and_the_end_is_found_in_any_chunking() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\rodd\r\nmid.dle\r\n...\r\n.\r\nQUIT\r\n";
        for size in [1, 2, 3, 5, 64] {
            let (out, end) = read(input, size);
            assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n\rodd\r\nmid.dle\r\n..\r\n", "chunks of {size}");
            assert_eq!(&input[end.unwrap()..], b"QUIT\r\n");
        }
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        let (out, end) = read(b"a\n.\nb\n.\r\nc\r\n.\r\n", 4);
        assert_eq!(out, b"a\n\nb\n\r\nc\r\n");
        assert_eq!(end, Some(15));
        assert_eq!(read(b".\r\n", 1), (Vec::new(), Some(3)));
        // Stuffed after bare LFs, as smtplib does.
        assert_eq!(read(b"x\n..y\n.z\r\n.\r\n", 2).0, b"x\n.y\nz\r\n");
        assert_eq!(read(b"no end\r\n", 3).1, None);
    }
}
