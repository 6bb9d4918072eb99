//! Parses one command line into a [`Command`]: keyword matching is case-insensitive and argument
//! syntax is checked here, so the state machine only deals with well-formed requests.

use std::fmt;

/// A message number as the client wrote it. Zero and numbers beyond the maildrop are
/// syntactically fine; the state machine rejects them as "no such message".
pub type MsgNum = u64;

/// One POP3 request (RFC 1939, RFC 2449, RFC 2595, RFC 5034, RFC 6856).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    /// The whole rest of the line: RFC 1939 allows spaces inside a password.
    Pass(String),
    Apop,
    Auth {
        mechanism: Option<String>,
        initial_response: Option<String>,
    },
    Capa,
    Stls,
    Utf8,
    Stat,
    List(Option<MsgNum>),
    Retr(MsgNum),
    Dele(MsgNum),
    Noop,
    Rset,
    Top(MsgNum, u64),
    Uidl(Option<MsgNum>),
    Quit,
}

impl Command {
    /// The keyword, for logs and traces (never the arguments: they may hold secrets).
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Utf8 => "UTF8",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Quit => "QUIT",
        }
    }
}

/// Why a line is not a valid command; the text is sent to the client after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Unknown,
    Syntax(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Unknown => f.write_str("Unknown command"),
            ParseError::Syntax(msg) => f.write_str(msg),
        }
    }
}

/// Parses a line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    // Commands are ASCII; a line that is not UTF-8 can only be garbage or a password, and
    // passwords are handled lossily rather than by rejecting the login outright.
    let line = String::from_utf8_lossy(line);
    let (keyword, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (&line[..], ""),
    };
    if keyword.len() > 8 || !keyword.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::Unknown);
    }
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let keyword = keyword.to_ascii_uppercase();
    let cmd = match keyword.as_str() {
        "USER" => Command::User(one_arg(&args, "USER needs exactly one argument: a user name")?.to_owned()),
        "PASS" => {
            if rest.is_empty() {
                return Err(ParseError::Syntax("PASS needs a password"));
            }
            Command::Pass(rest.to_owned())
        }
        "APOP" => Command::Apop,
        "AUTH" => match args.as_slice() {
            [] => Command::Auth { mechanism: None, initial_response: None },
            [mech] => Command::Auth { mechanism: Some(mech.to_ascii_uppercase()), initial_response: None },
            [mech, ir] => {
                Command::Auth { mechanism: Some(mech.to_ascii_uppercase()), initial_response: Some((*ir).to_owned()) }
            }
            _ => return Err(ParseError::Syntax("AUTH takes a mechanism and an optional initial response")),
        },
        "CAPA" => no_args(&args, Command::Capa)?,
        "STLS" => no_args(&args, Command::Stls)?,
        "UTF8" => no_args(&args, Command::Utf8)?,
        "STAT" => no_args(&args, Command::Stat)?,
        "NOOP" => no_args(&args, Command::Noop)?,
        "RSET" => no_args(&args, Command::Rset)?,
        "QUIT" => no_args(&args, Command::Quit)?,
        "LIST" => Command::List(optional_msg(&args)?),
        "UIDL" => Command::Uidl(optional_msg(&args)?),
        "RETR" => Command::Retr(msg(one_arg(&args, "RETR needs a message number")?)?),
        "DELE" => Command::Dele(msg(one_arg(&args, "DELE needs a message number")?)?),
        "TOP" => match args.as_slice() {
            [n, lines] => Command::Top(msg(n)?, number(lines).ok_or(ParseError::Syntax("Invalid number of lines"))?),
            _ => return Err(ParseError::Syntax("TOP needs a message number and a number of lines")),
        },
        _ => return Err(ParseError::Unknown),
    };
    Ok(cmd)
}

fn one_arg<'a>(args: &[&'a str], err: &'static str) -> Result<&'a str, ParseError> {
    match args {
        [one] => Ok(one),
        _ => Err(ParseError::Syntax(err)),
    }
}

fn no_args(args: &[&str], cmd: Command) -> Result<Command, ParseError> {
    if args.is_empty() { Ok(cmd) } else { Err(ParseError::Syntax("This command takes no arguments")) }
}

fn optional_msg(args: &[&str]) -> Result<Option<MsgNum>, ParseError> {
    match args {
        [] => Ok(None),
        [n] => msg(n).map(Some),
        _ => Err(ParseError::Syntax("Too many arguments")),
    }
}

fn msg(arg: &str) -> Result<MsgNum, ParseError> {
    number(arg).ok_or(ParseError::Syntax("Invalid message number"))
}

/// Plain decimal digits only: no sign, no spaces, no hex. Values too large to be real saturate,
/// so they are reported as "no such message" rather than as a syntax error.
fn number(arg: &str) -> Option<u64> {
    if arg.is_empty() || arg.len() > 40 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"top 1 0"), Ok(Command::Top(1, 0)));
        assert_eq!(parse(b"uidl"), Ok(Command::Uidl(None)));
    }

    #[test]
    fn message_numbers_are_strict_decimal() {
        for bad in ["RETR", "RETR -1", "RETR +1", "RETR x", "RETR 1x", "RETR 0x1", "RETR 1 2", "LIST 1 2"] {
            assert!(matches!(parse(bad.as_bytes()), Err(ParseError::Syntax(_))), "{bad}");
        }
        assert_eq!(parse(b"RETR 0"), Ok(Command::Retr(0)));
        assert_eq!(parse(b"RETR 99999999999999999999999"), Ok(Command::Retr(u64::MAX)));
        assert!(matches!(parse(b"TOP 1"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"TOP 1 -1"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn pass_keeps_spaces() {
        assert_eq!(parse(b"PASS  two words "), Ok(Command::Pass(" two words ".into())));
        assert!(parse(b"PASS").is_err());
    }

    #[test]
    fn garbage_is_unknown() {
        for bad in [&b""[..], b"\xff\xfe", b"HELO there", b"LISTXXXXXX", b"\0\0\0"] {
            assert_eq!(parse(bad), Err(ParseError::Unknown), "{bad:?}");
        }
    }

    #[test]
    fn auth_forms() {
        assert_eq!(parse(b"AUTH"), Ok(Command::Auth { mechanism: None, initial_response: None }));
        assert_eq!(
            parse(b"auth plain AGEAYg=="),
            Ok(Command::Auth { mechanism: Some("PLAIN".into()), initial_response: Some("AGEAYg==".into()) })
        );
    }
}
