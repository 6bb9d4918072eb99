//! Scripted sessions against the pure machine, with a stand-in driver: no sockets, no clock.

use super::*;
use crate::protocol::dotstuff::{DotStuffer, TopCut};
use crate::protocol::framing::Frame;
use crate::protocol::lines::LineBuffer;
use crate::protocol::sasl::Presented;

fn settings() -> Settings {
    Settings {
        tls_active: false,
        stls_available: true,
        plaintext_allowed: true,
        scram: false,
        channel_binding: None,
        bearer: false,
        oauth_scope: String::new(),
        max_auth_failures: 3,
        max_line_violations: 3,
        max_bad_commands: 20,
        implementation: "cloudpop-test".into(),
        expire: "NEVER".into(),
        login_delay_secs: 0,
    }
}

const SCRAM_SALT: &[u8] = b"sixteen byte slt";

const MESSAGES: [(&str, &[u8]); 2] =
    [("uid-a", b"Subject: a\r\n\r\n.dot line\r\nbody a\r\n"), ("uid-b", b"Subject: b\r\n\r\nbody b\r\n")];

/// Plays the driver's part: answers logins for alice/secret, streams the fixed messages.
fn drive(machine: &mut Machine, mut step: Step, out: &mut Vec<u8>, log: &mut Vec<String>) -> bool {
    loop {
        step = match step {
            Step::Reply(r) => {
                out.extend(r);
                return true;
            }
            Step::Listing { header, kind } => {
                out.extend(header);
                // A tiny budget, so every listing is written in several pieces.
                let mut cursor = 0;
                let mut pieces = 0;
                while !machine.write_listing(kind, &mut cursor, out, 1) {
                    pieces += 1;
                    assert!(pieces < 100, "the listing never ends");
                }
                return true;
            }
            Step::ScramLookup { user } => {
                let password = if user == "alice" { "secret" } else { "decoy" };
                let credentials = scram::StoredCredentials::derive(password, SCRAM_SALT, 4096);
                machine.scram_lookup_finished(Some((credentials, "srvnonce".into())))
            }
            Step::Login(c) => {
                let good = match (c.user.as_str(), &c.presented) {
                    ("alice", Presented::Password(p)) => p == "secret",
                    ("alice", Presented::Scram { verified }) => *verified,
                    ("" | "alice", Presented::Token(t)) => t == "good-token",
                    _ => false,
                };
                machine.login_finished(match c.user.as_str() {
                    _ if good => LoginOutcome::LoggedIn {
                        listing: MESSAGES
                            .iter()
                            .map(|(u, b)| Listing { uid: u.to_string(), key: format!("key-{u}"), size: b.len() as u64 })
                            .collect(),
                        login_delay_secs: 0,
                        expire_days: None,
                    },
                    "locked" => LoginOutcome::InUse,
                    _ => LoginOutcome::BadCredentials,
                })
            }
            Step::StartTls(r) => {
                out.extend(r);
                log.push("starttls".into());
                return false;
            }
            Step::Send { header, key, top, .. } => {
                out.extend(header);
                let body = MESSAGES.iter().find(|(u, _)| format!("key-{u}") == key).unwrap().1;
                let mut stuffer = DotStuffer::new();
                let body = match top {
                    Some(k) => TopCut::new(k).take(body),
                    None => body,
                };
                stuffer.encode(body, out);
                stuffer.finish(out);
                return true;
            }
            Step::Update(uids, _) => {
                log.push(format!("update {uids:?}"));
                machine.update_finished(UpdateOutcome::Applied)
            }
            Step::AuthFailed { reply, close } => {
                out.extend(reply);
                return !close;
            }
            Step::Close(r) => {
                out.extend(r);
                return false;
            }
        }
    }
}

/// Runs a whole client script, fed to the framer in `chunk`-byte pieces.
fn run(script: &[u8], chunk: usize) -> (String, Vec<String>) {
    run_with(settings(), script, chunk)
}

fn run_with(settings: Settings, script: &[u8], chunk: usize) -> (String, Vec<String>) {
    let mut machine = Machine::new(settings);
    let mut buffer = LineBuffer::new(256);
    let mut out = machine.greeting();
    let mut log = Vec::new();
    'feed: for piece in script.chunks(chunk) {
        buffer.append(piece);
        loop {
            let step = match buffer.next_line() {
                Frame::Line(line) => machine.on_line(line),
                Frame::TooLong => machine.on_line_too_long(),
                Frame::NeedMore => break,
            };
            if !drive(&mut machine, step, &mut out, &mut log) {
                break 'feed;
            }
        }
    }
    (String::from_utf8(out).unwrap(), log)
}

fn transcript(script: &str) -> (String, Vec<String>) {
    let (out, log) = run(script.as_bytes(), script.len());
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(run(script.as_bytes(), chunk), (out.clone(), log.clone()), "chunk size {chunk}");
    }
    (out, log)
}

#[test]
fn full_session_is_the_same_in_any_chunking() {
    let (out, log) = transcript(
        "CAPA\r\nuser alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nLIST 1\r\n\
         RETR 1\r\nSTAT\r\nRSET\r\nDELE 2\r\nQUIT\r\nNOOP\r\n",
    );
    let a_len = MESSAGES[0].1.len();
    let b_len = MESSAGES[1].1.len();
    let expected = [
        "+OK cloudpop POP3 server ready".to_string(),
        "+OK Capability list follows".into(),
        "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\nEXPIRE NEVER USER\r\n\
         LOGIN-DELAY 0 USER\r\nUTF8\r\nIMPLEMENTATION cloudpop-test\r\n."
            .into(),
        "+OK Send your password".into(),
        format!("+OK Logged in, maildrop has 2 messages ({} octets)", a_len + b_len),
        format!("+OK 2 {}", a_len + b_len),
        format!("+OK 2 messages ({} octets)\r\n1 {a_len}\r\n2 {b_len}\r\n.", a_len + b_len),
        "+OK 2 uid-b".into(),
        format!("+OK {a_len} octets\r\nSubject: a\r\n\r\n..dot line\r\nbody a\r\n."),
        "+OK Top of message follows\r\nSubject: b\r\n\r\n.".into(),
        "+OK Message 1 deleted".into(),
        "-ERR Message already deleted".into(),
        "-ERR Message already deleted".into(),
        format!("+OK 1 {b_len}"),
        format!("+OK Maildrop has 2 messages ({} octets)", a_len + b_len),
        "+OK Message 2 deleted".into(),
        "+OK cloudpop signing off".into(),
    ]
    .join("\r\n")
        + "\r\n";
    assert_eq!(out, expected);
    assert_eq!(log, ["update [\"key-uid-b\"]"]);
}

#[test]
fn state_rules_and_bad_arguments() {
    let (out, log) = transcript(
        "STAT\r\nNOOP\r\nPASS x\r\nRETR 1\r\nAPOP a b\r\nUSER alice\r\nPASS secret\r\nUSER bob\r\nRETR 0\r\nRETR 3\r\n\
         RETR -1\r\nRETR one\r\nTOP 1\r\nSTLS\r\nAUTH PLAIN\r\nFOO\r\nLIST 99999999999999999999999\r\nQUIT\r\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[1..6].iter().map(|l| &l[..4]).collect::<Vec<_>>(), &["-ERR"; 5]);
    assert!(lines[5].contains("APOP is not supported"), "{}", lines[5]);
    assert!(lines[6].starts_with("+OK") && lines[7].starts_with("+OK Logged in"));
    assert!(lines[8..18].iter().all(|l| l.starts_with("-ERR")), "{lines:#?}");
    assert_eq!(lines[18], "+OK cloudpop signing off");
    assert_eq!(log, ["update []"]);
}

#[test]
fn sasl_plain_login_cancel_and_bad_base64() {
    // \0alice\0secret and "alice" / "secret" in base64.
    let (out, _) =
        transcript("AUTH\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nQUIT\r\n");
    let total = MESSAGES[0].1.len() + MESSAGES[1].1.len();
    let expected = format!(
        "+OK cloudpop POP3 server ready\r\n+OK Supported SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n\
        + \r\n-ERR Authentication cancelled\r\n-ERR Invalid base64 data\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n\
        +OK Logged in, maildrop has 2 messages ({total} octets)\r\n+OK cloudpop signing off\r\n"
    );
    assert_eq!(out, expected);
    let (out, _) = transcript("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTAT\r\n");
    assert!(out.ends_with(&format!("+OK 2 {total}\r\n")), "{out}");
}

#[test]
fn failed_logins_close_after_the_limit_and_in_use_is_coded() {
    let (out, _) =
        transcript("USER locked\r\nPASS x\r\nUSER a\r\nPASS b\r\nUSER a\r\nPASS c\r\nUSER a\r\nPASS d\r\nNOOP\r\n");
    assert!(out.contains("-ERR [IN-USE] "), "{out}");
    assert_eq!(out.matches("-ERR [AUTH] Authentication failed").count(), 3, "{out}");
    assert!(!out.contains("NOOP") && out.ends_with("-ERR [AUTH] Authentication failed\r\n"));
}

#[test]
fn stls_stops_reading_and_overlong_lines_are_refused() {
    let (out, log) = transcript("STLS\r\nUSER evil\r\n");
    assert_eq!(out, "+OK cloudpop POP3 server ready\r\n+OK Begin TLS negotiation\r\n");
    assert_eq!(log, ["starttls"]);
    let long = "X".repeat(300);
    // Three are allowed (max_line_violations); the fourth closes.
    let (out, _) = transcript(&format!("{long}\r\nNOOP\r\n{long}\r\n{long}\r\n{long}\r\nNOOP\r\n"));
    assert_eq!(out.matches("-ERR Line too long").count(), 3, "{out}");
    assert!(out.ends_with("-ERR Too many overlong lines, closing connection\r\n"), "{out}");
}

#[test]
fn plaintext_refused_where_not_allowed() {
    let mut m = Machine::new(Settings { plaintext_allowed: false, ..settings() });
    let caps = String::from_utf8(m.capabilities()).unwrap();
    let lines: Vec<&str> = caps.lines().collect();
    assert!(!lines.contains(&"USER") && !caps.contains("SASL") && lines.contains(&"STLS"), "{caps}");
    for line in ["USER a", "PASS b", "AUTH PLAIN AGEAYg=="] {
        let Step::Reply(r) = m.on_line(line.as_bytes()) else { panic!("{line}") };
        assert!(r.starts_with(b"-ERR [AUTH] Plaintext"), "{line}");
    }
}

#[test]
fn garbage_floods_are_cut_off() {
    let script = "XYZZY\r\n".repeat(25);
    let (out, _) = transcript(&script);
    // Twenty are allowed (max_bad_commands); the twenty-first closes.
    assert_eq!(out.matches("-ERR Unknown command").count(), 20, "{out}");
    assert!(out.ends_with("-ERR Too many bad commands, closing connection\r\n"));
}

/// Every mechanism configured: SCRAM (with -PLUS over TLS 1.3) and bearer tokens.
fn settings_all(tls13: bool) -> Settings {
    Settings {
        scram: true,
        bearer: true,
        tls_active: tls13,
        channel_binding: tls13.then(|| b"exporter".to_vec()),
        oauth_scope: "mail".into(),
        ..settings()
    }
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

#[test]
fn capa_and_auth_list_exactly_the_mechanisms_that_work() {
    let mechs = |settings: Settings| Machine::new(settings).mechanisms().join(" ");
    assert_eq!(mechs(settings()), "PLAIN LOGIN");
    assert_eq!(mechs(settings_all(false)), "PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2");
    assert_eq!(mechs(settings_all(true)), "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS OAUTHBEARER XOAUTH2");
    // Where plaintext is refused, only SCRAM is left: passwords and tokens are hidden.
    let refused = Settings { plaintext_allowed: false, ..settings_all(false) };
    assert_eq!(mechs(refused.clone()), "SCRAM-SHA-256");
    let mut m = Machine::new(refused);
    let caps = String::from_utf8(m.capabilities()).unwrap();
    assert!(caps.contains("\r\nSASL SCRAM-SHA-256\r\n") && !caps.contains("\r\nUSER\r\n"), "{caps}");
    let Step::Reply(r) = m.on_line(b"AUTH XOAUTH2 dXNlcj1h") else { panic!() };
    assert!(r.starts_with(b"-ERR [AUTH] Plaintext"));
    let Step::Reply(r) = m.on_line(b"AUTH SCRAM-SHA-256-PLUS") else { panic!() };
    assert_eq!(r, b"-ERR Unsupported authentication mechanism\r\n", "no -PLUS without TLS 1.3");
    assert!(matches!(m.on_line(b"AUTH SCRAM-SHA-256"), Step::Reply(r) if r == b"+ \r\n"));
}

/// A SCRAM client's messages for alice against the fixed salt and server nonce of `drive`.
fn scram_script(password: &str, final_answer: &str) -> String {
    let first_bare = "n=alice,r=cnonce";
    let server_first = format!("r=cnoncesrvnonce,s={},i=4096", STANDARD.encode(SCRAM_SALT));
    let client_final = scram::tests::client_final(first_bare, &server_first, "n,,", b"", password);
    format!("AUTH SCRAM-SHA-256 {}\r\n{}\r\n{final_answer}", b64(&format!("n,,{first_bare}")), b64(&client_final))
}

#[test]
fn scram_logs_in_only_after_the_server_final_message_is_taken() {
    let (out, _) = run_with(settings_all(false), scram_script("secret", "\r\nSTAT\r\n").as_bytes(), 9999);
    let lines: Vec<&str> = out.lines().collect();
    let server_first = String::from_utf8(STANDARD.decode(&lines[1][2..]).unwrap()).unwrap();
    assert!(server_first.starts_with("r=cnoncesrvnonce,s="), "{server_first}");
    let server_final = String::from_utf8(STANDARD.decode(&lines[2][2..]).unwrap()).unwrap();
    assert!(server_final.starts_with("v="), "{server_final}");
    assert!(lines[3].starts_with("+OK Logged in") && lines[4].starts_with("+OK 2 "), "{out}");
    // A wrong password fails like any wrong password; cancelling after the server-final
    // message closes the connection (the maildrop was already locked).
    let (out, _) = run_with(settings_all(false), scram_script("wrong", "").as_bytes(), 9999);
    assert!(out.ends_with("-ERR [AUTH] Authentication failed\r\n"), "{out}");
    let (out, _) = run_with(settings_all(false), scram_script("secret", "*\r\nSTAT\r\n").as_bytes(), 9999);
    assert!(out.ends_with("-ERR Authentication cancelled\r\n"), "{out}");
}

#[test]
fn refused_tokens_get_the_error_challenge_then_err() {
    let oauthbearer = |token: &str| b64(&format!("n,a=alice,\x01auth=Bearer {token}\x01\x01"));
    let (out, _) = transcript_with(&format!("AUTH OAUTHBEARER {}\r\nSTAT\r\n", oauthbearer("good-token")));
    let total = MESSAGES[0].1.len() + MESSAGES[1].1.len();
    assert!(out.contains("+OK Logged in") && out.ends_with(&format!("+OK 2 {total}\r\n")), "{out}");
    let (out, _) = transcript_with(&format!("AUTH OAUTHBEARER {}\r\nAQ==\r\n", oauthbearer("expired")));
    let lines: Vec<&str> = out.lines().collect();
    let error = String::from_utf8(STANDARD.decode(&lines[1][2..]).unwrap()).unwrap();
    assert_eq!(error, r#"{"scope":"mail","status":"invalid_token"}"#);
    assert_eq!(lines[2], "-ERR [AUTH] Authentication failed");
    let xoauth2 = b64("user=alice\x01auth=Bearer expired\x01\x01");
    let (out, _) = transcript_with(&format!("AUTH XOAUTH2\r\n{xoauth2}\r\n\r\n"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "+ ");
    assert!(String::from_utf8(STANDARD.decode(&lines[2][2..]).unwrap()).unwrap().contains(r#""status":"401""#));
    assert_eq!(lines[3], "-ERR [AUTH] Authentication failed");
}

fn transcript_with(script: &str) -> (String, Vec<String>) {
    let (out, log) = run_with(settings_all(false), script.as_bytes(), script.len());
    for chunk in [1, 3, 64] {
        assert_eq!(run_with(settings_all(false), script.as_bytes(), chunk), (out.clone(), log.clone()));
    }
    (out, log)
}
