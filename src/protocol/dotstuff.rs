//! Streaming encoders for message bodies: dot-stuffing (RFC 1939 section 3) and the `TOP` cut.
//!
//! Both work chunk by chunk with a few bytes of state, so a message of any size goes to the
//! socket in bounded memory, and the output never depends on where the chunks were split.

/// Byte-stuffs a message body and terminates the multi-line response.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    last_two: [u8; 2],
    wrote_any: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        Self { at_line_start: true, last_two: [0, 0], wrote_any: false }
    }

    /// Appends `chunk`, stuffed, to `out`: whole lines are copied at once between the line
    /// ends `memchr` finds, and only the byte after each line end is looked at.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = chunk.last() else { return };
        out.reserve(chunk.len() + 8);
        if self.at_line_start && chunk[0] == b'.' {
            out.push(b'.');
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            out.extend_from_slice(&chunk[start..=end]);
            start = end + 1;
            if chunk.get(start) == Some(&b'.') {
                out.push(b'.');
            }
        }
        out.extend_from_slice(&chunk[start..]);
        self.at_line_start = last == b'\n';
        self.last_two = match chunk {
            [.., a, b] => [*a, *b],
            _ => [self.last_two[1], last],
        };
        self.wrote_any = true;
    }

    /// Appends the terminating `.CRLF`, preceded by a CRLF if the body did not end with one.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if self.wrote_any && self.last_two != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Cuts a message after its header, the blank line, and `body_lines` lines of body (`TOP n k`).
#[derive(Debug)]
pub struct TopCut {
    body_lines: u64,
    in_header: bool,
    line_empty: bool,
    done: bool,
}

impl TopCut {
    pub fn new(body_lines: u64) -> Self {
        Self { body_lines, in_header: true, line_empty: true, done: false }
    }

    /// Whether everything wanted has been passed through; the caller can stop reading.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The prefix of `chunk` that belongs in the output.
    pub fn take<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        if self.done {
            return &[];
        }
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\n' => {
                    if self.in_header {
                        if self.line_empty {
                            self.in_header = false;
                            self.done = self.body_lines == 0;
                        }
                    } else {
                        self.body_lines -= 1;
                        self.done = self.body_lines == 0;
                    }
                    self.line_empty = true;
                    if self.done {
                        return &chunk[..=i];
                    }
                }
                b'\r' => {}
                _ => self.line_empty = false,
            }
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            s.encode(piece, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn top(input: &[u8], lines: u64, chunk: usize) -> Vec<u8> {
        let mut cut = TopCut::new(lines);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            out.extend_from_slice(cut.take(piece));
            if cut.is_done() {
                break;
            }
        }
        out
    }

    #[test]
    fn stuffs_dots_at_line_start_only() {
        let msg = b".hidden\r\nA: b\r\n\r\n.\r\nmid.dle\r\n..two\r\n";
        let want = b"..hidden\r\nA: b\r\n\r\n..\r\nmid.dle\r\n...two\r\n.\r\n".to_vec();
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(stuffed(msg, chunk), want, "chunk {chunk}");
        }
    }

    /// The byte-at-a-time definition the fast encoder must match.
    fn reference(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in msg {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !msg.is_empty() && !msg.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn matches_the_byte_at_a_time_definition_for_any_split() {
        // A small deterministic generator over the bytes that matter: dots, CR, LF, others.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let msg: Vec<u8> = (0..len).map(|_| b".\r\nab"[(next() % 5) as usize]).collect();
            let chunk = 1 + (next() % 8) as usize;
            assert_eq!(
                stuffed(&msg, chunk),
                reference(&msg),
                "{:?} in chunks of {chunk}",
                String::from_utf8_lossy(&msg)
            );
        }
    }

    #[test]
    fn terminates_unterminated_and_empty_bodies() {
        assert_eq!(stuffed(b"a\r\nb", 64), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuffed(b"", 64), b".\r\n");
    }

    #[test]
    fn top_cuts_after_header_and_k_lines() {
        let msg = b"Subject: x\r\nFrom: y\r\n\r\nline1\r\nline2\r\nline3\r\n";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(top(msg, 0, chunk), b"Subject: x\r\nFrom: y\r\n\r\n", "chunk {chunk}");
            assert_eq!(top(msg, 2, chunk), b"Subject: x\r\nFrom: y\r\n\r\nline1\r\nline2\r\n");
            assert_eq!(top(msg, 99, chunk), msg);
        }
        assert_eq!(top(b"Subject: only headers\r\n", 0, 64), b"Subject: only headers\r\n");
    }
}
