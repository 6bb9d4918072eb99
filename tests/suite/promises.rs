//! The promises of DESIGN.md on the embedded backend: snapshot at login, deletes only at QUIT,
//! stable unique ids, exact sizes, bounded streaming of large messages, names that cannot escape.

use crate::common;
use common::{Client, Server, cli_result, message};

fn uids(c: &mut Client) -> Vec<String> {
    c.lines("UIDL").iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect()
}

#[test]
fn mail_delivered_during_a_session_is_invisible_and_survives_its_quit() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    server.deliver("alice", &message("old", 1));
    let mut c = Client::login(server.pop3, "alice", "secret");
    let new_id = server.deliver("alice", &message("new", 1));
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("1"), "new mail leaked into the snapshot");
    assert!(c.cmd("RETR 2").starts_with("-ERR"));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(uids(&mut c), [new_id]);
    assert!(String::from_utf8(c.multi("RETR 1").1).unwrap().contains("Subject: new"));
}

#[test]
fn only_quit_applies_deletions() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    for i in 0..3 {
        server.deliver("alice", &message(&format!("m{i}"), 1));
    }
    // Dropped connection: nothing removed.
    let mut c = Client::login(server.pop3, "alice", "secret");
    let before = uids(&mut c);
    assert!(c.cmd("DELE 1").starts_with("+OK") && c.cmd("DELE 2").starts_with("+OK"));
    drop(c);
    // RSET then QUIT: nothing removed.
    let mut c = relogin(&server);
    assert_eq!(uids(&mut c), before);
    assert!(c.cmd("DELE 3").starts_with("+OK"));
    assert!(c.cmd("RSET").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    // DELE then QUIT: exactly the marked message removed.
    let mut c = relogin(&server);
    assert_eq!(uids(&mut c), before);
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = relogin(&server);
    assert_eq!(uids(&mut c), [before[0].clone(), before[2].clone()]);
}

#[test]
fn sigterm_ends_sessions_without_applying_deletions() {
    // A session still open when the grace period ends is cut; its DELE is never applied.
    let server = Server::start(&[("CLOUDPOP_SHUTDOWN_GRACE_SECS", "1"), ("CLOUDPOP_DRAIN_DELAY_SECS", "0")]);
    server.add_account("alice", "secret");
    server.deliver("alice", &message("keep", 1));
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    server.signal("-TERM");
    assert_eq!(c.line(), "-ERR [SYS/TEMP] Server is shutting down, try again later");
    assert!(c.is_closed());
    let (status, dir) = server.wait();
    assert!(status.success(), "{status}");
    let cur = dir.path().join("data/maildrops/alice/cur");
    assert_eq!(std::fs::read_dir(cur).unwrap().count(), 1, "SIGTERM applied a deletion");
}

fn relogin(server: &Server) -> Client {
    // The previous session's lock is released as soon as the server sees its connection close.
    let (c, reply) = Client::login_when_free(server.pop3, "alice", "secret");
    assert!(reply.starts_with("+OK"), "{reply}");
    c
}

#[test]
fn uidls_are_stable_across_sessions_and_never_reused() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<String> = Vec::new();
    for round in 0..5 {
        let id = server.deliver("alice", &message(&format!("r{round}"), 1));
        assert!(seen.insert(id.clone()), "id {id} reused");
        kept.push(id);
        let mut c = relogin(&server);
        assert_eq!(uids(&mut c), kept, "ids changed between sessions");
        if round % 2 == 1 {
            c.cmd("DELE 1");
            kept.remove(0);
        }
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    let mut c = relogin(&server);
    assert_eq!(uids(&mut c), kept);
}

#[test]
fn sizes_are_exact_and_line_endings_are_crlf() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    // LF-only, a lone CR, no final newline, a lone dot line.
    server.deliver("alice", b"Subject: lf\n\nline\rtwo\n.\nlast");
    let mut c = Client::login(server.pop3, "alice", "secret");
    let want = b"Subject: lf\r\n\r\nline\r\ntwo\r\n.\r\nlast\r\n";
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", want.len()));
    assert_eq!(c.multi("RETR 1").1, want);
}

#[test]
fn twenty_megabyte_message_is_retrieved_byte_exact() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u64;
    while big.len() < 20 * 1024 * 1024 {
        // Include lines starting with dots so stuffing is exercised throughout.
        big.extend_from_slice(
            format!("{}line {i} {}\r\n", if i.is_multiple_of(7) { "." } else { "" }, "x".repeat((i % 90) as usize))
                .as_bytes(),
        );
        i += 1;
    }
    server.deliver("alice", &big);
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", big.len()));
    let (status, body) = c.multi("RETR 1");
    assert!(status.starts_with("+OK"));
    assert!(body == big, "20 MB message differs (got {} octets, want {})", body.len(), big.len());
    let (_, head) = c.multi("TOP 1 3");
    assert_eq!(head, big[..head.len()].to_vec());
    assert_eq!(head.split(|&b| b == b'\n').count(), 2 + 3 + 1);
}

/// Promise 7 for retrieval: RETR of a 100 MB message raises the server's peak resident memory
/// (the kernel's high-water mark, reset after login so the password check is not counted) by
/// less than 16 MiB, reading from local files and from S3 alike.
#[test]
fn retr_of_a_100_mb_message_streams_in_bounded_memory() {
    let embedded = Server::start(&[]);
    assert_retr_memory_bounded(&embedded);
    let s3 = crate::common::cloud::S3::start();
    let redis = crate::common::cloud::Redis::start();
    let env = crate::common::cloud::cloud_env(&s3, &s3.bucket("retr-memory"), &redis);
    let cloud = Server::start_with(tempfile::tempdir().unwrap(), env);
    assert_retr_memory_bounded(&cloud);
}

fn assert_retr_memory_bounded(server: &Server) {
    server.add_account("big", "secret");
    let line = [b"..".as_slice(), &[b'x'; 76], b"\r\n"].concat();
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 100 * 1024 * 1024 {
        big.extend_from_slice(&line);
    }
    server.deliver("big", &big);
    let mut c = Client::login(server.pop3, "big", "secret");
    common::reset_peak_rss(server.pid());
    let before = common::peak_rss_kib(server.pid());
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let mut received = 0usize;
    loop {
        let line = c.line();
        if line == "." {
            break;
        }
        assert!(line.starts_with("...") || line.starts_with("Subject") || line.is_empty(), "{line}");
        received += line.len() + 2;
    }
    // Every line that starts with a dot went out stuffed: one octet more each.
    let lines = (big.len() - "Subject: big\r\n\r\n".len()) / line.len();
    assert_eq!(received, big.len() + lines, "the message arrived incomplete");
    let grown_mib = (common::peak_rss_kib(server.pid()) - before) / 1024;
    assert!(grown_mib < 16, "peak resident memory grew by {grown_mib} MiB during RETR of 100 MB");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn names_cannot_escape_the_data_directory() {
    let server = Server::start(&[]);
    for bad in ["../evil", "a/b", "..", "x\\y", ".hidden"] {
        let (ok, _, err) = cli_result(&server.data_dir(), &["account", "add", bad, "--password-stdin"], b"pw\n");
        assert!(!ok && err.contains("invalid account name"), "{bad}: {err}");
        let (ok, _, _) = cli_result(&server.data_dir(), &["deliver", bad], b"Subject: x\r\n\r\nx\r\n");
        assert!(!ok, "deliver to {bad} succeeded");
        let mut c = Client::connect(server.pop3);
        c.cmd(&format!("USER {bad}"));
        assert!(c.cmd("PASS pw").starts_with("-ERR [AUTH]"));
    }
    let escaped: Vec<_> = std::fs::read_dir(server.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(escaped.iter().all(|n| n == "data" || n == "server.log"), "{escaped:?}");
}
