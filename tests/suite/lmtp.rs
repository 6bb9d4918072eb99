//! LMTP delivery from MTAs: the protocol over raw sockets, Python's `smtplib.LMTP` and `swaks`
//! as clients, and what POP3 then retrieves. (A real Postfix relaying in: `lmtp_postfix`.)

use crate::common::api::{self as grpc, ADMIN_TOKEN};
use crate::common::cloud::{Redis, S3, cloud_env};
use crate::common::{Client, Server};
use cloudpop::api::proto::{Quota, SetEnabledRequest, SetQuotaRequest};
use std::net::SocketAddr;
use std::process::Command;

/// A server with LMTP on a free loopback port and both API tokens; `env` adds or overrides.
pub fn start(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("CLOUDPOP_LMTP_LISTEN", "127.0.0.1:0"), ("CLOUDPOP_LMTP_HOSTNAME", "pop.test")];
    all.extend(grpc::token_env());
    all.extend(env);
    Server::start(&all)
}

/// Reads one reply, multi-line or not; returns its lines.
pub fn reply(c: &mut Client) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        assert!(line.len() >= 4, "truncated reply line {line:?} after {lines:?}");
        let last = line.as_bytes()[3] == b' ';
        lines.push(line);
        if last {
            return lines;
        }
    }
}

/// Sends a command and returns the (last line of its) reply.
pub fn say(c: &mut Client, command: &str) -> String {
    c.send(format!("{command}\r\n").as_bytes());
    reply(c).pop().unwrap()
}

/// The messages of a mailbox as POP3 retrieves them.
pub fn retrieve_all(server: &Server, user: &str, password: &str) -> Vec<Vec<u8>> {
    let mut pop = Client::login(server.pop3, user, password);
    let count = pop.lines("LIST").len();
    let messages = (1..=count).map(|n| pop.multi(&format!("RETR {n}")).1).collect();
    pop.cmd("QUIT");
    messages
}

/// Splits off the trace fields cloudpop put in front: (those fields, the message as sent).
pub fn split_trace(stored: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(stored);
    let at = text.find("Received: ").expect("a Received field");
    let after = at + text[at..].find(" +0000\r\n").expect("the Received date") + " +0000\r\n".len();
    (text[..after].to_owned(), stored[after..].to_vec())
}

fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// smtplib.LMTP: the extensions, then one message to five recipients with every outcome (the
/// body has bare LF line endings, which smtplib sends as they are, dot-stuffed line by line).
/// smtplib reads only the first reply after DATA; the others are read with getreply().
const SMTPLIB_MIXED: &str = r#"
import smtplib, ssl, sys
host, port, cert = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.LMTP(host, port)
print("LHLO", s.ehlo("mx.test")[0])
print("FEATURES", " ".join(sorted(f"{k}={v}" if v else k for k, v in s.esmtp_features.items())))
rcpts = ["alice@example.com", "nobody@example.com", "carol@example.com", "bob@example.com", "Alice+Lists@example.com"]
print("MAIL", *s.mail("sender@example.org", ["BODY=8BITMIME", "SIZE=300"]))
accepted = []
for r in rcpts:
    code, text = s.rcpt(r)
    print("RCPT", r, code, text.decode())
    if code == 250:
        accepted.append(r)
body = ("Subject: mixed\nFrom: sender@example.org\n\n.leading dot\n..two dots\n.\nnaïve 8-bit body\r\nend\r\n").encode()
code, text = s.data(body)
print("DATA", accepted[0], code, text.decode())
for r in accepted[1:]:
    code, text = s.getreply()
    print("DATA", r, code, text.decode())
s.rset()
ctx = ssl.create_default_context(cafile=cert)
ctx.check_hostname = False
print("STARTTLS", s.starttls(context=ctx)[0])
print("LHLO-TLS", s.ehlo("mx.test")[0], "starttls" in s.esmtp_features)
s.mail("")
s.rcpt("alice@example.com")
print("DATA-TLS", *s.data(b"Subject: over tls\r\n\r\nsecret\r\n"))
s.quit()
"#;

#[tokio::test]
async fn smtplib_gets_one_reply_per_recipient_and_pop3_retrieves_the_message() {
    let server = start(&[]);
    for name in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        server.add_account(name, "pw");
    }
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    admin.set_enabled(SetEnabledRequest { name: "carol@example.com".into(), enabled: false }).await.unwrap();
    let quota = Some(Quota { max_bytes: 0, max_messages: 1 });
    admin.set_quota(SetQuotaRequest { name: "bob@example.com".into(), quota, update_mask: None }).await.unwrap();
    server.deliver("bob@example.com", b"Subject: fills the quota\r\n\r\nx\r\n");

    let lmtp = server.lmtp.unwrap();
    let args = [lmtp.ip().to_string(), lmtp.port().to_string(), server.cert().display().to_string()];
    let out = tokio::task::spawn_blocking(move || python(SMTPLIB_MIXED, &args)).await.unwrap();
    let max = 512 * 1024 * 1024;
    let expected = [
        "LHLO 250".to_string(),
        format!("FEATURES 8bitmime enhancedstatuscodes pipelining size={max} starttls"),
        "MAIL 250 b'2.1.0 Sender OK'".into(),
        "RCPT alice@example.com 250 2.1.5 Recipient OK".into(),
        "RCPT nobody@example.com 550 5.1.1 No such mailbox".into(),
        "RCPT carol@example.com 550 5.2.1 Mailbox disabled".into(),
        "RCPT bob@example.com 250 2.1.5 Recipient OK".into(),
        "RCPT Alice+Lists@example.com 250 2.1.5 Recipient OK".into(),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..expected.len()], expected.iter().map(String::as_str).collect::<Vec<_>>()[..], "{out}");
    let data: Vec<&str> = lines[expected.len()..expected.len() + 3].to_vec();
    assert!(data[0].starts_with("DATA alice@example.com 250 2.0.0 <alice@example.com> Delivered as "), "{out}");
    assert_eq!(data[1], "DATA bob@example.com 452 4.2.2 <bob@example.com> Mailbox full", "{out}");
    assert!(data[2].starts_with("DATA Alice+Lists@example.com 250 2.0.0 <Alice+Lists@example.com> Delivered"), "{out}");
    assert!(out.contains("STARTTLS 220\nLHLO-TLS 250 False\nDATA-TLS 250"), "{out}");

    let messages = retrieve_all(&server, "alice@example.com", "pw");
    assert_eq!(messages.len(), 3, "two copies in clear and one over TLS");
    let sent = "Subject: mixed\r\nFrom: sender@example.org\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nnaïve 8-bit body\r\nend\r\n";
    for (message, rcpt) in messages[..2].iter().zip(["alice@example.com", "Alice+Lists@example.com"]) {
        let (trace, rest) = split_trace(message);
        assert_eq!(String::from_utf8(rest).unwrap(), sent, "the message changed on the way");
        assert!(
            trace.starts_with(&format!("Return-Path: <sender@example.org>\r\nDelivered-To: {rcpt}\r\n")),
            "{trace}"
        );
        assert!(trace.contains("Received: from mx.test ([127.0.0.1])\r\n\tby pop.test (cloudpop) with LMTP id "));
        assert!(trace.contains(&format!("\tfor <{rcpt}>; ")), "{trace}");
    }
    let (trace, rest) = split_trace(&messages[2]);
    assert!(trace.starts_with("Return-Path: <>\r\n") && trace.contains(" with LMTPS id "), "{trace}");
    assert_eq!(rest, b"Subject: over tls\r\n\r\nsecret\r\n");
    assert_eq!(retrieve_all(&server, "bob@example.com", "pw").len(), 1, "bob's full mailbox took nothing");

    let metrics = server.metrics();
    assert_eq!(metrics.get(r#"cloudpop_ingest_deliveries_total{status="stored",via="lmtp"}"#), 3.0);
    assert_eq!(metrics.get(r#"cloudpop_ingest_deliveries_total{status="over_quota",via="lmtp"}"#), 1.0);
}

#[test]
fn pipelined_commands_garbage_and_smuggling_attempts() {
    let server = start(&[("CLOUDPOP_LMTP_QUOTA_TEMPFAIL", "false")]);
    server.add_account("alice@example.com", "pw");
    let mut c = Client::connect(server.lmtp.unwrap());
    assert_eq!(c.greeting, "220 pop.test LMTP cloudpop ready");
    // Commands before LHLO, SMTP greetings, garbage and an overlong line: refused, not fatal.
    assert_eq!(say(&mut c, "MAIL FROM:<a@b.example>"), "503 5.5.1 Send LHLO first");
    assert_eq!(say(&mut c, "EHLO mx.test"), "500 5.5.1 This is an LMTP server: use LHLO");
    c.send(b"\x00\xff\xfe\x16\x03\x01 binary\r\n");
    assert_eq!(reply(&mut c), ["500 5.5.2 Syntax error: the command is not text"]);
    c.send(&[b"NOOP ".as_slice(), &[b'x'; 10_000], b"\r\n"].concat());
    assert_eq!(reply(&mut c), ["500 5.5.2 Line too long"]);

    // One pipelined group, answered in order.
    c.send(b"LHLO mx.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<bad address>\r\nDATA\r\n");
    let lhlo = reply(&mut c);
    assert_eq!(lhlo.first().map(String::as_str), Some("250-pop.test"), "{lhlo:?}");
    assert!(lhlo.iter().any(|l| l == "250-PIPELINING") && lhlo.iter().any(|l| l.ends_with("ENHANCEDSTATUSCODES")));
    assert_eq!(reply(&mut c), ["250 2.1.0 Sender OK"]);
    assert_eq!(reply(&mut c), ["250 2.1.5 Recipient OK"]);
    assert_eq!(reply(&mut c), ["550 5.1.1 No such mailbox"]);
    assert_eq!(reply(&mut c), ["501 5.1.3 Bad address syntax: expected <local@domain>"]);
    assert!(reply(&mut c)[0].starts_with("354 "));
    // A bare-LF "end" with a second transaction behind it is data, not a command (its dot is
    // taken as stuffing); a bare LF is stored as CRLF; the real end and QUIT come in one packet.
    c.send(b"Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\nbare LF\r\n..dot\r\n.\r\nQUIT\r\n");
    let delivered = reply(&mut c);
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].starts_with("250 2.0.0 <alice@example.com> Delivered as "), "{delivered:?}");
    assert_eq!(reply(&mut c), ["221 2.0.0 Bye"]);
    assert!(c.is_closed());
    let messages = retrieve_all(&server, "alice@example.com", "pw");
    assert_eq!(messages.len(), 1, "the smuggled transaction became a second message");
    let (_, body) = split_trace(&messages[0]);
    assert_eq!(body, b"Subject: smuggle\r\n\r\nbody\r\n\r\nMAIL FROM:<evil@example.org>\r\nbare LF\r\n.dot\r\n");

    // Sequence errors, then an oversize message refused by SIZE and by its real size.
    let mut c = Client::connect(server.lmtp.unwrap());
    assert!(say(&mut c, "LHLO mx.test").starts_with("250 "));
    assert_eq!(say(&mut c, "DATA"), "503 5.5.1 No valid recipients");
    assert_eq!(say(&mut c, "RCPT TO:<alice@example.com>"), "503 5.5.1 Bad sequence of commands");
    let huge = 600 * 1024 * 1024;
    assert_eq!(
        say(&mut c, &format!("MAIL FROM:<s@example.org> SIZE={huge}")),
        "552 5.3.4 Message size exceeds the fixed maximum message size"
    );
    assert_eq!(say(&mut c, "NOOP"), "250 2.0.0 OK");
    drop(c);

    // Twenty refused commands are answered; the twenty-first closes, as in POP3.
    let mut c = Client::connect(server.lmtp.unwrap());
    for _ in 0..20 {
        assert!(say(&mut c, "FROB").starts_with("500 5.5.1"));
    }
    c.send(b"FROB\r\n");
    let last = reply(&mut c);
    assert!(last[0].starts_with("500 5.5.1"), "{last:?}");
    assert_eq!(reply(&mut c), ["421 4.7.0 Too many errors, closing the connection"]);
    assert!(c.is_closed());

    // A disabled-quota account that is full gets the permanent code with lmtp_quota_tempfail off.
    let mut c = Client::connect(server.lmtp.unwrap());
    let full = start_full_mailbox(&server);
    say(&mut c, "LHLO mx.test");
    say(&mut c, "MAIL FROM:<>");
    assert_eq!(say(&mut c, &format!("RCPT TO:<{full}>")), "250 2.1.5 Recipient OK");
    assert!(say(&mut c, "DATA").starts_with("354"));
    c.send(b"Subject: q\r\n\r\nx\r\n.\r\n");
    assert_eq!(reply(&mut c), [format!("552 5.2.2 <{full}> Mailbox full")]);
}

/// An account whose message quota is already reached, made through the CLI's store access.
fn start_full_mailbox(server: &Server) -> &'static str {
    let name = "full@example.com";
    server.add_account(name, "pw");
    server.deliver(name, b"Subject: first\r\n\r\nx\r\n");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
        let quota = Some(Quota { max_bytes: 0, max_messages: 1 });
        admin.set_quota(SetQuotaRequest { name: name.into(), quota, update_mask: None }).await.unwrap();
    });
    name
}

/// Connections over `lmtp_max_connections` are turned away with 421; on SIGTERM an idle
/// session is told 421 4.3.2 while a transaction in DATA finishes and is stored.
#[test]
fn connection_limit_and_shutdown_answer_with_421() {
    let server = start(&[("CLOUDPOP_LMTP_MAX_CONNECTIONS", "2"), ("CLOUDPOP_SHUTDOWN_GRACE_SECS", "20")]);
    server.add_account("alice@example.com", "pw");
    let lmtp = server.lmtp.unwrap();
    let mut idle = Client::connect(lmtp);
    let mut busy = Client::connect(lmtp);
    let mut over = Client::connect(lmtp);
    assert_eq!(over.greeting, "421 4.3.2 Too many connections, try again later");
    assert!(over.is_closed());
    say(&mut busy, "LHLO mx.test");
    say(&mut busy, "MAIL FROM:<s@example.org>");
    assert_eq!(say(&mut busy, "RCPT TO:<alice@example.com>"), "250 2.1.5 Recipient OK");
    assert!(say(&mut busy, "DATA").starts_with("354"));
    busy.send(b"Subject: sent during shutdown\r\n\r\nfirst half\r\n");
    server.signal("-TERM");
    assert_eq!(idle.line(), "421 4.3.2 Service shutting down, try again later");
    busy.send(b"second half\r\n.\r\n");
    assert!(reply(&mut busy)[0].starts_with("250 2.0.0 <alice@example.com> Delivered as "));
    // Its transaction done, that session too is told to go away.
    assert_eq!(say(&mut busy, "QUIT"), "421 4.3.2 Service shutting down, try again later");
    let (status, dir) = server.wait();
    assert!(status.success(), "{status:?}");
    let stored = std::fs::read_dir(dir.path().join("data/maildrops/alice@example.com/cur")).unwrap().count();
    assert_eq!(stored, 1, "the transaction in DATA was not stored");
}

#[test]
fn only_trusted_networks_may_deliver() {
    let server = start(&[("CLOUDPOP_LMTP_TRUSTED_NETWORKS", "10.0.0.0/8, 192.0.2.1")]);
    let mut c = Client::connect(server.lmtp.unwrap());
    assert_eq!(c.greeting, "554 5.7.1 Not authorised to deliver here");
    assert!(c.is_closed());
    let refused = server.metrics().get(r#"cloudpop_connections_refused_total{listener="lmtp",reason="untrusted"}"#);
    assert_eq!(refused, 1.0);
}

#[test]
fn swaks_delivers_pipelined_to_several_mailboxes_with_domain_stripping() {
    let server = start(&[("CLOUDPOP_LMTP_STRIP_DOMAIN", "true"), ("CLOUDPOP_MAX_MESSAGE_SIZE", "100000")]);
    server.add_account("alice", "pw");
    server.add_account("bob", "pw");
    let lmtp = server.lmtp.unwrap();
    let swaks = |extra: &[&str]| {
        let out = Command::new("swaks")
            .args(["--protocol", "LMTP", "--server", &lmtp.ip().to_string(), "--port", &lmtp.port().to_string()])
            .args(["--helo", "mx.test", "--from", "sender@example.org", "--pipeline", "--hide-informational"])
            .args(extra)
            .output()
            .expect("swaks");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = swaks(&["--to", "alice@example.com,nobody@example.com,bob+x@example.net", "--body", "hello from swaks"]);
    assert!(out.contains("<** 550 5.1.1 No such mailbox"), "{out}");
    assert!(out.contains("250 2.0.0 <alice@example.com> Delivered as "), "{out}");
    assert!(out.contains("250 2.0.0 <bob+x@example.net> Delivered as "), "{out}");
    for user in ["alice", "bob"] {
        let messages = retrieve_all(&server, user, "pw");
        assert_eq!(messages.len(), 1, "{user}");
        assert!(String::from_utf8_lossy(&messages[0]).contains("hello from swaks"));
    }
    // Over max_message_size: refused after the data, once per recipient, nothing stored.
    let big = server.dir.path().join("big-body.txt");
    std::fs::write(&big, "x".repeat(200_000)).unwrap();
    let out = swaks(&["--to", "alice@example.com,bob@example.com", "--body", big.to_str().unwrap()]);
    assert_eq!(out.matches("552 5.3.4 Message size exceeds the fixed maximum message size").count(), 2, "{out}");
    assert_eq!(retrieve_all(&server, "alice", "pw").len(), 1);
}

/// A message of 100 MB streamed through LMTP: stored whole, while the server's peak resident
/// memory stays far below the message size.
#[test]
fn a_100_mb_message_is_streamed_in_bounded_memory() {
    let server = start(&[]);
    server.add_account("big@example.com", "pw");
    let mut c = Client::connect(server.lmtp.unwrap());
    say(&mut c, "LHLO mx.test");
    say(&mut c, "MAIL FROM:<s@example.org> SIZE=104857600");
    assert_eq!(say(&mut c, "RCPT TO:<big@example.com>"), "250 2.1.5 Recipient OK");
    assert!(say(&mut c, "DATA").starts_with("354"));
    let line = [b"..".as_slice(), &[b'y'; 1022], b"\r\n"].concat();
    let mut block = b"Subject: big\r\n\r\n".to_vec();
    let mut sent_lines = 0;
    while block.len() < 100 * 1024 * 1024 {
        block.extend_from_slice(&line);
        sent_lines += 1;
    }
    c.send(&block);
    c.send(b".\r\n");
    drop(block);
    assert!(reply(&mut c)[0].starts_with("250 2.0.0"));
    let peak_kb = crate::common::peak_rss_kib(server.pid());
    assert!(peak_kb < 64 * 1024, "peak resident memory {peak_kb} kB for a 100 MB message");
    let mut pop = Client::login(server.pop3, "big@example.com", "pw");
    let (_, head) = pop.multi("TOP 1 0");
    let (trace, _) = split_trace(&head);
    let list = pop.cmd("LIST 1");
    let size: usize = list.split(' ').nth(2).unwrap().parse().unwrap();
    // One dot of each stuffed line was removed on the way in.
    assert_eq!(size, trace.len() + "Subject: big\r\n\r\n".len() + sent_lines * (line.len() - 1), "{list}");
}

/// With the store going down between RCPT and the end of DATA, the delivery fails temporarily
/// (the MTA keeps the mail and retries), nothing is half-stored, and the retry succeeds once
/// the store is back.
#[test]
fn a_store_outage_is_a_temporary_failure_and_the_retry_stores_once() {
    let mut s3 = S3::start();
    let redis = Redis::start();
    let bucket = s3.bucket("lmtp-outage");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.push(("CLOUDPOP_LMTP_LISTEN".into(), "127.0.0.1:0".into()));
    env.push(("CLOUDPOP_S3_MAX_ATTEMPTS".into(), "1".into()));
    env.push(("CLOUDPOP_S3_TIMEOUT_SECS".into(), "2".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("alice@example.com", "pw");
    // Accepted up to the recipient while the store is up, so that DATA itself meets the outage.
    let accepted = |lmtp: SocketAddr| {
        let mut c = Client::connect(lmtp);
        say(&mut c, "LHLO mx.test");
        say(&mut c, "MAIL FROM:<s@example.org>");
        let rcpt = say(&mut c, "RCPT TO:<alice@example.com>");
        assert!(rcpt.starts_with("250"), "{rcpt}");
        c
    };
    let data = |c: &mut Client| {
        assert!(say(c, "DATA").starts_with("354"));
        c.send(b"Subject: during an outage\r\n\r\nbody\r\n.\r\n");
        reply(c).pop().unwrap()
    };
    let mut during = accepted(server.lmtp.unwrap());
    s3.stop();
    let failed = data(&mut during);
    assert!(failed.starts_with("451 4.3.0"), "{failed}");
    s3.restart();
    assert!(retrieve_all(&server, "alice@example.com", "pw").is_empty(), "the failed delivery left a message behind");
    let stored = data(&mut accepted(server.lmtp.unwrap()));
    assert!(stored.starts_with("250 2.0.0"), "{stored}");
    let messages = retrieve_all(&server, "alice@example.com", "pw");
    assert_eq!(messages.len(), 1, "the failed attempt left something behind");
    assert!(split_trace(&messages[0]).1.starts_with(b"Subject: during an outage"));
}

/// A private Postfix instance (Debian's `postfix`, its own configuration directory, queue and
/// log) that accepts SMTP on a loopback port and relays `example.com` to `lmtp` over LMTP.
/// Postfix's master runs as root and its daemons as the `postfix` user, as in production.
struct Postfix {
    dir: tempfile::TempDir,
    smtp: u16,
}

impl Postfix {
    fn start(lmtp: SocketAddr) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Postfix's daemons run as `postfix` and must reach the queue.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let chown = Command::new("chown").arg("postfix").arg(root.join("data")).status().unwrap();
        assert!(chown.success(), "chown postfix: is Debian's postfix package installed (scripts/test)?");
        let smtp = crate::common::cloud::free_port();
        let root_str = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {root_str}/queue\ndata_directory = {root_str}/data\n\
             mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = mx.test\nmydestination =\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             relay_domains = example.com\nrelay_transport = lmtp:inet:{lmtp}\n\
             default_transport = error:no mail leaves this test\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\
             local_recipient_maps =\nalias_maps =\nalias_database =\nsmtputf8_enable = no\n\
             maillog_file_prefixes = {root_str}\nmaillog_file = {root_str}/maillog\n\
             queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n"
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).unwrap();
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        let master_cf = format!("127.0.0.1:{smtp} inet n - n - - smtpd\n{}\n", services.join("\n"));
        std::fs::write(root.join("etc/master.cf"), master_cf).unwrap();
        let postfix = Self { dir, smtp };
        let started = postfix.command("postfix", &["start"]);
        assert!(started.status.success(), "postfix start failed:\n{}", postfix.log());
        crate::common::eventually("Postfix accepts SMTP", || std::net::TcpStream::connect(("127.0.0.1", smtp)).is_ok());
        postfix
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Output {
        let config = self.dir.path().join("etc");
        Command::new(program).arg("-c").arg(&config).args(args).output().expect(program)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.command("postfix", &["stop"]);
        // The master we started, by the PID it recorded in our own queue directory.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
    }
}

/// The message as POP3 shows it, without cloudpop's trace fields and the `Received` field
/// Postfix added in front.
fn without_trace_fields(stored: &[u8]) -> Vec<u8> {
    let (_, rest) = split_trace(stored);
    assert!(rest.starts_with(b"Received: from "), "Postfix's Received field first");
    // The field ends at the first line that does not start with white space.
    let mut at = memchr_crlf(&rest, 0);
    while rest[at] == b' ' || rest[at] == b'\t' {
        at = memchr_crlf(&rest, at);
    }
    rest[at..].to_vec()
}

fn memchr_crlf(text: &[u8], from: usize) -> usize {
    from + text[from..].windows(2).position(|w| w == b"\r\n").unwrap() + 2
}

#[test]
fn postfix_relays_over_lmtp_and_pop3_retrieves_the_message_exactly() {
    let server = start(&[]);
    server.add_account("alice@example.com", "pw");
    server.add_account("bob@example.com", "pw");
    let postfix = Postfix::start(server.lmtp.unwrap());
    let message = "From: Sender <sender@example.org>\r\nTo: alice@example.com, bob@example.com\r\n\
                   Subject: through Postfix\r\nMessage-ID: <postfix-test@example.org>\r\n\
                   Date: Wed, 02 Dec 2026 18:00:00 +0000\r\nMIME-Version: 1.0\r\n\
                   Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                   .a line that starts with a dot\r\n..and two\r\n.\r\nnaïve café\r\n";
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
refused = s.sendmail("sender@example.org", ["alice@example.com", "bob@example.com"], sys.stdin.buffer.read())
s.sendmail("sender@example.org", ["nobody@example.com"], b"Subject: lost\r\n\r\nx\r\n")
s.quit()
print(refused)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &postfix.smtp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "{}", "{out:?}");

    crate::common::eventually("Postfix delivered to cloudpop over LMTP", || {
        let log = postfix.log();
        log.matches("status=sent (250 2.0.0 <").count() == 2 && log.contains("status=bounced")
    });
    let log = postfix.log();
    assert!(log.contains("to=<nobody@example.com>") && log.contains("550 5.1.1"), "{log}");
    for user in ["alice@example.com", "bob@example.com"] {
        let messages = retrieve_all(&server, user, "pw");
        assert_eq!(messages.len(), 1, "{user}");
        let (trace, _) = split_trace(&messages[0]);
        assert!(trace.starts_with(&format!("Return-Path: <sender@example.org>\r\nDelivered-To: {user}\r\n")));
        assert!(trace.contains("Received: from mx.test ([127.0.0.1])"), "{trace}");
        assert_eq!(String::from_utf8(without_trace_fields(&messages[0])).unwrap(), message, "{user}");
    }
}

/// A full mailbox is a temporary failure: Postfix keeps the message in its queue, and once the
/// operator raises the quota a queue run delivers it, once. (The test's Postfix retries
/// deferred mail every second, so the outcome does not hang on when the flush lands.)
#[tokio::test]
async fn postfix_keeps_mail_for_a_full_mailbox_and_delivers_it_after_the_quota_is_raised() {
    let server = start(&[]);
    server.add_account("alice@example.com", "pw");
    server.deliver("alice@example.com", b"Subject: fills the quota\r\n\r\nx\r\n");
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let full = Some(Quota { max_bytes: 0, max_messages: 1 });
    admin
        .set_quota(SetQuotaRequest { name: "alice@example.com".into(), quota: full, update_mask: None })
        .await
        .unwrap();
    let postfix = Postfix::start(server.lmtp.unwrap());
    let port = postfix.smtp.to_string();
    let sent = tokio::task::spawn_blocking(move || {
        let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.sendmail("sender@example.org", ["alice@example.com"], b"Subject: waits in the queue\r\n\r\nkept\r\n")
s.quit()
"#;
        Command::new("python3").args(["-c", script, &port]).status().unwrap()
    });
    assert!(sent.await.unwrap().success());
    crate::common::eventually("Postfix defers the message", || postfix.log().contains("status=deferred"));
    assert!(postfix.log().contains("452 4.2.2"), "{}", postfix.log());

    let unlimited = Some(Quota { max_bytes: 0, max_messages: 0 });
    admin
        .set_quota(SetQuotaRequest { name: "alice@example.com".into(), quota: unlimited, update_mask: None })
        .await
        .unwrap();
    let flushed = postfix.command("postqueue", &["-f"]);
    assert!(flushed.status.success(), "postqueue -f: {}", String::from_utf8_lossy(&flushed.stderr));
    crate::common::eventually("the queue run delivers it", || postfix.log().contains("status=sent"));
    let messages = tokio::task::spawn_blocking(move || retrieve_all(&server, "alice@example.com", "pw")).await.unwrap();
    assert_eq!(messages.len(), 2);
    let delivered = String::from_utf8_lossy(&messages[1]);
    assert!(
        delivered.contains("Subject: waits in the queue\r\n") && delivered.ends_with("\r\n\r\nkept\r\n"),
        "{delivered}"
    );
}

/// Issue 22 item 14: a delivery to many recipients answers each one as soon as its copy is
/// stored, and when the shutdown grace ends the recipients not stored yet get `451 4.3.2` (the
/// MTA retries only those). Before, no reply came until every copy was stored, and a shutdown
/// in between lost every reply, so the MTA delivered all the copies again.
#[test]
fn a_long_delivery_answers_each_recipient_in_turn_and_stops_at_the_shutdown_cut() {
    let server = start(&[("CLOUDPOP_SHUTDOWN_GRACE_SECS", "1"), ("CLOUDPOP_DRAIN_DELAY_SECS", "0")]);
    const RECIPIENTS: usize = 40;
    let passwd: String = (0..RECIPIENTS).map(|i| format!("r{i}@example.com:{{PLAIN}}pw::::::\n")).collect();
    let file = server.dir.path().join("recipients.passwd");
    std::fs::write(&file, passwd).unwrap();
    let args = ["import", "accounts", file.to_str().unwrap(), "--allow-plain"];
    let (ok, _, err) = crate::common::cli_env(&server.data_dir(), &server.env, &args, b"");
    assert!(ok, "{err}");
    let mut c = Client::connect(server.lmtp.unwrap());
    say(&mut c, "LHLO mx.test");
    say(&mut c, "MAIL FROM:<s@example.org>");
    for i in 0..RECIPIENTS {
        assert_eq!(say(&mut c, &format!("RCPT TO:<r{i}@example.com>")), "250 2.1.5 Recipient OK");
    }
    assert!(say(&mut c, "DATA").starts_with("354"));
    let line = format!("{}\r\n", "x".repeat(998));
    c.send(b"Subject: big\r\n\r\n");
    for _ in 0..(24 * 1024 * 1024 / line.len()) {
        c.send(line.as_bytes());
    }
    c.send(b".\r\n");
    // The first copy's reply comes while the others are still being stored.
    let first = reply(&mut c).pop().unwrap();
    assert!(first.starts_with("250 2.0.0 <r0@example.com> Delivered as "), "{first}");
    server.signal("-TERM");
    let mut replies = vec![first];
    while replies.len() < RECIPIENTS {
        replies.push(reply(&mut c).pop().unwrap());
    }
    let delivered = replies.iter().take_while(|r| r.starts_with("250 2.0.0")).count();
    assert!(delivered < RECIPIENTS, "every copy was stored before the cut: the test proves nothing");
    for (i, r) in replies.iter().enumerate().skip(delivered) {
        assert_eq!(r, &format!("451 4.3.2 <r{i}@example.com> Service shutting down, try again later"));
    }
    assert_eq!(c.line(), "421 4.3.2 Service shutting down, try again later");
    let (status, dir) = server.wait();
    assert!(status.success(), "{status:?}");
    let stored: usize = (0..RECIPIENTS)
        .map(|i| {
            std::fs::read_dir(dir.path().join(format!("data/maildrops/r{i}@example.com/cur"))).map_or(0, |d| d.count())
        })
        .sum();
    assert!(stored == delivered || stored == delivered + 1, "{stored} copies stored, {delivered} answered 250");
}

/// Issue 22 item 15: deliveries in progress together hold at most `max_spool_mib` in the spool;
/// one beyond it is refused for now with `452 4.3.1` instead of filling the disk (a pod's spool
/// volume has a size limit, and past it the pod is evicted). Before, both were spooled.
#[test]
fn the_spool_is_bounded_across_deliveries() {
    let server = start(&[("CLOUDPOP_MAX_SPOOL_MIB", "2"), ("CLOUDPOP_MAX_MESSAGE_SIZE", "2097152")]);
    server.add_account("a@example.com", "pw");
    server.add_account("b@example.com", "pw");
    let line = format!("{}\r\n", "y".repeat(998));
    let open = |rcpt: &str| {
        let mut c = Client::connect(server.lmtp.unwrap());
        say(&mut c, "LHLO mx.test");
        say(&mut c, "MAIL FROM:<s@example.org>");
        assert_eq!(say(&mut c, &format!("RCPT TO:<{rcpt}>")), "250 2.1.5 Recipient OK");
        assert!(say(&mut c, "DATA").starts_with("354"));
        c.send(b"Subject: large\r\n\r\n");
        for _ in 0..1200 {
            c.send(line.as_bytes());
        }
        c
    };
    // The first delivery holds 1.2 MB of spool, its end not sent yet.
    let mut first = open("a@example.com");
    let spool = server.data_dir().join("spool");
    crate::common::eventually("the first delivery never filled its spool", || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| f.metadata().is_ok_and(|m| m.len() >= 1200 * 1000))
    });
    let mut second = open("b@example.com");
    second.send(b".\r\n");
    assert_eq!(reply(&mut second).pop().unwrap(), "452 4.3.1 Insufficient system storage, try again later");
    first.send(b".\r\n");
    assert!(reply(&mut first).pop().unwrap().starts_with("250 2.0.0 <a@example.com> Delivered as "));
    // Its room is given back: the second's retry goes through.
    let mut retry = open("b@example.com");
    retry.send(b".\r\n");
    assert!(reply(&mut retry).pop().unwrap().starts_with("250 2.0.0 <b@example.com> Delivered as "));
}
