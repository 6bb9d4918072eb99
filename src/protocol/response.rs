//! Encodes single-line and multi-line POP3 responses, with the RFC 2449 / RFC 3206 response codes.

use std::fmt;

/// Extended response codes (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The maildrop is locked by another session.
    InUse,
    /// Credentials were wrong, or authentication was refused by policy.
    Auth,
    /// A server-side problem that may go away by itself: try again later.
    SysTemp,
    /// A server-side problem that will not go away by itself.
    SysPerm,
    /// Logged in again too soon (RFC 2449 LOGIN-DELAY).
    LoginDelay,
}

impl Code {
    /// The code as it appears between the brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InUse => "IN-USE",
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
            Code::LoginDelay => "LOGIN-DELAY",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `+OK text\r\n`
pub fn ok(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 6);
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(sanitize(text).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `-ERR [CODE] text\r\n`
pub fn err(code: Option<Code>, text: &str) -> Vec<u8> {
    let text = sanitize(text);
    match code {
        Some(code) => format!("-ERR [{code}] {text}\r\n").into_bytes(),
        None => format!("-ERR {text}\r\n").into_bytes(),
    }
}

/// A SASL continuation (`+ base64\r\n`, RFC 5034).
pub fn continuation(challenge_b64: &str) -> Vec<u8> {
    format!("+ {challenge_b64}\r\n").into_bytes()
}

/// `+OK text\r\n` followed by the lines, each dot-stuffed, and the terminating `.\r\n`.
pub fn multiline<I, S>(text: &str, lines: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = ok(text);
    for line in lines {
        push_line(&mut out, line.as_ref());
    }
    out.extend_from_slice(END);
    out
}

/// The line that ends a multi-line response.
pub const END: &[u8] = b".\r\n";

/// Appends one line of a multi-line response, dot-stuffed, with its CRLF.
pub fn push_line(out: &mut Vec<u8>, line: &str) {
    let line = sanitize(line);
    if line.starts_with('.') {
        out.push(b'.');
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A response line must never contain a line break, whatever text it was built from.
fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) { text.replace(['\r', '\n'], " ").into() } else { text.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_codes_and_multiline() {
        assert_eq!(err(Some(Code::InUse), "locked"), b"-ERR [IN-USE] locked\r\n");
        assert_eq!(err(None, "no\r\nway"), b"-ERR no  way\r\n");
        assert_eq!(multiline("list", ["1 10", ".x"]), b"+OK list\r\n1 10\r\n..x\r\n.\r\n");
        assert_eq!(ok(""), b"+OK\r\n");
    }
}
