//! LMTP command lines (RFC 2033 over RFC 5321's grammar), parsed without IO.

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lhlo(String),
    /// `MAIL FROM:<path>`, with the SIZE it declares (RFC 1870), if any.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    StartTls,
    /// HELO and EHLO: SMTP's greetings, which an LMTP server must not take for LHLO.
    SmtpGreeting,
}

/// Why a line is not a command we carry out, with the reply code and enhanced status it earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: &'static str,
}

const fn refusal(code: u16, enhanced: &'static str, text: &'static str) -> Refusal {
    Refusal { code, enhanced, text }
}

const SYNTAX: Refusal = refusal(501, "5.5.4", "Syntax error in parameters or arguments");
const BAD_PATH: Refusal = refusal(501, "5.1.3", "Bad address syntax: expected <local@domain>");

/// Longest path, as RFC 5321 section 4.5.3.1.3 allows it (256 octets with the brackets).
const MAX_PATH: usize = 256;

/// Parses one line without its CRLF.
pub fn parse(line: &[u8]) -> Result<Command, Refusal> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(refusal(500, "5.5.2", "Syntax error: the command is not text"));
    };
    if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(refusal(500, "5.5.2", "Syntax error: control characters in the command"));
    }
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let no_args = |command| if rest.trim().is_empty() { Ok(command) } else { Err(SYNTAX) };
    match verb.to_ascii_uppercase().as_str() {
        "LHLO" => {
            let name = rest.trim();
            let valid = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic());
            if valid {
                Ok(Command::Lhlo(name.to_owned()))
            } else {
                Err(refusal(501, "5.5.4", "LHLO needs a host name"))
            }
        }
        "MAIL" => {
            let rest = strip_prefix_ci(rest, "FROM:").ok_or(SYNTAX)?;
            let (from, params) = path(rest)?;
            let mut size = None;
            for param in params.split_ascii_whitespace() {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.to_ascii_uppercase().as_str() {
                    "SIZE" => size = Some(value.parse().map_err(|_| SYNTAX)?),
                    "BODY" if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {}
                    _ => return Err(refusal(555, "5.5.4", "MAIL FROM parameter not recognised")),
                }
            }
            Ok(Command::Mail { from, size })
        }
        "RCPT" => {
            let rest = strip_prefix_ci(rest, "TO:").ok_or(SYNTAX)?;
            let (to, params) = path(rest)?;
            if to.is_empty() {
                return Err(BAD_PATH);
            }
            if !params.trim().is_empty() {
                return Err(refusal(555, "5.5.4", "RCPT TO parameters are not supported"));
            }
            Ok(Command::Rcpt(to))
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "STARTTLS" => no_args(Command::StartTls),
        "HELO" | "EHLO" => Ok(Command::SmtpGreeting),
        _ => Err(refusal(500, "5.5.1", "Command unrecognised")),
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `<path> params` (a space after the colon is tolerated, as most servers do); returns the
/// path without its brackets (and without a source route) and the rest.
fn path(text: &str) -> Result<(String, &str), Refusal> {
    let text = text.trim_start();
    let inner_end = text.find('>').ok_or(BAD_PATH)?;
    if !text.starts_with('<') || inner_end + 1 > MAX_PATH {
        return Err(BAD_PATH);
    }
    let inner = &text[1..inner_end];
    let rest = &text[inner_end + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(BAD_PATH);
    }
    // An obsolete source route (`@a,@b:user@c`) is ignored, as RFC 5321 allows.
    let mailbox = match inner.split_once(':') {
        Some((route, mailbox)) if route.starts_with('@') => mailbox,
        _ => inner,
    };
    let valid = mailbox.is_empty()
        || (mailbox.bytes().all(|b| b.is_ascii_graphic() && !b"<>\\\",;:()[]".contains(&b))
            && mailbox.rfind('@').is_some_and(|at| at > 0 && at + 1 < mailbox.len()));
    if !valid {
        return Err(BAD_PATH);
    }
    Ok((mailbox.to_owned(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse(b"LHLO mx1.example.net"), Ok(Command::Lhlo("mx1.example.net".into())));
        assert_eq!(
            parse(b"MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME"),
            Ok(Command::Mail { from: "a@b.example".into(), size: Some(1234) })
        );
        assert_eq!(parse(b"mail from: <>"), Ok(Command::Mail { from: String::new(), size: None }));
        assert_eq!(parse(b"RCPT TO:<@relay.example:Alice@Example.com>"), Ok(Command::Rcpt("Alice@Example.com".into())));
        assert_eq!(parse(b"data"), Ok(Command::Data));
        assert_eq!(parse(b"EHLO x"), Ok(Command::SmtpGreeting));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_codes() {
        let code = |line: &[u8]| parse(line).unwrap_err().code;
        assert_eq!(code(b"\xff\xfe garbage"), 500);
        assert_eq!(code(b"MAIL FROM:<a\x00@b>"), 500);
        assert_eq!(code(b"FROB"), 500);
        assert_eq!(code(b"LHLO"), 501);
        assert_eq!(code(b"MAIL FROM:a@b"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=lots"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> AUTH=<>"), 555);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<no-domain>"), 501);
        assert_eq!(code(b"RCPT TO:<a@b>x"), 501);
        assert_eq!(code(b"RCPT TO:<\"quoted\"@b>"), 501);
        assert_eq!(code(format!("RCPT TO:<{}@b>", "a".repeat(300)).as_bytes()), 501);
        assert_eq!(code(b"DATA now"), 501);
    }
}
