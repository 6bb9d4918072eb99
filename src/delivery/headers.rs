//! A minimal RFC 5322 sanity check, fed chunk by chunk: the message must start with a header
//! field (`Name: value`), and its header section must hold no NUL bytes.

/// How far into the header section the check looks.
const LOOK: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct HeaderCheck {
    first_line: Vec<u8>,
    first_line_done: bool,
    seen: usize,
    at_line_start: bool,
    header_done: bool,
    error: Option<&'static str>,
}

impl HeaderCheck {
    pub fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.header_done || self.error.is_some() || self.seen >= LOOK {
                return;
            }
            self.seen += 1;
            if !self.first_line_done {
                if b == b'\n' {
                    self.first_line_done = true;
                    self.check_first_line();
                } else if self.first_line.len() < 1000 {
                    self.first_line.push(b);
                }
            }
            match b {
                0 => self.error = Some("NUL byte in the header section"),
                b'\n' if self.at_line_start => self.header_done = true,
                b'\n' => self.at_line_start = true,
                b'\r' => {}
                _ => self.at_line_start = false,
            }
        }
    }

    /// The verdict once the whole message has been pushed.
    pub fn finish(mut self) -> Result<(), &'static str> {
        if !self.first_line_done {
            self.first_line_done = true;
            self.check_first_line();
        }
        self.error.map_or(Ok(()), Err)
    }

    fn check_first_line(&mut self) {
        let line = self.first_line.strip_suffix(b"\r").unwrap_or(&self.first_line);
        let name_len = line.iter().position(|&b| b == b':').unwrap_or(0);
        let name_ok = name_len > 0 && line[..name_len].iter().all(|&b| (33..=126).contains(&b));
        if !name_ok {
            self.error = Some("the message does not start with a header field (Name: value)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(msg: &[u8], chunk: usize) -> Result<(), &'static str> {
        let mut c = HeaderCheck::default();
        for piece in msg.chunks(chunk) {
            c.push(piece);
        }
        c.finish()
    }

    #[test]
    fn accepts_messages_and_rejects_garbage() {
        for chunk in [1, 2, 3, 7, 64] {
            assert!(check(b"Subject: x\r\nFrom: a@b\r\n\r\nbody\0with nul is fine\r\n", chunk).is_ok());
            assert!(check(b"X-Only: header", chunk).is_ok());
            assert!(check(b"just some text\r\n", chunk).is_err());
            assert!(check(b"\r\nSubject: late\r\n", chunk).is_err());
            assert!(check(b" Subject: folded\r\n", chunk).is_err());
            assert!(check(b"Subject: a\r\nX: \0\r\n\r\n", chunk).is_err());
            assert!(check(b"\x89PNG\r\n\x1a\n", chunk).is_err());
        }
    }
}
