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

fn shared_hits(server: &Server) -> f64 {
    server.metrics().get("cloudpop_credential_cache_shared_hits_total{}")
}

/// Issue 24: with the pool-wide cache on, a check made on one frontend spares the others (a
/// client whose polls the balancer spreads over the pool); a password change, a wrong password
/// or another pool key never hit; the Redis entries name no user.
#[test]
fn a_check_made_on_one_frontend_spares_the_others_until_the_password_changes() {
    use common::cloud::{Redis, S3, cloud_env};
    let (redis, s3) = (Redis::start(), S3::start());
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("pool-key");
    std::fs::write(&key_file, "a pool key of at least thirty-two characters\n").unwrap();
    let mut env = cloud_env(&s3, &s3.bucket("mail"), &redis);
    env.push(("CLOUDPOP_CREDENTIAL_CACHE_SHARED_SECS".into(), "600".into()));
    env.push(("CLOUDPOP_CREDENTIAL_CACHE_SHARED_KEY_FILE".into(), key_file.display().to_string()));
    env.push(("CLOUDPOP_AUTH_FAILURE_DELAY_MS".into(), "0".into()));
    let frontends: Vec<Server> =
        (0..3).map(|_| Server::start_with(tempfile::tempdir().unwrap(), env.clone())).collect();
    frontends[0].add_account("poller", "right");
    let before: Vec<f64> = frontends.iter().map(hashes).collect();
    for server in &frontends {
        assert!(login(server, "poller", "right").starts_with("+OK"));
    }
    let checks: Vec<f64> = frontends.iter().zip(&before).map(|(s, b)| hashes(s) - b).collect();
    assert_eq!(checks, [1.0, 0.0, 0.0], "one argon2id check for the pool");
    assert_eq!((shared_hits(&frontends[1]), shared_hits(&frontends[2])), (1.0, 1.0));

    // A wrong password is always checked in full, wherever it arrives.
    assert!(login(&frontends[1], "poller", "wrong").starts_with("-ERR [AUTH]"));
    assert_eq!(hashes(&frontends[1]) - before[1], 1.0);

    // Redis holds opaque tags only: no user name, nothing of the password.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let entries: Vec<String> = redis::cmd("KEYS").arg("cloudpop:verified:*").query(&mut conn).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(!entries[0].contains("poller") && entries[0].len() == "cloudpop:verified:".len() + 64);

    // A new password (set on another frontend) ends the entry for every frontend.
    let args = ["account", "passwd", "poller", "--password-stdin"];
    let (ok, _, err) = common::cli_env(&frontends[0].data_dir(), &frontends[0].env, &args, b"new\n");
    assert!(ok, "{err}");
    common::eventually("the old password still works on the third frontend", || {
        login(&frontends[2], "poller", "right").starts_with("-ERR [AUTH]")
    });
    let hashed = hashes(&frontends[2]);
    assert!(login(&frontends[2], "poller", "new").starts_with("+OK"));
    assert_eq!(hashes(&frontends[2]) - hashed, 1.0, "the new password is checked in full once");

    // A frontend with another pool key shares nothing.
    let other_key = keys.path().join("other-key");
    std::fs::write(&other_key, "another pool key, also thirty-two characters long").unwrap();
    let mut other_env = env.clone();
    other_env.retain(|(k, _)| k != "CLOUDPOP_CREDENTIAL_CACHE_SHARED_KEY_FILE");
    other_env.push(("CLOUDPOP_CREDENTIAL_CACHE_SHARED_KEY_FILE".into(), other_key.display().to_string()));
    let stranger = Server::start_with(tempfile::tempdir().unwrap(), other_env);
    let hashed = hashes(&stranger);
    assert!(login(&stranger, "poller", "new").starts_with("+OK"));
    assert_eq!((hashes(&stranger) - hashed, shared_hits(&stranger)), (1.0, 0.0));
}

/// The shared cache refuses to start without what it needs.
#[test]
fn the_shared_cache_needs_redis_and_a_long_enough_key() {
    let keys = tempfile::tempdir().unwrap();
    let short = keys.path().join("short");
    std::fs::write(&short, "too short").unwrap();
    let short = short.display().to_string();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("CLOUDPOP_CREDENTIAL_CACHE_SHARED_SECS", "600")], "it needs locks = \"redis\""),
        (
            &[("CLOUDPOP_CREDENTIAL_CACHE_SHARED_SECS", "600"), ("CLOUDPOP_LOCKS", "redis")],
            "credential_cache_shared_secs needs credential_cache_shared_key",
        ),
        (
            &[
                ("CLOUDPOP_CREDENTIAL_CACHE_SHARED_SECS", "600"),
                ("CLOUDPOP_LOCKS", "redis"),
                ("CLOUDPOP_REDIS_URL", "redis://127.0.0.1:1"),
                ("CLOUDPOP_CREDENTIAL_CACHE_SHARED_KEY_FILE", &short),
            ],
            "credential_cache_shared_key must be at least 32 characters",
        ),
    ];
    for (env, want) in cases {
        let (code, out, err) = common::serve_until_exit(&["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0"], env);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{env:?}: {err}");
        assert!(err.contains(want), "{env:?}: {err}");
    }
}
