//! RFC 1939 / 2449 / 5034 / 6856 behaviour of the real server, over real sockets.

use crate::common;
use common::{Client, Server, message};

fn server_with_mail(n: usize) -> (Server, Vec<Vec<u8>>) {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let messages: Vec<Vec<u8>> = (0..n).map(|i| message(&format!("message {i}"), i + 2)).collect();
    for m in &messages {
        server.deliver("alice", m);
    }
    (server, messages)
}

#[test]
fn greeting_has_no_apop_timestamp_and_apop_is_refused() {
    let (server, _) = server_with_mail(0);
    let mut c = Client::connect(server.pop3);
    assert!(c.greeting.starts_with("+OK") && !c.greeting.contains('<'), "{}", c.greeting);
    let reply = c.cmd("APOP alice 0123456789abcdef0123456789abcdef");
    assert!(reply.starts_with("-ERR") && reply.contains("APOP"), "{reply}");
}

#[test]
fn transaction_commands_and_numbering() {
    let (server, messages) = server_with_mail(3);
    let mut c = Client::login(server.pop3, "alice", "secret");
    let total: usize = messages.iter().map(Vec::len).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK 3 {total}"));
    let list = c.lines("LIST");
    assert_eq!(list, (1..=3).map(|i| format!("{i} {}", messages[i - 1].len())).collect::<Vec<_>>());
    assert_eq!(c.cmd("LIST 2"), format!("+OK 2 {}", messages[1].len()));
    let uidl = c.lines("UIDL");
    assert_eq!(uidl.len(), 3);
    let uids: Vec<String> = uidl.iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect();
    for uid in &uids {
        assert!((1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid}");
    }
    assert_eq!(c.cmd("UIDL 3"), format!("+OK 3 {}", uids[2]));
    for (i, m) in messages.iter().enumerate() {
        let (status, body) = c.multi(&format!("RETR {}", i + 1));
        assert!(status.starts_with("+OK"), "{status}");
        assert_eq!(&body, m, "RETR {} is byte-exact", i + 1);
    }
    // DELE marks: the message disappears from this session's view, numbers do not shift.
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted");
    assert!(c.cmd("DELE 2").starts_with("-ERR"));
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {}", total - messages[1].len()));
    assert_eq!(c.lines("LIST"), [format!("1 {}", messages[0].len()), format!("3 {}", messages[2].len())]);
    assert_eq!(c.lines("UIDL"), [format!("1 {}", uids[0]), format!("3 {}", uids[2])]);
    for cmd in ["LIST 2", "UIDL 2", "RETR 2", "TOP 2 0"] {
        assert!(c.cmd(cmd).starts_with("-ERR"), "{cmd}");
    }
    assert_eq!(c.cmd("LIST 3"), format!("+OK 3 {}", messages[2].len()));
    assert!(c.cmd("RSET").starts_with("+OK"));
    assert_eq!(c.cmd("STAT"), format!("+OK 3 {total}"));
    assert_eq!(c.cmd("NOOP"), "+OK");
    assert_eq!(c.cmd("QUIT"), "+OK cloudpop signing off");
    assert!(c.is_closed());
}

#[test]
fn bad_arguments_and_wrong_states_get_err() {
    let (server, _) = server_with_mail(2);
    let mut c = Client::connect(server.pop3);
    for cmd in ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "PASS secret", "FOO", ""] {
        assert!(c.cmd(cmd).starts_with("-ERR"), "before login: {cmd:?}");
    }
    let mut c = Client::login(server.pop3, "alice", "secret");
    for cmd in [
        "RETR 0",
        "RETR 3",
        "RETR -1",
        "RETR +1",
        "RETR x",
        "RETR",
        "RETR 1 2",
        "DELE 0",
        "DELE 99",
        "LIST 0",
        "LIST 3",
        "LIST one",
        "UIDL 0",
        "TOP 1",
        "TOP 1 -1",
        "TOP 0 1",
        "TOP x 1",
        "RETR 18446744073709551616",
        "USER alice",
        "PASS secret",
        "AUTH PLAIN",
        "STLS",
        "UTF8",
        "APOP a b",
        "STAT 1",
        "XYZZY",
    ] {
        let reply = c.cmd(cmd);
        assert!(reply.starts_with("-ERR"), "{cmd:?} -> {reply}");
    }
    // The session is still healthy after all of that.
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("2"));
}

#[test]
fn commands_are_case_insensitive() {
    let (server, messages) = server_with_mail(1);
    let mut c = Client::connect(server.pop3);
    assert!(c.cmd("user alice").starts_with("+OK"));
    assert!(c.cmd("pAsS secret").starts_with("+OK"));
    assert_eq!(c.cmd("stat"), format!("+OK 1 {}", messages[0].len()));
    assert_eq!(c.multi("retr 1").1, messages[0]);
    assert_eq!(c.multi("Top 1 0").0, "+OK Top of message follows");
    assert_eq!(c.cmd("quit"), "+OK cloudpop signing off");
}

#[test]
fn top_returns_header_blank_line_and_n_body_lines() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    server.deliver("alice", b"Subject: t\r\nX-A: 1\r\n\r\n.starts with dot\r\nsecond\r\nthird\r\n");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.multi("TOP 1 0").1, b"Subject: t\r\nX-A: 1\r\n\r\n");
    assert_eq!(c.multi("TOP 1 2").1, b"Subject: t\r\nX-A: 1\r\n\r\n.starts with dot\r\nsecond\r\n");
    assert_eq!(c.multi("TOP 1 1000").1, b"Subject: t\r\nX-A: 1\r\n\r\n.starts with dot\r\nsecond\r\nthird\r\n");
    // On the wire the dot is stuffed.
    c.send(b"TOP 1 1\r\n");
    assert!(c.line().starts_with("+OK"));
    let wire: Vec<String> = std::iter::from_fn(|| Some(c.line())).take(5).collect();
    assert_eq!(wire, ["Subject: t", "X-A: 1", "", "..starts with dot", "."]);
}

#[test]
fn capa_lists_exactly_what_works_in_each_state() {
    let (server, _) = server_with_mail(0);
    let mut c = Client::connect(server.pop3);
    let before = c.lines("CAPA");
    let implementation = format!("IMPLEMENTATION cloudpop-{}", env!("CARGO_PKG_VERSION"));
    let common = ["TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
    let want: Vec<&str> = common
        .into_iter()
        .chain(["STLS", "EXPIRE NEVER USER", "LOGIN-DELAY 0 USER", "UTF8", &implementation])
        .collect();
    assert_eq!(before, want, "CAPA before login");
    assert!(c.cmd("USER alice").starts_with("+OK") && c.cmd("PASS secret").starts_with("+OK"));
    // RFC 2449 section 5: what AUTHORIZATION announced is announced in TRANSACTION too; only
    // the per-account values of EXPIRE and LOGIN-DELAY change.
    let after = c.lines("CAPA");
    let want: Vec<&str> =
        common.into_iter().chain(["STLS", "EXPIRE NEVER", "LOGIN-DELAY 0", "UTF8", &implementation]).collect();
    assert_eq!(after, want, "CAPA after login");
    assert!(c.cmd("USER alice").starts_with("-ERR"), "USER is announced, but not valid after login");
    // Over TLS there is nothing to upgrade.
    let mut t = Client::connect_tls(server.pop3s, &server.cert());
    let tls_caps = t.lines("CAPA");
    let want: Vec<&str> =
        common.into_iter().chain(["EXPIRE NEVER USER", "LOGIN-DELAY 0 USER", "UTF8", &implementation]).collect();
    assert_eq!(tls_caps, want, "CAPA over TLS");
    // Where plaintext passwords are not allowed (a non-loopback client without TLS), neither
    // USER nor a plaintext SASL mechanism is offered: the machine's unit tests cover that.
}

#[test]
fn sasl_plain_and_login() {
    let (server, _) = server_with_mail(1);
    let mut c = Client::connect(server.pop3);
    let mechs = c.lines("AUTH");
    assert_eq!(mechs, ["PLAIN", "LOGIN"]);
    // PLAIN with initial response: "\0alice\0secret".
    assert!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").starts_with("+OK"), "initial response");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = Client::connect(server.pop3);
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(c.cmd("AGFsaWNlAHNlY3JldA==").starts_with("+OK"), "continuation");
    c.cmd("QUIT");

    let mut c = Client::connect(server.pop3);
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6");
    assert_eq!(c.cmd("YWxpY2U="), "+ UGFzc3dvcmQ6");
    assert!(c.cmd("c2VjcmV0").starts_with("+OK"), "LOGIN");
    c.cmd("QUIT");

    let mut c = Client::connect(server.pop3);
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(c.cmd("*").starts_with("-ERR"), "cancel");
    assert!(c.cmd("AUTH PLAIN %%%notbase64").starts_with("-ERR"));
    assert!(c.cmd("AUTH CRAM-MD5").starts_with("-ERR"));
    let wrong = c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n");
    assert_eq!(wrong, "-ERR [AUTH] Authentication failed");
    assert!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").starts_with("+OK"), "still usable after failures");
    drop(c);

    // DESIGN.md promise 10: neither passwords nor SASL responses reach the log, even at debug.
    let chatty = Server::start(&[("CLOUDPOP_LOG", "debug")]);
    chatty.add_account("alice", "Tr0ub4dor-only-here");
    let mut c = Client::connect(chatty.pop3);
    c.cmd("USER alice");
    assert!(c.cmd("PASS Tr0ub4dor-only-here").starts_with("+OK"));
    c.cmd("QUIT");
    let mut c = Client::connect(chatty.pop3);
    c.cmd("AUTH PLAIN");
    c.cmd("AGFsaWNlAFdyb25nLWd1ZXNzLTQy"); // "\0alice\0Wrong-guess-42"
    let log = chatty.log();
    assert!(log.contains("logged in") && log.contains("login failed"), "the log does not show the logins");
    for secret in ["Tr0ub4dor-only-here", "Wrong-guess-42", "AGFsaWNlAFdyb25nLWd1ZXNzLTQy"] {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

#[test]
fn failed_logins_are_coded_delayed_and_limited() {
    let server = Server::start(&[("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "300"), ("CLOUDPOP_MAX_AUTH_FAILURES", "2")]);
    server.add_account("alice", "secret");
    let mut c = Client::connect(server.pop3);
    c.cmd("USER alice");
    let started = std::time::Instant::now();
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "no delay before the answer");
    assert!(c.cmd("USER nobody").starts_with("+OK"), "USER does not reveal whether a name exists");
    assert_eq!(c.cmd("PASS secret"), "-ERR [AUTH] Authentication failed");
    assert!(c.is_closed(), "connection stays open after the failure limit");
}

#[test]
fn second_login_gets_in_use_and_lock_frees_after_quit_or_drop() {
    let (server, _) = server_with_mail(1);
    let mut first = Client::login(server.pop3, "alice", "secret");
    let mut second = Client::connect(server.pop3);
    second.cmd("USER alice");
    let reply = second.cmd("PASS secret");
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    assert!(second.cmd("STAT").starts_with("-ERR"), "still in AUTHORIZATION");
    assert!(first.cmd("QUIT").starts_with("+OK"));
    second.cmd("USER alice");
    assert!(second.cmd("PASS secret").starts_with("+OK"), "lock released by QUIT");
    drop(second);
    // A dropped connection releases the lock too (the server notices the close).
    let (_third, reply) = Client::login_when_free(server.pop3, "alice", "secret");
    assert!(reply.starts_with("+OK"), "{reply}");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let (server, messages) = server_with_mail(2);
    let mut c = Client::connect(server.pop3);
    c.send(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nUIDL 2\r\nQUIT\r\n");
    assert!(c.line().starts_with("+OK"));
    assert!(!c.body().is_empty());
    assert!(c.line().starts_with("+OK"));
    assert!(c.line().starts_with("+OK Logged in"));
    assert!(c.line().starts_with("+OK 2 "));
    assert!(c.line().starts_with("+OK 2 messages"));
    assert_eq!(c.body().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 2);
    assert!(c.line().starts_with("+OK"));
    assert_eq!(c.body(), messages[0]);
    assert_eq!(c.line(), "+OK Message 1 deleted");
    assert_eq!(c.line(), "+OK");
    assert!(c.line().starts_with("+OK 2 "));
    assert_eq!(c.line(), "+OK cloudpop signing off");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {}", messages[1].len()));
}

#[test]
fn utf8_command() {
    // RFC 6856: UTF8 is a command of the AUTHORIZATION state only; in UTF-8 mode a message
    // whose header fields are UTF-8 arrives octet for octet.
    let (server, _) = server_with_mail(0);
    let international = "Subject: Grüße aus Köln ☕\r\nFrom: jörg@例え.jp\r\n\r\nbody\r\n".as_bytes();
    server.deliver("alice", international);
    let mut c = Client::connect(server.pop3);
    assert_eq!(c.cmd("UTF8"), "+OK UTF8 enabled");
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    let utf8 = c.cmd("UTF8");
    assert!(utf8.starts_with("-ERR"), "UTF8 after login: {utf8}");
    assert_eq!(c.multi("RETR 1").1, international);
}

#[test]
fn overlong_lines_and_garbage_never_hurt_the_server() {
    let (server, messages) = server_with_mail(1);
    let mut c = Client::connect(server.pop3);
    c.send(&vec![b'A'; 5000]);
    c.send(b"\r\n");
    assert_eq!(c.line(), "-ERR Line too long");
    assert!(c.cmd("NOOP").starts_with("-ERR"), "connection still usable");
    // max_line_violations (3) are allowed; the fourth closes.
    let long = |b: u8| [vec![b; 3000], b"\r\n".to_vec()].concat();
    c.send(&[long(b'B'), long(b'C'), long(b'D')].concat());
    assert_eq!(c.line(), "-ERR Line too long");
    assert_eq!(c.line(), "-ERR Line too long");
    assert_eq!(c.line(), "-ERR Too many overlong lines, closing connection");
    assert!(c.is_closed());

    // max_bad_commands (20) are answered; the twenty-first closes. LMTP counts the same way.
    let mut b = Client::connect(server.pop3);
    for _ in 0..20 {
        assert_eq!(b.cmd("XYZZY"), "-ERR Unknown command");
    }
    assert_eq!(b.cmd("XYZZY"), "-ERR Too many bad commands, closing connection");
    assert!(b.is_closed());

    // Binary garbage, NULs, lone CRs, invalid UTF-8.
    let mut g = Client::connect(server.pop3);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    g.send(&garbage);
    g.send(b"\r\n\0\0\0\r\n\xff\xfe\xfd\r\nUSER \x00\x01\r\n");
    drop(g);

    // A session in TRANSACTION dropped mid-way applies nothing.
    let mut d = Client::login(server.pop3, "alice", "secret");
    assert!(d.cmd("DELE 1").starts_with("+OK"));
    d.send(b"\xff\xff\xff garbage \0\r\n");
    drop(d);
    let (mut c, reply) = Client::login_when_free(server.pop3, "alice", "secret");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {}", messages[0].len()), "dropped session deleted mail");
}

#[test]
fn login_timeout_closes_idle_unauthenticated_connections() {
    let server = Server::start(&[("CLOUDPOP_LOGIN_TIMEOUT_SECS", "1")]);
    let mut c = Client::connect(server.pop3);
    assert_eq!(c.line(), "-ERR Disconnected for inactivity");
    assert!(c.is_closed());
}

#[test]
fn connection_cap_refuses_with_sys_temp() {
    let server = Server::start(&[("CLOUDPOP_MAX_CONNECTIONS", "2")]);
    let _a = Client::connect(server.pop3);
    let _b = Client::connect(server.pop3);
    let c = Client::connect(server.pop3);
    assert!(c.greeting.starts_with("-ERR [SYS/TEMP]"), "{}", c.greeting);
    drop(_a);
    let mut ok = false;
    for _ in 0..100 {
        if Client::connect(server.pop3).greeting.starts_with("+OK") {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ok, "a slot never freed up");
}
