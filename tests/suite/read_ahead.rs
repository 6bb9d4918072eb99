//! Read-ahead for sequential retrieval from S3 (issue 24): a client fetching in order finds
//! the next messages already read, each message is fetched from the store once, the session's
//! budget bounds what is held, and deleted or unasked-for messages are dropped unused.

use crate::common::cloud::{BatchDeletes, Redis, S3, S3Gate, cloud_env};
use crate::common::{Client, Server, eventually};

/// A message of exactly `size` octets once stored (CRLF line endings).
fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: message {n}\r\n\r\n").into_bytes();
    while m.len() < size - 2 {
        m.push(b'a' + (m.len() % 26) as u8);
    }
    m.extend_from_slice(b"\r\n");
    m
}

/// A cloud-mode server whose S3 requests pass a gate that counts them, reading ahead at most
/// `budget_kib` per session; after the Redis and S3 it uses, which are bound first so that they
/// are dropped last.
fn behind_a_gate(budget_kib: u64) -> (Redis, S3, S3Gate, Server) {
    let (redis, s3) = (Redis::start(), S3::start());
    let gate = S3Gate::start(s3.port, BatchDeletes::PassAll);
    let mut env = cloud_env(&s3, &s3.bucket("mail"), &redis);
    env.retain(|(k, _)| k != "CLOUDPOP_S3_ENDPOINT");
    env.push(("CLOUDPOP_S3_ENDPOINT".into(), gate.endpoint()));
    env.push(("CLOUDPOP_RETR_READ_AHEAD_KIB".into(), budget_kib.to_string()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    (redis, s3, gate, server)
}

#[test]
fn a_client_fetching_in_order_finds_the_next_messages_already_read() {
    let (_redis, _s3, gate, server) = behind_a_gate(4);
    server.add_account("reader", "pw");
    // Ten messages of 512 octets (eight fit the 4 KiB budget), then one of 10 KB (never read
    // ahead: bigger than the budget).
    let mut messages: Vec<Vec<u8>> = (1..=10).map(|n| message(n, 512)).collect();
    messages.push(message(11, 10_240));
    for m in &messages {
        server.deliver("reader", m);
    }
    let message_gets = || gate.count("GET", |t| t.contains("/pool/mail/") && !t.contains("list-type="));
    let used = || server.metrics().get(r#"cloudpop_read_ahead_total{outcome="used"}"#);

    let mut c = Client::login(server.pop3, "reader", "pw");
    assert!(c.cmd("STAT").starts_with("+OK 11 "));
    let before = message_gets();
    assert_eq!(c.multi("RETR 1").1, messages[0]);
    // Messages 2 to 9 are fetched while nobody has asked for them yet.
    eventually("the messages after RETR 1 were not read ahead", || message_gets() == before + 9);
    for (n, want) in messages.iter().enumerate().skip(1) {
        assert_eq!(&c.multi(&format!("RETR {}", n + 1)).1, want, "message {}", n + 1);
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(message_gets() - before, 11, "each message was fetched from the store exactly once");
    assert_eq!(used(), 9.0, "messages 2 to 10 came from the read-ahead");

    // What the client deletes, or never asks for, is dropped unused.
    let unused = || server.metrics().get(r#"cloudpop_read_ahead_total{outcome="unused"}"#);
    let mut c = Client::login(server.pop3, "reader", "pw");
    assert_eq!(c.multi("RETR 1").1, messages[0]);
    assert!(c.cmd("DELE 3").starts_with("+OK"));
    assert_eq!(unused(), 1.0, "the deleted message's read-ahead was dropped");
    assert_eq!(c.multi("RETR 2").1, messages[1]);
    assert!(c.cmd("RSET").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    eventually("the session's remaining read-ahead was not dropped", || unused() == 8.0);
}

/// A client that scans headers first (TOP 1 0, TOP 2 0, ...) gets the small messages read
/// ahead, but a message above 64 KiB is neither read ahead nor in the way of those after it.
#[test]
fn a_scan_of_headers_reads_small_messages_ahead_and_large_ones_never() {
    let (_redis, _s3, gate, server) = behind_a_gate(1024);
    server.add_account("scanner", "pw");
    // Six small messages, one of 100 KB (above what a TOP reads ahead), two small ones.
    let sizes = [512, 512, 512, 512, 512, 512, 100_000, 512, 512];
    for (n, size) in sizes.iter().enumerate() {
        server.deliver("scanner", &message(n + 1, *size));
    }
    let message_gets = || gate.count("GET", |t| t.contains("/pool/mail/") && !t.contains("list-type="));
    let used = || server.metrics().get(r#"cloudpop_read_ahead_total{outcome="used"}"#);

    let mut c = Client::login(server.pop3, "scanner", "pw");
    let before = message_gets();
    let head = |n: usize| format!("Subject: message {n}\r\n\r\n").into_bytes();
    assert_eq!(c.multi("TOP 1 0").1, head(1));
    // Messages 2 to 6 are fetched before they are asked for; the large seventh is not.
    eventually("the messages after TOP 1 were not read ahead", || message_gets() == before + 6);
    for n in 2..=7 {
        assert_eq!(c.multi(&format!("TOP {n} 0")).1, head(n), "message {n}");
    }
    eventually("the messages after the large one were not read ahead", || message_gets() == before + 9);
    for n in 8..=9 {
        assert_eq!(c.multi(&format!("TOP {n} 0")).1, head(n), "message {n}");
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(message_gets() - before, 9, "each message was fetched from the store exactly once");
    assert_eq!(used(), 7.0, "messages 2 to 6, 8 and 9 came from the read-ahead");
}
