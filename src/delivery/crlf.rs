//! Line-ending normalisation for stored messages: pure, chunk by chunk.

/// Rewrites CR LF, lone LF and lone CR as CR LF, chunk by chunk.
#[derive(Debug, Default)]
pub struct CrlfNormalizer {
    pending_cr: bool,
    ends_with_newline: bool,
    seen_any: bool,
}

impl CrlfNormalizer {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 2);
        for &b in input {
            self.seen_any = true;
            match b {
                b'\r' => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.pending_cr = true;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                    self.ends_with_newline = true;
                }
                _ => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                        self.pending_cr = false;
                    }
                    out.push(b);
                    self.ends_with_newline = false;
                }
            }
        }
    }

    /// Flushes a trailing CR and makes sure the message ends with CRLF, so the size in LIST is
    /// exactly what RETR sends.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || (self.seen_any && !self.ends_with_newline) {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.ends_with_newline = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut n = CrlfNormalizer::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            n.push(piece, &mut out);
        }
        n.finish(&mut out);
        out
    }

    #[test]
    fn every_line_ending_becomes_crlf() {
        let input = b"a\nb\r\nc\rd\r\r\ne\n\nf";
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(normalize(input, chunk), b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\nf\r\n", "chunk {chunk}");
        }
        assert_eq!(normalize(b"x\r", 1), b"x\r\n");
        assert_eq!(normalize(b"", 1), b"");
    }
}
