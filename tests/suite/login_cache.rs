//! The verified-credential cache (issue 10): repeated logins skip the argon2id verification,
//! and every change that must end a cached login ends it.

use crate::common;

use common::{Client, Server};

fn hashes(server: &Server) -> f64 {
    server.metrics().get("cloudpop_password_hash_duration_seconds_count{}")
}

fn hits(server: &Server) -> f64 {
    server.metrics().get("cloudpop_credential_cache_hits_total{}")
}

fn login(server: &Server, user: &str, password: &str) -> String {
    let mut c = Client::connect(server.pop3);
    c.cmd(&format!("USER {user}"));
    let reply = c.cmd(&format!("PASS {password}"));
    c.cmd("QUIT");
    reply
}

#[test]
fn a_repeated_login_skips_the_hash_and_a_wrong_password_never_does() {
    let server = Server::start(&[("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0")]);
    server.add_account("poller", "right");
    let before = hashes(&server);
    for _ in 0..5 {
        assert!(login(&server, "poller", "right").starts_with("+OK"));
    }
    assert_eq!(hashes(&server) - before, 1.0, "five logins, one verification");
    assert_eq!(hits(&server), 4.0);
    for _ in 0..3 {
        assert!(login(&server, "poller", "wrong").starts_with("-ERR [AUTH]"));
    }
    assert_eq!(hashes(&server) - before, 4.0, "every failure pays the full verification");
}

#[test]
fn a_password_change_or_disabling_ends_cached_logins_at_once() {
    let server = Server::start(&[("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0")]);
    server.add_account("changer", "old");
    assert!(login(&server, "changer", "old").starts_with("+OK"));
    assert!(login(&server, "changer", "old").starts_with("+OK"));
    assert_eq!(hits(&server), 1.0);
    // Another process (the command line) changes the password: the next login sees it.
    let (ok, _, err) = common::cli_env(
        &server.data_dir(),
        &server.env,
        &["account", "passwd", "changer", "--password-stdin"],
        b"new\n",
    );
    assert!(ok, "{err}");
    assert!(login(&server, "changer", "old").starts_with("-ERR [AUTH]"), "the old password still worked");
    assert!(login(&server, "changer", "new").starts_with("+OK"));
    assert!(login(&server, "changer", "new").starts_with("+OK"));
    // A disabled account is refused even though its password is in the cache.
    let record = server.data_dir().join("accounts/changer.json");
    let text = std::fs::read_to_string(&record).unwrap().replace("\"disabled\": false", "\"disabled\": true");
    std::fs::write(&record, text).unwrap();
    assert!(login(&server, "changer", "new").starts_with("-ERR [AUTH]"), "a disabled account logged in from the cache");
}

#[test]
fn a_zero_ttl_turns_the_cache_off() {
    let server = Server::start(&[("CLOUDPOP_CREDENTIAL_CACHE_SECS", "0")]);
    server.add_account("strict", "pw");
    let before = hashes(&server);
    for _ in 0..3 {
        assert!(login(&server, "strict", "pw").starts_with("+OK"));
    }
    assert_eq!(hashes(&server) - before, 3.0);
}
