//! Adversarial clients and callers: each test is one way a single client, caller or outage
//! could break a promise of DESIGN.md, run against the real binary.

use crate::common;

use common::{Server, cli_env};
use std::io::{BufRead, Write};
use std::time::Duration;

/// A maildrop with `count` small messages, delivered in one `deliver` run.
fn fill(server: &Server, name: &str, count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["deliver".to_string(), name.to_string()];
    for i in 0..count {
        let path = dir.path().join(format!("m{i}"));
        std::fs::write(&path, format!("Subject: {i}\r\n\r\nbody {i}\r\n")).unwrap();
        args.push(path.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = cli_env(&server.data_dir(), &server.env, &args, b"");
    assert!(ok, "{err}");
}

/// Promise 7: pipelined commands whose replies the client never reads cannot make the server
/// queue output without limit. A client that writes UIDL over and over on a 1,000-message
/// maildrop and reads nothing must be stopped by backpressure (the server stops reading its
/// input) while the server's memory stays flat; before the fix every buffered command's whole
/// listing was queued before the first write (tens of megabytes per 16 KiB of input).
#[test]
fn a_pipelined_uidl_flood_that_is_never_read_keeps_server_memory_flat() {
    let server = Server::start(&[]);
    server.add_account("flood", "pw");
    fill(&server, "flood", 1000);
    let mut raw = std::net::TcpStream::connect(server.pop3).unwrap();
    let mut reader = std::io::BufReader::new(raw.try_clone().unwrap());
    let mut line = String::new();
    for command in ["", "USER flood\r\n", "PASS pw\r\n"] {
        raw.write_all(command.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("+OK"), "{command}: {line}");
    }
    raw.write_all(b"UIDL\r\n").unwrap();
    let mut reply_size = 0;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).unwrap();
        assert!(read > 0, "the connection closed in the middle of the listing");
        reply_size += read;
        if line == ".\r\n" {
            break;
        }
    }
    assert!(reply_size > 20_000, "the listing is {reply_size} octets");

    common::reset_peak_rss(server.pid());
    let before = common::peak_rss_kib(server.pid());
    raw.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let flood = b"UIDL\r\n".repeat(2048);
    let mut sent = 0usize;
    // Write until the server stops reading: then both socket buffers are full and every reply
    // the server produced is either sent or queued inside it.
    loop {
        match raw.write(&flood) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
        assert!(sent < 512 * 1024 * 1024, "the server never stopped reading");
    }
    let commands = sent / 6;
    let grown = common::peak_rss_kib(server.pid()).saturating_sub(before) * 1024;
    println!(
        "{commands} UIDL commands ({} MB of replies) sent unread; server peak RSS grew by {} KiB",
        commands * reply_size / 1_000_000,
        grown / 1024
    );
    assert!(commands * reply_size > 64 * 1024 * 1024, "the flood was too small to tell: {commands} commands");
    assert!(grown < 16 * 1024 * 1024, "server RSS grew by {} KiB while replies went unread", grown / 1024);
}

/// A server behind a (simulated) load balancer, so each connection can claim its own client
/// address, with plaintext logins allowed so the test needs no TLS.
fn behind_proxy(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("CLOUDPOP_PROXY_PROTOCOL", "true"),
        ("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "127.0.0.0/8"),
        ("CLOUDPOP_ALLOW_PLAINTEXT_AUTH", "true"),
        ("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Logs in as `user` from `client` (an IPv4 address given in a PROXY header); the PASS reply.
fn login_from(server: &Server, client: [u8; 4], user: &str, password: &str) -> String {
    let [a, b, c, d] = client;
    let header = format!("PROXY TCP4 {a}.{b}.{c}.{d} 192.0.2.1 40000 110\r\n");
    let mut session = common::Client::connect_after(server.pop3, header.as_bytes(), None);
    assert!(session.cmd(&format!("USER {user}")).starts_with("+OK"));
    session.cmd(&format!("PASS {password}"))
}

/// Item 6: the failed-login limit holds against parallel connections. Twenty guesses at one
/// account, all at once from twenty addresses, with a limit of three per account: at most three
/// passwords may be checked; before the fix every connection passed the check before any
/// failure was counted, so all twenty were.
#[test]
fn parallel_guesses_get_no_more_checks_than_the_account_limit() {
    let server = behind_proxy(&[("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "3")]);
    server.add_account("victim", "the-real-password");
    let replies: Vec<String> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..20u8)
            .map(|i| {
                let server = &server;
                scope.spawn(move || login_from(server, [203, 0, 113, i + 1], "victim", &format!("guess-{i}")))
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let checked = replies.iter().filter(|r| r.starts_with("-ERR [AUTH]")).count();
    let throttled = replies.iter().filter(|r| r.contains("[SYS/TEMP] Too many failed logins")).count();
    assert_eq!(checked + throttled, 20, "{replies:#?}");
    assert!(checked <= 3, "{checked} of 20 parallel guesses had their password checked: {replies:#?}");
}

/// Accounts `prefix0..prefixN` with password `pw-<name>`, created by one `import accounts` run.
fn add_accounts(server: &Server, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let passwd: String = names.iter().map(|n| format!("{n}:{{PLAIN}}pw-{n}::::::\n")).collect();
    let file = server.dir.path().join(format!("{prefix}.passwd"));
    std::fs::write(&file, passwd).unwrap();
    let args = ["import", "accounts", file.to_str().unwrap(), "--allow-plain"];
    let (ok, out, err) = cli_env(&server.data_dir(), &server.env, &args, b"");
    assert!(ok && out.starts_with(&format!("imported: {count} accounts created")), "{out}{err}");
    names
}

/// Issue 22 item 1: 200 users behind one address (a NAT, a webmail host) log in at once with
/// their correct passwords, while someone at another address guesses at one account in the
/// same burst. Every correct login gets +OK (before the fix, attempts in flight counted as
/// failures and most got `Too many failed logins`), and the guesses still get no more checks
/// than the account's budget.
#[test]
fn two_hundred_correct_logins_from_one_address_are_all_accepted() {
    let server = behind_proxy(&[
        ("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "3"),
        ("CLOUDPOP_MAX_CONNECTIONS_PER_ADDRESS", "256"),
        ("CLOUDPOP_MAX_CONNECTIONS", "512"),
    ]);
    let users = add_accounts(&server, "nat", 200);
    server.add_account("target", "the-real-password");
    let (logins, guesses): (Vec<String>, Vec<String>) = std::thread::scope(|scope| {
        let server = &server;
        let logins: Vec<_> = users
            .iter()
            .map(|user| scope.spawn(move || login_from(server, [198, 51, 100, 7], user, &format!("pw-{user}"))))
            .collect();
        let guesses: Vec<_> = (0..20u8)
            .map(|i| scope.spawn(move || login_from(server, [203, 0, 113, 200], "target", &format!("guess-{i}"))))
            .collect();
        (
            logins.into_iter().map(|l| l.join().unwrap()).collect(),
            guesses.into_iter().map(|g| g.join().unwrap()).collect(),
        )
    });
    let refused: Vec<&String> = logins.iter().filter(|r| !r.starts_with("+OK")).collect();
    assert!(
        refused.is_empty(),
        "{} of 200 correct logins refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    let checked = guesses.iter().filter(|r| r.starts_with("-ERR [AUTH]")).count();
    let throttled = guesses.iter().filter(|r| r.contains("[SYS/TEMP] Too many failed logins")).count();
    assert_eq!((checked, throttled), (3, 17), "{guesses:#?}");
}

/// Issue 22 item 1: the per-address connection limit counts connections until they log in, so
/// the users of one NAT reading mail are not limited by it; unauthenticated ones still are.
#[test]
fn the_per_address_limit_counts_connections_until_login() {
    let server = Server::start(&[("CLOUDPOP_MAX_CONNECTIONS_PER_ADDRESS", "2")]);
    server.add_account("one", "pw-one");
    server.add_account("two", "pw-two");
    let logged_in =
        [common::Client::login(server.pop3, "one", "pw-one"), common::Client::login(server.pop3, "two", "pw-two")];
    let waiting: Vec<common::Client> = (0..2).map(|_| common::Client::connect(server.pop3)).collect();
    assert!(
        waiting.iter().all(|c| c.greeting.starts_with("+OK")),
        "logged-in sessions still held their address's slots"
    );
    let third = common::Client::connect(server.pop3);
    assert!(third.greeting.starts_with("-ERR [SYS/TEMP] Too many connections"), "{}", third.greeting);
    drop((logged_in, waiting));
}

/// Issue 22 item 2: imported hashes bigger than a slot of the hashing pool (Dovecot's ARGON2ID is
/// 64 MiB) are verified on the legacy queue within its own memory budget. Sixteen wrong passwords
/// at once against 64 MiB hashes, with a budget of 64 MiB: the server's peak memory grows by about
/// one hash, not one per hashing thread (before, each thread allocated its own 64 MiB at once).
#[test]
fn wrong_passwords_against_big_imported_hashes_stay_within_the_legacy_budget() {
    let server = Server::start(&[
        ("CLOUDPOP_LEGACY_HASH_MEMORY_MIB", "64"),
        ("CLOUDPOP_HASHING_THREADS", "4"),
        ("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "100"),
        ("CLOUDPOP_THROTTLE_ADDRESS_FAILURES", "100"),
        ("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0"),
    ]);
    let params = argon2::Params::new(64 * 1024, 3, 1, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"sixteen byte slt").unwrap();
    let hash = argon2::PasswordHasher::hash_password(
        &argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params),
        b"the migrated password",
        &salt,
    )
    .unwrap()
    .to_string();
    let passwd: String = (0..16).map(|i| format!("migrated{i}:{{ARGON2ID}}{hash}::::::\n")).collect();
    let file = server.dir.path().join("migrated.passwd");
    std::fs::write(&file, passwd).unwrap();
    let (ok, out, err) = cli_env(&server.data_dir(), &server.env, &["import", "accounts", file.to_str().unwrap()], b"");
    assert!(ok && out.starts_with("imported: 16 accounts created"), "{out}{err}");
    // One native login first, so the pool's own slot and the threads are in the baseline.
    server.add_account("native", "pw-native");
    drop(common::Client::login(server.pop3, "native", "pw-native"));
    common::reset_peak_rss(server.pid());
    let before = common::peak_rss_kib(server.pid());
    let replies: Vec<String> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    let mut c = common::Client::connect(server.pop3);
                    c.cmd(&format!("USER migrated{i}"));
                    c.cmd("PASS a wrong guess")
                })
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    assert!(replies.iter().all(|r| r.starts_with("-ERR [AUTH]")), "{replies:#?}");
    let grown = common::peak_rss_kib(server.pid()).saturating_sub(before);
    assert!(grown <= (64 + 24) * 1024, "peak memory grew by {} MiB for a 64 MiB legacy budget", grown / 1024);
    // The right password still logs in (and is re-hashed to cloudpop's own).
    let mut c = common::Client::connect(server.pop3);
    c.cmd("USER migrated3");
    assert!(c.cmd("PASS the migrated password").starts_with("+OK"));
}

/// Item 7: guesses from elsewhere cannot lock the owner out. The owner logs in from their usual
/// address; an attacker then uses up the account's failure budget from other addresses and is
/// refused; the owner still gets in from the usual address (before the fix, the per-account
/// limit refused the right password from everywhere).
#[test]
fn an_attacker_cannot_lock_the_owner_out() {
    let server = behind_proxy(&[("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "3")]);
    server.add_account("owner", "owners-password");
    let home = [198, 51, 100, 20];
    assert!(login_from(&server, home, "owner", "owners-password").starts_with("+OK"));
    for i in 0..3 {
        assert!(login_from(&server, [203, 0, 113, 50 + i], "owner", "wrong").starts_with("-ERR [AUTH]"));
    }
    let refused = login_from(&server, [203, 0, 113, 99], "owner", "owners-password");
    assert!(refused.contains("Too many failed logins"), "the account limit did not hold elsewhere: {refused}");
    let owner = login_from(&server, home, "owner", "owners-password");
    assert!(owner.starts_with("+OK"), "the owner was locked out: {owner}");
}

/// Item 2: one address cannot take every connection slot.
#[test]
fn one_address_gets_only_its_share_of_connections() {
    let server = Server::start(&[("CLOUDPOP_MAX_CONNECTIONS_PER_ADDRESS", "3")]);
    let held: Vec<common::Client> = (0..3).map(|_| common::Client::connect(server.pop3)).collect();
    assert!(held.iter().all(|c| c.greeting.starts_with("+OK")));
    let mut refused = common::Client::connect(server.pop3);
    assert!(refused.greeting.starts_with("-ERR [SYS/TEMP] Too many connections"), "{}", refused.greeting);
    assert!(refused.is_closed());
    drop(held);
    common::eventually("a slot was not given back", || {
        common::Client::connect(server.pop3).greeting.starts_with("+OK")
    });
}

/// Item 2: a client that keeps a connection busy without logging in (a CAPA every 200 ms) is
/// closed at the login deadline; before, each command restarted the idle timer forever.
#[test]
fn a_busy_connection_that_never_logs_in_is_closed_at_the_deadline() {
    let server = Server::start(&[("CLOUDPOP_LOGIN_DEADLINE_SECS", "2")]);
    let mut c = common::Client::connect(server.pop3);
    let started = std::time::Instant::now();
    loop {
        c.send(b"CAPA\r\n");
        let status = c.line();
        if !status.starts_with("+OK") {
            assert!(status.starts_with("-ERR Too long without logging in"), "{status}");
            assert!(c.is_closed());
            break;
        }
        c.body();
        assert!(started.elapsed() < Duration::from_secs(10), "still open after 10 s of CAPA");
        std::thread::sleep(Duration::from_millis(200)); // the client's own pace
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "closed before the deadline");
}

/// Item 2: logins waiting for a password check are bounded; the rest get [SYS/TEMP] at once.
#[test]
fn a_login_storm_beyond_the_hashing_queue_is_refused_not_queued() {
    // Without the credential cache every login must go through the queue; and the failed-login
    // throttle, which counts attempts in flight (item 6), is kept out of the way.
    let server = Server::start(&[
        ("CLOUDPOP_MAX_PENDING_LOGINS", "2"),
        ("CLOUDPOP_CREDENTIAL_CACHE_SECS", "0"),
        ("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "1000"),
    ]);
    server.add_account("storm", "storm-password");
    let replies: Vec<String> = std::thread::scope(|scope| {
        let logins: Vec<_> = (0..16)
            .map(|_| {
                let server = &server;
                scope.spawn(move || {
                    let mut c = common::Client::connect(server.pop3);
                    c.cmd("USER storm");
                    c.cmd("PASS storm-password")
                })
            })
            .collect();
        logins.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let busy = replies.iter().filter(|r| r.starts_with("-ERR [SYS/TEMP]") && r.contains("too many logins")).count();
    let other = replies.iter().filter(|r| r.starts_with("+OK") || r.starts_with("-ERR [IN-USE]")).count();
    assert_eq!(busy + other, 16, "{replies:#?}");
    assert!(busy > 0, "16 simultaneous logins all queued behind 2 places: {replies:#?}");
}

/// Issue 24 item 5: a storm of deliveries and sessions on the file store (every write, fsync,
/// listing and read through the blocking pool) keeps the process within `blocking_threads`
/// plus its fixed threads; tokio's default would let it grow toward 512.
#[test]
fn a_storm_on_the_file_store_keeps_the_blocking_pool_within_its_bound() {
    let server = Server::start(&[
        ("CLOUDPOP_BLOCKING_THREADS", "8"),
        ("CLOUDPOP_HASHING_THREADS", "2"),
        ("CLOUDPOP_LMTP_LISTEN", "127.0.0.1:0"),
        ("CLOUDPOP_LMTP_MAX_CONNECTIONS", "1000"),
    ]);
    let threads = || common::proc_status_kib(server.pid(), "Threads");
    let users: Vec<String> = (0..64).map(|i| format!("storm{i}@example.com")).collect();
    for user in &users {
        server.add_account(user, "pw");
    }
    let idle = threads();
    let lmtp = server.lmtp.unwrap();
    std::thread::scope(|scope| {
        for user in &users {
            scope.spawn(move || {
                let mut c = common::Client::connect(lmtp);
                crate::lmtp::say(&mut c, "LHLO storm.test");
                for i in 0..10 {
                    crate::lmtp::say(&mut c, "MAIL FROM:<s@example.org>");
                    assert!(crate::lmtp::say(&mut c, &format!("RCPT TO:<{user}>")).starts_with("250"));
                    assert!(crate::lmtp::say(&mut c, "DATA").starts_with("354"));
                    c.send(format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes());
                    let stored = crate::lmtp::reply(&mut c).pop().unwrap();
                    assert!(stored.starts_with("250 2.0.0"), "{stored}");
                }
            });
        }
    });
    // Idle blocking threads stay ten seconds, so the count now is the storm's.
    let after = threads();
    println!("threads: {idle} idle, {after} after the storm");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    assert!(after <= idle + 8 + cores, "{after} threads after the storm ({idle} before) with blocking_threads = 8");
}

/// Item 3: a client that asks for a large message and stops reading cannot hold the maildrop's
/// lock until the idle timeout (600 s per write before): it is cut off at the minimum rate and
/// the lock is free again.
#[test]
fn a_stalled_reader_loses_the_maildrop_at_the_minimum_rate() {
    let server = Server::start(&[("CLOUDPOP_RETR_GRACE_SECS", "1"), ("CLOUDPOP_RETR_MIN_BYTES_PER_SEC", "1048576")]);
    server.add_account("slow", "pw");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 32 * 1024 * 1024 {
        big.extend_from_slice(&[b'x'; 998]);
        big.extend_from_slice(b"\r\n");
    }
    server.deliver("slow", &big);
    let mut stalled = common::Client::login(server.pop3, "slow", "pw");
    stalled.send(b"RETR 1\r\n");
    let started = std::time::Instant::now();
    // Never reads. A second login is refused as in use until the first is cut off.
    loop {
        let mut c = common::Client::connect(server.pop3);
        c.cmd("USER slow");
        let reply = c.cmd("PASS pw");
        if reply.starts_with("+OK") {
            break;
        }
        assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(30), "the stalled reader still holds the maildrop");
        std::thread::sleep(Duration::from_millis(250)); // a client's retry pace
    }
    drop(stalled);
}

/// Item 9: the API does not start in clear on a network address unless told to.
#[test]
fn the_api_refuses_cleartext_on_a_network_address() {
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--api-listen", "0.0.0.0:0"])
        .env("CLOUDPOP_API_ADMIN_TOKENS", "admin-token-0123456789")
        .env("CLOUDPOP_OPS_LISTEN", "")
        .env("CLOUDPOP_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("without TLS") && err.contains("api_allow_cleartext"), "{err}");
    // And the command line does not send a token to another host in clear.
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("CLOUDPOP_API_TOKEN".to_string(), "admin-token-0123456789".to_string())];
    let (ok, _, err) = cli_env(dir.path(), &env, &["account", "list", "--api", "http://192.0.2.10:7110"], b"");
    assert!(!ok && err.contains("in clear") && err.contains("https://"), "{err}");
}

/// Item 10: the embedded store's files and directories are private to the server's user.
#[test]
fn the_embedded_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(&[]);
    server.add_account("private", "pw");
    server.deliver("private", b"Subject: secret\r\n\r\nfor my eyes only\r\n");
    let mut seen = 0;
    let mut stack = vec![server.data_dir()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            if path.file_name().is_some_and(|n| n == "tls") {
                continue; // the generated certificate is public by nature; its key is 0600
            }
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} entries under the data directory");
}

/// Item 13: a caller's idempotency key cannot name one of the server's own markers. Before,
/// the key `retention` (or `trace.<id>`, `uidl.<hex>`) was the marker itself.
#[tokio::test]
async fn idempotency_keys_cannot_touch_the_servers_own_markers() {
    use common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let request = cloudpop::api::proto::CreateAccountRequest {
        name: "keys".into(),
        password: "pw".into(),
        quota: None,
        policy: None,
    };
    admin.create_account(request).await.unwrap();
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let first = common::api::deliver(&mut ingest, &["keys"], "first", b"Subject: 1\r\n\r\none\r\n").await.unwrap();
    let trace_key = format!("trace.{}", first.results[0].message_id);
    for key in ["retention", trace_key.as_str()] {
        let reply = common::api::deliver(&mut ingest, &["keys"], key, b"Subject: 2\r\n\r\ntwo\r\n").await.unwrap();
        assert_eq!(reply.results[0].status, cloudpop::api::proto::DeliveryStatus::Stored as i32, "{key}: {reply:?}");
    }
    let markers: Vec<String> = std::fs::read_dir(server.data_dir().join("maildrops/keys/markers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(markers.iter().any(|m| m == "key:retention") && !markers.iter().any(|m| m == "retention"), "{markers:?}");
}

/// Item 4: retention bookkeeping costs the same however many messages a session retrieves, and
/// however often: one read and one write of the maildrop's ledger at the end (before: a marker
/// read and write per message, in sequence, while holding the lock).
#[tokio::test]
async fn retention_bookkeeping_is_constant_per_session() {
    use cloudpop::api::proto::{Policy, SetPolicyRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("keeper", "pw");
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let policy = Some(Policy { login_delay_secs: 0, expire_days: Some(30) });
    admin.set_policy(SetPolicyRequest { name: "keeper".into(), policy, update_mask: None }).await.unwrap();
    fill(&server, "keeper", 100);
    let marker_calls = |server: &Server| {
        let metrics = server.metrics();
        ["get_ledger", "put_ledger"]
            .iter()
            .map(|op| metrics.sum("cloudpop_store_operations_total", &format!("operation=\"{op}\",outcome=\"ok\"")))
            .sum::<f64>()
    };
    let before = marker_calls(&server);
    let pop3 = server.pop3;
    tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "keeper", "pw");
        for _ in 0..50 {
            assert!(c.multi("RETR 1").0.starts_with("+OK"));
        }
        for n in 1..=100 {
            assert!(c.multi(&format!("RETR {n}")).0.starts_with("+OK"));
        }
        assert!(c.cmd("QUIT").starts_with("+OK"));
    })
    .await
    .unwrap();
    common::eventually("the session's retrievals were not recorded", || marker_calls(&server) - before >= 2.0);
    assert_eq!(marker_calls(&server) - before, 2.0, "marker calls for one session of 150 RETRs");
}

/// Item 13: a deleted message's own marker (the delivering trace, in the embedded store) goes
/// with it instead of piling up forever.
#[tokio::test]
async fn a_deleted_messages_markers_go_with_it() {
    use common::api::{INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("tidy", "pw");
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let frames = common::api::frames(&["tidy"], "", b"Subject: traced\r\n\r\nbody\r\n", 1000);
    let mut request = tonic::Request::new(tokio_stream::iter(frames));
    request
        .metadata_mut()
        .insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
    let id = ingest.deliver(request).await.unwrap().into_inner().results[0].message_id.clone();
    let marker = server.data_dir().join("maildrops/tidy/markers").join(format!("trace.{id}"));
    assert!(marker.exists(), "the delivery kept no trace marker to test with");
    let pop3 = server.pop3;
    tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "tidy", "pw");
        assert!(c.cmd("DELE 1").starts_with("+OK") && c.cmd("QUIT").starts_with("+OK"));
    })
    .await
    .unwrap();
    assert!(!marker.exists(), "the marker of a deleted message was left behind");
}

/// Item 11: a retry that arrives after the user deleted the message is a duplicate. Before, it
/// was stored again under the same id: a second copy for the user, and a reused UIDL.
#[tokio::test]
async fn a_retry_after_the_user_deleted_the_message_is_a_duplicate() {
    use cloudpop::api::proto::DeliveryStatus;
    use common::api::{INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("late", "pw");
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let message = b"Subject: once\r\n\r\nonly once\r\n";
    let first = common::api::deliver(&mut ingest, &["late"], "mta:77", message).await.unwrap();
    assert_eq!(first.results[0].status, DeliveryStatus::Stored as i32);
    let pop3 = server.pop3;
    tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "late", "pw");
        assert!(c.cmd("DELE 1").starts_with("+OK") && c.cmd("QUIT").starts_with("+OK"));
    })
    .await
    .unwrap();
    let retry = common::api::deliver(&mut ingest, &["late"], "mta:77", message).await.unwrap();
    assert_eq!(retry.results[0].status, DeliveryStatus::Duplicate as i32, "{retry:?}");
    assert_eq!(retry.results[0].message_id, first.results[0].message_id);
    let pop3 = server.pop3;
    let stat =
        tokio::task::spawn_blocking(move || common::Client::login(pop3, "late", "pw").cmd("STAT")).await.unwrap();
    assert_eq!(stat, "+OK 0 0", "the deleted message came back");
}

/// Item 12: sixteen simultaneous attempts of one delivery store one copy. Before, each found no
/// record and stored its own (up to 16 copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_attempts_of_one_delivery_store_one_copy() {
    use cloudpop::api::proto::DeliveryStatus;
    use common::api::{INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("racy", "pw");
    let api = server.api.unwrap();
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let mut ingest = common::api::ingest(api, Some(INGEST_TOKEN)).await;
                common::api::deliver(&mut ingest, &["racy"], "same-key", b"Subject: race\r\n\r\nbody\r\n").await
            })
        })
        .collect();
    let mut stored = 0;
    for attempt in attempts {
        // Stored once; the others are duplicates, or told to retry while the first is at work.
        match attempt.await.unwrap() {
            Ok(reply) if reply.results[0].status == DeliveryStatus::Stored as i32 => stored += 1,
            Ok(reply) => assert_eq!(reply.results[0].status, DeliveryStatus::Duplicate as i32, "{reply:?}"),
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }
    assert_eq!(stored, 1);
    let pop3 = server.pop3;
    let stat =
        tokio::task::spawn_blocking(move || common::Client::login(pop3, "racy", "pw").cmd("STAT")).await.unwrap();
    assert!(stat.starts_with("+OK 1 "), "{stat}");
}

/// Item 14: a delivery must end cleanly to be stored; one key names one message; a chunk of
/// the documented 4 MiB is accepted.
#[tokio::test]
async fn deliveries_that_do_not_end_cleanly_store_nothing() {
    use cloudpop::api::proto::DeliveryStatus;
    use common::api::{INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("whole", "pw");
    let api = format!("http://{}", server.api.unwrap());
    let env = vec![("CLOUDPOP_API_URL".to_string(), api), ("CLOUDPOP_API_TOKEN".to_string(), INGEST_TOKEN.to_string())];
    let dir = tempfile::tempdir().unwrap();
    // Input that fails half-way (a directory cannot be read): refused, nothing stored.
    let (ok, _, err) = cli_env(dir.path(), &env, &["deliver", "whole", dir.path().to_str().unwrap()], b"");
    assert!(!ok, "a failed read was delivered");
    assert!(err.contains("reading the message failed") || err.contains("End frame"), "{err}");
    // Two files under one key: refused before anything is sent.
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::write(&one, "Subject: 1\n\none\n").unwrap();
    std::fs::write(&two, "Subject: 2\n\ntwo\n").unwrap();
    let args = ["deliver", "whole", "--idempotency-key", "k1", one.to_str().unwrap(), two.to_str().unwrap()];
    let (ok, _, err) = cli_env(dir.path(), &env, &args, b"");
    assert!(!ok && err.contains("each file with its own key"), "{err}");
    // A single chunk of exactly 4 MiB.
    let mut message = b"Subject: big chunk\r\n\r\n".to_vec();
    message.resize(4 * 1024 * 1024, b'x');
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let frames = common::api::frames(&["whole"], "", &message, message.len());
    let reply = ingest.deliver(tokio_stream::iter(frames)).await.unwrap().into_inner();
    assert_eq!(reply.results[0].status, DeliveryStatus::Stored as i32);
    let pop3 = server.pop3;
    let stat =
        tokio::task::spawn_blocking(move || common::Client::login(pop3, "whole", "pw").cmd("STAT")).await.unwrap();
    assert!(stat.starts_with("+OK 1 "), "{stat}");
}

/// Item 20: files a crashed process left (a half-written message, a spooled delivery) are
/// removed at startup once they are old enough not to belong to a delivery in progress.
#[test]
fn crash_leftovers_are_removed_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmp = data.join("maildrops/crashed/tmp");
    let spool = data.join("spool");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&spool).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    let leftover = |path: std::path::PathBuf, old: bool| {
        std::fs::write(&path, "half a message").unwrap();
        if old {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(two_hours_ago).unwrap();
        }
        path
    };
    let old_tmp = leftover(tmp.join("0123.tmp"), true);
    let old_spool = leftover(spool.join("msg-old"), true);
    let young_spool = leftover(spool.join("msg-young"), false);
    let _server = Server::start_in(dir, &[]);
    common::eventually("old leftovers were not removed", || !old_tmp.exists() && !old_spool.exists());
    assert!(young_spool.exists(), "a young spool file (maybe a delivery in progress) was removed");
}

/// Item 16: an operator's EndSession wins over a QUIT that races it. The session had marked its
/// only message for deletion; the operator ends it and the client sends QUIT at once, before
/// the session's renewal loop looks at the request. Before, QUIT applied the deletion.
#[tokio::test]
async fn an_operator_end_beats_a_racing_quit() {
    use cloudpop::api::proto::{EndSessionRequest, ListSessionsRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("ended", "pw");
    server.deliver("ended", b"Subject: keep\r\n\r\nkeep me\r\n");
    let pop3 = server.pop3;
    let mut session = tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "ended", "pw");
        assert!(c.cmd("DELE 1").starts_with("+OK"));
        c
    })
    .await
    .unwrap();
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let sessions = admin.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions;
    let id = sessions.iter().find(|s| s.account == "ended").expect("session not listed").id.clone();
    admin.end_session(EndSessionRequest { id }).await.unwrap();
    let reply = tokio::task::spawn_blocking(move || session.cmd("QUIT")).await.unwrap();
    assert!(reply.starts_with("-ERR"), "QUIT after EndSession: {reply}");
    let stat = tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "ended", "pw");
        c.cmd("STAT")
    })
    .await
    .unwrap();
    assert!(stat.starts_with("+OK 1 "), "the ended session's deletion was applied: {stat}");
}

/// Item 16: a lock acquire that Redis applied but whose reply was lost does not lock the user
/// out for the whole lease. The relay swallows the reply to the maildrop's acquire script (the login gets
/// `[SYS/TEMP]`); the user's next attempt, seconds later, gets in. Before, the orphaned lease
/// answered `[IN-USE]` for its full 60 s.
#[test]
fn an_acquire_whose_reply_was_lost_does_not_lock_the_user_out() {
    use common::cloud::{Redis, ReplyDropper, S3, cloud_env};
    let (redis, s3) = (Redis::start(), S3::start());
    let bucket = s3.bucket("mail");
    let dropper = ReplyDropper::start(redis.port);
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.retain(|(k, _)| k != "CLOUDPOP_REDIS_URL");
    env.push(("CLOUDPOP_REDIS_URL".into(), dropper.url()));
    env.push(("CLOUDPOP_LOCK_LEASE_SECS".into(), "60".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("orphan", "pw");
    // A first login loads the acquire script, so the armed request below is the one that runs it
    // (not a NOSCRIPT answer that changed nothing).
    server.add_account("warm", "pw");
    common::Client::login(server.pop3, "warm", "pw").cmd("QUIT");
    dropper.arm(b"lock:{orphan}", Duration::from_secs(2));
    let mut c = common::Client::connect(server.pop3);
    c.cmd("USER orphan");
    let reply = c.cmd("PASS pw");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "login whose lock reply was lost: {reply}");
    common::eventually("still locked out by the orphaned lease", || {
        let mut c = common::Client::connect(server.pop3);
        c.cmd("USER orphan");
        c.cmd("PASS pw").starts_with("+OK")
    });
}

/// Store operations of one kind, whatever their outcome.
fn store_ops(metrics: &common::Metrics, operation: &str) -> f64 {
    metrics.sum("cloudpop_store_operations_total", &format!("operation=\"{operation}\""))
}

/// Item 15: a sweep round reads only the mailboxes that have something retained (before: every
/// account record, every hour), and one broken mailbox does not stop the round (before, the
/// first error ended it, so a mailbox sorted after a broken one was never swept).
#[tokio::test]
async fn a_sweep_round_reads_only_retained_mailboxes_and_survives_a_broken_one() {
    use cloudpop::api::proto::{Policy, SetPolicyRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let mut env = token_env().to_vec();
    env.push(("CLOUDPOP_SWEEP_INTERVAL_SECS", "1"));
    let server = Server::start(&env);
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    for name in ["aaa-broken", "zed"] {
        server.add_account(name, "pw");
        server.deliver(name, b"Subject: read once\r\n\r\nbody\r\n");
        let policy = Some(Policy { login_delay_secs: 0, expire_days: Some(0) });
        admin.set_policy(SetPolicyRequest { name: name.into(), policy, update_mask: None }).await.unwrap();
    }
    // Thirty accounts without a policy, as plain records beside them.
    let accounts = server.data_dir().join("accounts");
    let template = std::fs::read_to_string(accounts.join("zed.json")).unwrap();
    for i in 0..30 {
        let record =
            template.replace("\"zed\"", &format!("\"idle{i}\"")).replace("\"expire_days\": 0", "\"expire_days\": null");
        std::fs::write(accounts.join(format!("idle{i}.json")), record).unwrap();
    }
    let pop3 = server.pop3;
    tokio::task::spawn_blocking(move || {
        for name in ["aaa-broken", "zed"] {
            let mut c = common::Client::login(pop3, name, "pw");
            assert!(c.multi("RETR 1").0.starts_with("+OK"));
            assert!(c.cmd("QUIT").starts_with("+OK"));
        }
    })
    .await
    .unwrap();
    // The first mailbox's account record is now unreadable.
    std::fs::write(accounts.join("aaa-broken.json"), b"{ not json").unwrap();
    let before = server.metrics();
    common::eventually("zed's retrieved message was never swept", || {
        std::fs::read_dir(server.data_dir().join("maildrops/zed/cur")).unwrap().count() == 0
    });
    let after = server.metrics();
    let rounds = store_ops(&after, "ledgers") - store_ops(&before, "ledgers");
    let reads = store_ops(&after, "account_get") - store_ops(&before, "account_get");
    assert!(rounds >= 1.0, "no round ran");
    assert!(reads <= 2.0 * rounds, "{reads} account reads in {rounds} rounds with two retained mailboxes");
    assert!(server.log().contains("cannot sweep this mailbox"), "the broken mailbox was not reported");
}

/// Item 17: operator deletions take the maildrop lock like a session. While a POP3 session
/// holds the maildrop, DeleteMessages, PurgeMailbox and DeleteAccount are refused as "in use"
/// and change nothing under it (before, they deleted messages the session was listing and
/// about to retrieve); once it has ended they go through.
#[tokio::test]
async fn operator_deletions_wait_for_the_session_holding_the_maildrop() {
    use cloudpop::api::proto::{DeleteAccountRequest, DeleteMessagesRequest, ListMessagesRequest, PurgeMailboxRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let server = Server::start(&token_env());
    server.add_account("busy", "pw");
    for i in 0..3 {
        server.deliver("busy", format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes());
    }
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let list = ListMessagesRequest { name: "busy".into(), page_size: 0, page_token: String::new() };
    let ids: Vec<String> =
        admin.list_messages(list).await.unwrap().into_inner().messages.into_iter().map(|m| m.id).collect();
    let pop3 = server.pop3;
    let mut session = tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "busy", "pw");
        assert!(c.cmd("STAT").starts_with("+OK 3 "));
        c
    })
    .await
    .unwrap();
    let refusals = [
        admin
            .delete_messages(DeleteMessagesRequest { name: "busy".into(), ids: vec![ids[0].clone()] })
            .await
            .unwrap_err(),
        admin.purge_mailbox(PurgeMailboxRequest { name: "busy".into() }).await.unwrap_err(),
        admin.delete_account(DeleteAccountRequest { name: "busy".into() }).await.unwrap_err(),
    ];
    for status in refusals {
        assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
        assert!(status.message().contains("in use"), "{status:?}");
    }
    session = tokio::task::spawn_blocking(move || {
        for n in 1..=3 {
            assert!(session.multi(&format!("RETR {n}")).0.starts_with("+OK"), "message {n} vanished under the session");
        }
        assert!(session.cmd("QUIT").starts_with("+OK"));
        session
    })
    .await
    .unwrap();
    drop(session);
    let deleted = admin.delete_messages(DeleteMessagesRequest { name: "busy".into(), ids: vec![ids[0].clone()] }).await;
    assert_eq!(deleted.unwrap().into_inner().deleted, 1);
    assert_eq!(admin.purge_mailbox(PurgeMailboxRequest { name: "busy".into() }).await.unwrap().into_inner().deleted, 2);
    admin.delete_account(DeleteAccountRequest { name: "busy".into() }).await.unwrap();
}

/// Item 17: an account deleted and created again under the same name starts empty: no mail
/// that a delivery still in flight stored after the deletion, no idempotency records, no
/// retention ledger. Before, the new account showed the leftover message to its new owner.
#[tokio::test]
async fn a_recreated_account_inherits_nothing() {
    use cloudpop::api::proto::{CreateAccountRequest, DeleteAccountRequest, DeliveryStatus};
    use common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let create = || CreateAccountRequest { name: "reborn".into(), password: "pw".into(), quota: None, policy: None };
    admin.create_account(create()).await.unwrap();
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let old = b"Subject: for the old owner\r\n\r\nprivate\r\n";
    let first = common::api::deliver(&mut ingest, &["reborn"], "mta:1", old).await.unwrap();
    assert_eq!(first.results[0].status, DeliveryStatus::Stored as i32);
    let maildrop = server.data_dir().join("maildrops/reborn");
    let leftover = std::fs::read(maildrop.join("cur").join(&first.results[0].message_id)).unwrap();
    admin.delete_account(DeleteAccountRequest { name: "reborn".into() }).await.unwrap();
    // What a delivery that was still being stored during the deletion leaves behind.
    std::fs::create_dir_all(maildrop.join("cur")).unwrap();
    let late_id = cloudpop::store::ids::new_message_id();
    std::fs::write(maildrop.join("cur").join(&late_id), &leftover).unwrap();
    admin.create_account(create()).await.unwrap();
    let pop3 = server.pop3;
    let stat =
        tokio::task::spawn_blocking(move || common::Client::login(pop3, "reborn", "pw").cmd("STAT")).await.unwrap();
    assert_eq!(stat, "+OK 0 0", "the new account inherited the old one's mail");
    let again =
        common::api::deliver(&mut ingest, &["reborn"], "mta:1", b"Subject: new\r\n\r\nnew owner\r\n").await.unwrap();
    assert_eq!(again.results[0].status, DeliveryStatus::Stored as i32, "the old idempotency record was inherited");
}

/// Item 19: batch deletes work against stores that require Content-MD5 (sent now; before, only
/// the SDK's CRC32 checksum went, and such a store refused every QUIT's deletions), and against
/// stores that refuse DeleteObjects altogether (one DeleteObject per key from the first refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_work_on_stores_that_need_content_md5_or_have_no_batch_delete() {
    use cloudpop::names::AccountName;
    use cloudpop::store::MessageStore;
    use cloudpop::store::s3::{S3Settings, S3Store};
    use common::cloud::{BatchDeletes, S3, S3_ACCESS_KEY, S3_SECRET_KEY, S3Gate};
    use std::sync::atomic::Ordering::SeqCst;
    for rule in [BatchDeletes::RequireContentMd5, BatchDeletes::Refuse] {
        let s3 = S3::start();
        let gate = S3Gate::start(s3.port, rule);
        let settings = S3Settings {
            endpoint: gate.endpoint(),
            region: "us-east-1".into(),
            bucket: s3.bucket("older"),
            prefix: "p".into(),
            path_style: true,
            access_key: Some((S3_ACCESS_KEY.into(), cloudpop::secret::Secret::new(S3_SECRET_KEY))),
            timeout: Duration::from_secs(5),
            max_attempts: 2,
        };
        let store = S3Store::new(&settings).await;
        let md = AccountName::parse("older").unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut m = store.create(&md).await.unwrap();
            m.write(format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes()).await.unwrap();
            ids.push(m.commit().await.unwrap().id);
        }
        let report = store.remove(&md, &ids[..3]).await.unwrap();
        assert_eq!((report.removed, report.failed.len()), (3, 0));
        store.remove_maildrop(&md).await.unwrap();
        assert!(store.list(&md).await.unwrap().is_empty(), "messages survived their deletion");
        let (passed, refused) = (gate.batches_passed.load(SeqCst), gate.batches_refused.load(SeqCst));
        match rule {
            BatchDeletes::RequireContentMd5 => assert_eq!((passed, refused), (2, 0), "batches must carry Content-MD5"),
            BatchDeletes::Refuse => assert_eq!((passed, refused), (0, 1), "one refusal, then single deletes"),
            _ => unreachable!(),
        }
    }
}

/// Issue 22 item 18: an operator's EndSession stops a long RETR too (at the next renewal of the
/// lease, the reply cut short), not only a session waiting for its next command; before, the
/// transfer went on to its end while another frontend could already hold the maildrop.
#[tokio::test(flavor = "multi_thread")]
async fn an_operators_end_stops_a_long_transfer() {
    use cloudpop::api::proto::{EndSessionRequest, ListSessionsRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let mut env = vec![("CLOUDPOP_LOCK_LEASE_SECS", "3")];
    env.extend(token_env());
    let server = Server::start(&env);
    server.add_account("reader", "pw");
    let big = common::message("big", 1_000_000); // about 30 MB
    server.deliver("reader", &big);
    let pop3 = server.pop3;
    let mut c = tokio::task::spawn_blocking(move || {
        let mut c = common::Client::login(pop3, "reader", "pw");
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        c
    })
    .await
    .unwrap();
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let sessions = admin.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions;
    admin.end_session(EndSessionRequest { id: sessions[0].id.clone() }).await.unwrap();
    // A client reading at 5 MB/s would take about 6 s for the whole message.
    let (read, closed) = tokio::task::spawn_blocking(move || {
        c.read_slowly(256 * 1024, Duration::from_millis(50), Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(closed, "the connection stayed open");
    assert!(read < big.len() as u64, "the whole message was sent after the session was ended");
}

/// Issue 22 item 18: the smaller ones. CreateAccount keeps SetPolicy's bounds (a LOGIN-DELAY of
/// years was accepted and then overflowed Redis's expiry); a kept UIDL cannot copy the UIDL of
/// a message delivered here; and a login whose listing failed does not count for LOGIN-DELAY.
#[tokio::test(flavor = "multi_thread")]
async fn policy_bounds_kept_uidls_and_login_delay_after_a_failed_listing() {
    use cloudpop::api::proto::{CreateAccountRequest, Policy};
    use common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let policy = Policy { login_delay_secs: 1_000_000_000, expire_days: None };
    let create =
        CreateAccountRequest { name: "eternal".into(), password: "pw".into(), policy: Some(policy), quota: None };
    let refused = admin.create_account(create).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(!server.data_dir().join("accounts/eternal.json").exists(), "a refused account was created");

    let policy = Policy { login_delay_secs: 600, expire_days: None };
    let create =
        CreateAccountRequest { name: "delayed".into(), password: "pw".into(), policy: Some(policy), quota: None };
    admin.create_account(create).await.unwrap();
    let mut ingest = common::api::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let first = common::api::deliver(&mut ingest, &["delayed"], "k1", b"Subject: 1\r\n\r\nx\r\n").await.unwrap();
    let native_uidl = first.results[0].message_id.clone();
    let mut frames = common::api::frames(&["delayed"], "k2", b"Subject: 2\r\n\r\ny\r\n", 1000);
    if let Some(cloudpop::api::proto::deliver_request::Frame::Envelope(envelope)) = &mut frames[0].frame {
        envelope.uidl = native_uidl.clone();
    }
    let copied = ingest.deliver(tokio_stream::iter(frames)).await.unwrap_err();
    assert_eq!(copied.code(), tonic::Code::InvalidArgument, "a kept UIDL copied a native one: {copied:?}");

    // The maildrop cannot be listed (a file where its directory should be): the login fails,
    // and once the maildrop is back the user gets in at once, not after LOGIN-DELAY.
    let maildrop = server.data_dir().join("maildrops/delayed");
    let aside = server.data_dir().join("maildrops-aside");
    std::fs::rename(&maildrop, &aside).unwrap();
    std::fs::write(&maildrop, b"not a directory").unwrap();
    let pop3 = server.pop3;
    let login = |pop3| {
        let mut c = common::Client::connect(pop3);
        c.cmd("USER delayed");
        let reply = c.cmd("PASS pw");
        c.cmd("QUIT");
        reply
    };
    let failed = tokio::task::spawn_blocking(move || login(pop3)).await.unwrap();
    assert!(failed.starts_with("-ERR [SYS/TEMP]"), "{failed}");
    std::fs::remove_file(&maildrop).unwrap();
    std::fs::rename(&aside, &maildrop).unwrap();
    let again = tokio::task::spawn_blocking(move || login(pop3)).await.unwrap();
    assert!(again.starts_with("+OK"), "a failed login counted for LOGIN-DELAY: {again}");
}
