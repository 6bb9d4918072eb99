//! A pool of `cloudpop serve` processes sharing one real Redis and one real S3 server: the
//! cluster-wide promises of DESIGN.md under contention, crashes and dependency outages.

use crate::common;
use common::cloud::{Redis, S3, cloud_env};
use common::{Client, Server, message};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Pool {
    redis: Redis,
    s3: S3,
    frontends: Vec<Server>,
}

fn pool(size: usize, extra: &[(&str, &str)]) -> Pool {
    let redis = Redis::start();
    let s3 = S3::start();
    let bucket = s3.bucket("mail");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let frontends = (0..size).map(|_| Server::start_with(tempfile::tempdir().unwrap(), env.clone())).collect();
    Pool { redis, s3, frontends }
}

/// Redis's subscribed client connections: (id, age in seconds).
fn subscriptions(redis: &mut redis::Connection) -> Vec<(u64, u64)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query(redis).unwrap();
    list.lines()
        .map(|line| {
            let field = |name: &str| {
                line.split(' ').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap()
            };
            (field("id"), field("age"))
        })
        .collect()
}

/// Connects and sends USER/PASS; returns the client and the reply to PASS.
pub(crate) fn try_login(server: &Server, user: &str) -> (Client, String) {
    let mut c = Client::connect(server.pop3);
    c.cmd(&format!("USER {user}"));
    let reply = c.cmd("PASS secret");
    (c, reply)
}

fn uids(c: &mut Client) -> Vec<String> {
    c.lines("UIDL").iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect()
}

/// Retries a login until it succeeds or `within` passes; returns the client and the time taken.
pub(crate) fn login_within(server: &Server, user: &str, within: Duration) -> (Client, Duration) {
    let started = Instant::now();
    loop {
        let (c, reply) = try_login(server, user);
        if reply.starts_with("+OK") {
            return (c, started.elapsed());
        }
        assert!(started.elapsed() < within, "no login within {within:?}; last reply: {reply}");
        std::thread::sleep(Duration::from_millis(100)); // a retrying client's pace
    }
}

#[test]
fn a_maildrop_is_locked_across_the_pool() {
    let pool = pool(2, &[]);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    a.deliver("alice", &message("hello", 3));
    let (mut first, reply) = try_login(a, "alice");
    assert!(reply.starts_with("+OK"), "{reply}");
    let (_, reply) = try_login(b, "alice");
    assert!(reply.starts_with("-ERR [IN-USE]"), "second login elsewhere in the pool: {reply}");
    assert!(first.cmd("QUIT").starts_with("+OK"));
    let (mut second, reply) = try_login(b, "alice");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(second.cmd("STAT").split(' ').nth(1), Some("1"));
}

#[test]
fn a_killed_frontend_frees_its_lock_within_the_lease_and_applies_nothing() {
    let lease = Duration::from_secs(3);
    let pool = pool(2, &[("CLOUDPOP_LOCK_LEASE_SECS", "3")]);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    for i in 0..3 {
        a.deliver("alice", &message(&format!("m{i}"), 2));
    }
    let (mut doomed, reply) = try_login(a, "alice");
    assert!(reply.starts_with("+OK"));
    let before = uids(&mut doomed);
    assert!(doomed.cmd("DELE 1").starts_with("+OK") && doomed.cmd("DELE 3").starts_with("+OK"));
    // The bound is the lease's own expiry in Redis: what is left of it when the holder died is
    // at most one lease (renewals included: one is seen before the kill), and the maildrop is
    // free as soon as it runs out (and not before).
    let mut redis = redis::Client::open(pool.redis.url()).unwrap().get_connection().unwrap();
    let mut pttl = || -> i64 { redis::cmd("PTTL").arg("cloudpop:lock:{alice}").query(&mut redis).unwrap() };
    let first = pttl();
    common::eventually("the session's lease was never renewed", || pttl() > first);
    a.signal("-KILL");
    let left = pttl();
    let killed_at = Instant::now();
    assert!(left > 0 && left <= lease.as_millis() as i64, "the lock's time to live was {left} ms");
    let left = Duration::from_millis(left as u64);
    let (_, reply) = try_login(b, "alice");
    assert!(reply.starts_with("-ERR [IN-USE]"), "the lock went before its lease ran out: {reply}");
    // Retried every 100 ms, with time for one login's work after the expiry.
    let (mut c, _) = login_within(b, "alice", left + Duration::from_millis(600));
    let freed_after = killed_at.elapsed();
    assert!(freed_after >= left.saturating_sub(Duration::from_millis(50)), "free after {freed_after:?} of {left:?}");
    assert_eq!(uids(&mut c), before, "the killed session's DELE marks were applied");
}

#[test]
fn redis_outage_ends_sessions_safely_and_service_resumes() {
    let mut pool = pool(2, &[("CLOUDPOP_LOCK_LEASE_SECS", "3")]);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    a.add_account("bob", "secret");
    a.deliver("alice", &message("keep me", 2));
    a.deliver("bob", &message("keep me too", 2));
    let (mut quitter, _) = login_within(a, "alice", Duration::from_secs(5));
    let (mut idler, _) = login_within(b, "bob", Duration::from_secs(5));
    assert!(quitter.cmd("DELE 1").starts_with("+OK"));
    assert!(idler.cmd("DELE 1").starts_with("+OK"));

    pool.redis.stop();
    // QUIT cannot confirm the lease: nothing may be deleted.
    let reply = quitter.cmd("QUIT");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "QUIT without Redis: {reply}");
    // An idle session notices the lost lease by itself and ends.
    let reply = idler.line();
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "idle session without Redis: {reply}");
    assert!(idler.is_closed());
    // New logins are refused as temporary failures.
    let (_, reply) = try_login(&pool.frontends[0], "alice");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "login without Redis: {reply}");

    pool.redis.restart();
    for user in ["alice", "bob"] {
        let (mut c, _) = login_within(&pool.frontends[1], user, Duration::from_secs(10));
        assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("1"), "{user} lost mail during the outage");
        c.cmd("QUIT");
    }
}

#[test]
fn object_store_outage_gives_sys_temp_and_loses_nothing() {
    let mut pool = pool(2, &[]);
    let a = &pool.frontends[0];
    a.add_account("alice", "secret");
    let m = message("precious", 20);
    a.deliver("alice", &m);
    let (mut c, _) = login_within(a, "alice", Duration::from_secs(5));

    pool.s3.stop();
    let reply = c.cmd("RETR 1");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "RETR without S3: {reply}");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    let reply = c.cmd("QUIT");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "QUIT without S3: {reply}");
    let (_, reply) = try_login(&pool.frontends[1], "alice");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "login without S3: {reply}");

    pool.s3.restart();
    let (mut c, _) = login_within(&pool.frontends[1], "alice", Duration::from_secs(10));
    assert_eq!(c.multi("RETR 1").1, m, "message changed or lost across the outage");
}

#[test]
fn mail_delivered_through_another_frontend_during_a_session() {
    let pool = pool(2, &[]);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    let old = a.deliver("alice", &message("old", 1));
    let (mut c, _) = login_within(a, "alice", Duration::from_secs(5));
    let new = b.deliver("alice", &message("new", 1));
    assert_eq!(uids(&mut c), [old], "new mail leaked into the snapshot");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let (mut c, _) = login_within(b, "alice", Duration::from_secs(5));
    assert_eq!(uids(&mut c), [new]);
}

/// What one hammering client saw.
#[derive(Default)]
struct Tally {
    sessions: usize,
    in_use: usize,
    deleted: Vec<(String, String)>,
    problems: Vec<String>,
}

#[test]
fn fifty_clients_ten_mailboxes_three_frontends() {
    // The 50 clients stand for 50 users at 50 addresses, but all connect from 127.0.0.1: an
    // attempt counts against its address until answered, so one address needs room for them.
    let pool = pool(3, &[("CLOUDPOP_THROTTLE_ADDRESS_FAILURES", "1000")]);
    let mailboxes: Vec<String> = (0..10).map(|i| format!("box{i}")).collect();
    let mut delivered: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (i, mailbox) in mailboxes.iter().enumerate() {
        pool.frontends[i % 3].add_account(mailbox, "secret");
        for j in 0..6 {
            let id = pool.frontends[j % 3].deliver(mailbox, &message(&format!("{mailbox} {j}"), 3));
            delivered.entry(mailbox.clone()).or_default().insert(id);
        }
    }
    let addrs: Vec<_> = pool.frontends.iter().map(|f| f.pop3).collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let threads: Vec<_> = (0..50)
        .map(|client| {
            let (addrs, mailboxes, tally) = (addrs.clone(), mailboxes.clone(), tally.clone());
            std::thread::spawn(move || {
                for round in 0..6 {
                    let mailbox = &mailboxes[(client * 7 + round * 3) % mailboxes.len()];
                    // A refused client waits a little and tries again, like a real one would.
                    let mut attempt = 0;
                    let mut c = loop {
                        let mut c = Client::connect(addrs[(client + round + attempt) % addrs.len()]);
                        c.cmd(&format!("USER {mailbox}"));
                        let reply = c.cmd("PASS secret");
                        if reply.starts_with("+OK") {
                            break Some(c);
                        }
                        let mut tally = tally.lock().unwrap();
                        if !reply.contains("[IN-USE]") {
                            tally.problems.push(format!("login refused: {reply}"));
                            break None;
                        }
                        tally.in_use += 1;
                        attempt += 1;
                        if attempt == 20 {
                            break None;
                        }
                        drop(tally);
                        std::thread::sleep(Duration::from_millis(25 * attempt as u64));
                    };
                    let Some(c) = c.as_mut() else { continue };
                    let mut t = Vec::new();
                    let ids = uids(c);
                    for (n, id) in ids.iter().enumerate() {
                        let (status, body) = c.multi(&format!("RETR {}", n + 1));
                        if !status.starts_with("+OK") || !String::from_utf8_lossy(&body).contains(mailbox.as_str()) {
                            tally.lock().unwrap().problems.push(format!("RETR {id} in {mailbox}: {status}"));
                        }
                        // Delete roughly one message in four.
                        if (n + client + round) % 4 == 0 {
                            assert!(c.cmd(&format!("DELE {}", n + 1)).starts_with("+OK"));
                            t.push((mailbox.clone(), id.clone()));
                        }
                    }
                    let bye = c.cmd("QUIT");
                    let mut tally = tally.lock().unwrap();
                    if bye.starts_with("+OK") {
                        tally.deleted.extend(t);
                    } else {
                        tally.problems.push(format!("QUIT: {bye}"));
                    }
                    tally.sessions += 1;
                }
            })
        })
        .collect();
    // More mail arrives while the clients hammer.
    let mut late = HashMap::<String, BTreeSet<String>>::new();
    for round in 0..3 {
        for (i, mailbox) in mailboxes.iter().enumerate() {
            let id = pool.frontends[(i + round) % 3].deliver(mailbox, &message(&format!("{mailbox} late {round}"), 2));
            late.entry(mailbox.clone()).or_default().insert(id);
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    assert!(tally.problems.is_empty(), "{:#?}", tally.problems);
    assert!(tally.sessions >= 150, "only {} sessions got through ({} refused as in use)", tally.sessions, tally.in_use);

    let mut deleted: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (mailbox, id) in &tally.deleted {
        assert!(deleted.entry(mailbox.clone()).or_default().insert(id.clone()), "{id} deleted by two sessions");
    }
    for mailbox in &mailboxes {
        let (mut c, _) = login_within(&pool.frontends[0], mailbox, Duration::from_secs(10));
        let remaining: BTreeSet<String> = uids(&mut c).into_iter().collect();
        let gone = deleted.get(mailbox).cloned().unwrap_or_default();
        let mut all = delivered[mailbox].clone();
        all.extend(late[mailbox].iter().cloned());
        assert!(remaining.is_disjoint(&gone), "{mailbox}: a deleted message came back");
        let accounted: BTreeSet<String> = remaining.union(&gone).cloned().collect();
        assert_eq!(accounted, all, "{mailbox}: messages lost or invented");
        c.cmd("QUIT");
    }
}

#[test]
fn failed_login_throttle_is_shared_by_the_pool() {
    let pool = pool(2, &[("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "3"), ("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0")]);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    // Three wrong guesses, each on a new connection, spread over the pool.
    for server in [a, b, a] {
        let mut c = Client::connect(server.pop3);
        c.cmd("USER alice");
        assert_eq!(c.cmd("PASS guess"), "-ERR [AUTH] Authentication failed");
    }
    // Now even the right password is refused, on every frontend, as a temporary condition.
    for server in [b, a] {
        let (_, reply) = try_login(server, "alice");
        assert_eq!(reply, "-ERR [SYS/TEMP] Too many failed logins, try again later");
    }
}

#[test]
fn a_store_that_hangs_gives_sys_temp_not_a_hang() {
    // An "S3 server" that accepts connections and never answers.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in blackhole.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let redis = Redis::start();
    let s3 = S3::start();
    let mut env = cloud_env(&s3, "mail", &redis);
    env.retain(|(k, _)| k != "CLOUDPOP_S3_ENDPOINT" && k != "CLOUDPOP_S3_TIMEOUT_SECS");
    env.extend([
        ("CLOUDPOP_S3_ENDPOINT".to_string(), endpoint),
        ("CLOUDPOP_S3_TIMEOUT_SECS".into(), "1".into()),
        ("CLOUDPOP_S3_MAX_ATTEMPTS".into(), "2".into()),
    ]);
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    let started = Instant::now();
    let (_, reply) = try_login(&server, "alice");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!held.lock().unwrap().is_empty(), "the store was never called");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_and_end_sessions_across_the_pool() {
    use cloudpop::api::proto::{EndSessionRequest, ListSessionsRequest};
    use common::api::{self as grpc, ADMIN_TOKEN, token_env};
    let mut extra = vec![("CLOUDPOP_LOCK_LEASE_SECS", "3")];
    extra.extend(token_env());
    let pool = pool(2, &extra);
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("alice", "secret");
    a.add_account("bob", "secret");
    a.deliver("alice", &message("keep", 1));
    let (mut alice, _) = login_within(a, "alice", Duration::from_secs(5));
    let (_bob, _) = login_within(b, "bob", Duration::from_secs(5));
    assert!(alice.cmd("DELE 1").starts_with("+OK"));

    let mut admin = grpc::admin(b.api.unwrap(), Some(ADMIN_TOKEN)).await;
    // A session is registered before its login is answered.
    let sessions = admin.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions;
    let accounts: BTreeSet<&str> = sessions.iter().map(|s| s.account.as_str()).collect();
    assert_eq!(accounts, BTreeSet::from(["alice", "bob"]), "{sessions:?}");
    assert_ne!(sessions[0].frontend, sessions[1].frontend, "both sessions claim one frontend");

    let target = sessions.iter().find(|s| s.account == "alice").unwrap().id.clone();
    admin.end_session(EndSessionRequest { id: target }).await.unwrap();
    let reply = tokio::task::spawn_blocking(move || alice.line()).await.unwrap();
    assert_eq!(reply, "-ERR [SYS/TEMP] Session ended by an administrator; nothing was changed");
    let (mut again, _) = login_within(b, "alice", Duration::from_secs(5));
    assert_eq!(again.cmd("STAT").split(' ').nth(1), Some("1"), "the ended session's DELE was applied");
    let err = admin.end_session(EndSessionRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// S3 GetObject requests a frontend has made so far.
fn s3_gets(server: &Server) -> f64 {
    let metrics = server.metrics();
    metrics
        .keys()
        .filter(|k| k.starts_with("cloudpop_s3_requests_total{") && k.contains("operation=\"GetObject\""))
        .map(|k| metrics.get(k))
        .sum()
}

/// Polls a login on `server` until it gives the wanted answer; fails after a second.
pub(crate) fn within_a_second(server: &Server, user: &str, password: &str, accepted: bool) {
    let started = Instant::now();
    loop {
        let mut c = Client::connect(server.pop3);
        c.cmd(&format!("USER {user}"));
        let reply = c.cmd(&format!("PASS {password}"));
        if reply.starts_with("+OK") {
            // Lets go of the maildrop before the next attempt needs it.
            assert!(c.cmd("QUIT").starts_with("+OK"));
        }
        // A maildrop still held by the previous attempt says nothing about the password, and
        // a refusal counts only as the password's ([AUTH]), not an outage's ([SYS/TEMP]).
        let settled = if accepted { reply.starts_with("+OK") } else { reply.starts_with("-ERR [AUTH] ") };
        if settled {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{user}/{password} still gets {reply} after a second");
    }
}

/// Issue 10: account records are cached on each frontend (a repeated login, and a repeated
/// unknown name, read no record from S3), and a change made through any frontend's API or the
/// command line holds on every other frontend within a second.
#[test]
fn account_records_are_cached_and_changes_reach_every_frontend_at_once() {
    use cloudpop::api::proto::{CreateAccountRequest, SetEnabledRequest, SetPasswordRequest};
    use common::api::{ADMIN_TOKEN, token_env};
    let pool = pool(2, &token_env());
    let (a, b) = (&pool.frontends[0], &pool.frontends[1]);
    a.add_account("carol", "secret");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut admin = runtime.block_on(common::api::admin(a.api.unwrap(), Some(ADMIN_TOKEN)));

    // The feed subscribes right after start: wait until b serves from its cache.
    common::eventually("b never served a record from its cache", || {
        Client::login(b.pop3, "carol", "secret").cmd("QUIT");
        b.metrics().get("cloudpop_account_cache_hits_total{}") > 0.0
    });
    let before = s3_gets(b);
    Client::login(b.pop3, "carol", "secret").cmd("QUIT");
    for _ in 0..2 {
        let (_, reply) = try_login(b, "nobody-here");
        assert!(reply.starts_with("-ERR"), "{reply}");
    }
    // One read for the unknown name, none for carol.
    assert_eq!(s3_gets(b) - before, 1.0, "account records read from S3 despite the cache");

    runtime
        .block_on(admin.set_password(SetPasswordRequest { name: "carol".into(), password: "changed".into() }))
        .unwrap();
    within_a_second(b, "carol", "secret", false);
    within_a_second(b, "carol", "changed", true);

    runtime.block_on(admin.set_enabled(SetEnabledRequest { name: "carol".into(), enabled: false })).unwrap();
    within_a_second(b, "carol", "changed", false);
    runtime.block_on(admin.set_enabled(SetEnabledRequest { name: "carol".into(), enabled: true })).unwrap();
    within_a_second(b, "carol", "changed", true);

    // The command line writes the store directly and announces the change too.
    let args = ["account", "passwd", "carol", "--password-stdin"];
    let (ok, _, err) = common::cli_env(&a.data_dir(), &a.env, &args, b"from-cli\n");
    assert!(ok, "{err}");
    within_a_second(b, "carol", "from-cli", true);

    // A remembered absence ends when the account is created elsewhere.
    let create = CreateAccountRequest { name: "nobody-here".into(), password: "secret".into(), ..Default::default() };
    runtime.block_on(admin.create_account(create)).unwrap();
    within_a_second(b, "nobody-here", "secret", true);

    // The feed's keepalive (a PING every 5 s, answered differently on a subscribed connection)
    // must not end it: both frontends' subscriptions live through two keepalives, and b still
    // serves carol without reading her record. A dropped feed resubscribes on a new connection
    // (so no subscription would grow that old) and clears b's cache.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", pool.redis.port)).unwrap();
    let mut redis = client.get_connection().unwrap();
    let first = subscriptions(&mut redis);
    assert_eq!(first.len(), 2, "one subscription per frontend: {first:?}");
    common::eventually("a subscription did not live through two keepalives", || {
        let now = subscriptions(&mut redis);
        now.len() == 2 && now.iter().all(|&(_, age)| age >= 11)
    });
    let ids = |list: Vec<(u64, u64)>| list.into_iter().map(|(id, _)| id).collect::<BTreeSet<_>>();
    assert_eq!(ids(subscriptions(&mut redis)), ids(first), "a frontend resubscribed");
    let before = s3_gets(b);
    Client::login(b.pop3, "carol", "from-cli").cmd("QUIT");
    assert_eq!(s3_gets(b) - before, 0.0, "the account change feed did not survive its keepalive");
}

/// Issue 22 item 12: a record change whose announcement was lost (counted, but its PUBLISH
/// never reached the frontend) still ends the frontend's stale entry within a few seconds, and
/// a remembered absence never bounces mail for an account created meanwhile. Before, the stale
/// password kept working, and deliveries got 550, for `account_cache_secs`.
#[test]
fn lost_account_announcements_leave_no_stale_records_for_long() {
    use common::api::{INGEST_TOKEN, token_env};
    let extra = [token_env().as_slice(), &[("CLOUDPOP_ACCOUNT_CACHE_SECS", "600")]].concat();
    let pool = pool(1, &extra);
    let b = &pool.frontends[0];
    b.add_account("dana", "secret");
    common::eventually("b never served a record from its cache", || {
        Client::login(b.pop3, "dana", "secret").cmd("QUIT");
        b.metrics().get("cloudpop_account_cache_hits_total{}") > 0.0
    });
    // A writer that cannot announce (no Redis in its configuration): the change is in the
    // store, and the pool's change counter moves as if the PUBLISH had been lost.
    let bucket = pool.s3.bucket("mail");
    let mut silent = common::cloud::cloud_env_without_redis(&pool.s3, &bucket);
    silent.push(("CLOUDPOP_LOCKS".into(), "memory".into()));
    silent.push(("CLOUDPOP_SINGLE_FRONTEND".into(), "true".into()));
    let args = ["account", "passwd", "dana", "--password-stdin"];
    let (ok, _, err) = common::cli_env(&b.data_dir(), &silent, &args, b"changed\n");
    assert!(ok, "{err}");
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", pool.redis.port)).unwrap();
    let mut redis = client.get_connection().unwrap();
    let _: i64 = redis::cmd("INCR").arg("cloudpop:accounts:changes").query(&mut redis).unwrap();
    let started = Instant::now();
    loop {
        let mut c = Client::connect(b.pop3);
        c.cmd("USER dana");
        let reply = c.cmd("PASS secret");
        c.cmd("QUIT");
        if reply.starts_with("-ERR [AUTH]") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(12), "the old password still works after 12 s: {reply}");
        std::thread::sleep(Duration::from_millis(200)); // a client's own retry pace
    }

    // b remembers that "erin" has no mailbox; the account is then created without a word.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ingest = runtime.block_on(common::api::ingest(b.api.unwrap(), Some(INGEST_TOKEN)));
    let first = runtime.block_on(common::api::deliver(&mut ingest, &["erin"], "k1", b"Subject: 1\r\n\r\nx\r\n"));
    assert_eq!(first.unwrap_err().code(), tonic::Code::NotFound, "a delivery to nobody was accepted");
    let args = ["account", "add", "erin", "--password-stdin"];
    let (ok, _, err) = common::cli_env(&b.data_dir(), &silent, &args, b"pw\n");
    assert!(ok, "{err}");
    let second = runtime.block_on(common::api::deliver(&mut ingest, &["erin"], "k2", b"Subject: 2\r\n\r\ny\r\n"));
    assert_eq!(
        second.unwrap().results[0].status,
        cloudpop::api::proto::DeliveryStatus::Stored as i32,
        "mail for a new account bounced on a remembered absence"
    );
}

/// Issue 22 item 9: a frontend whose host clock is 15 minutes behind delivers into a maildrop
/// whose index another frontend wrote: the message is listed (ids come from the pool's clock,
/// Redis's `TIME`), and the skew shows in `cloudpop_clock_offset_ms` and `/readyz`. Before, the
/// slow frontend's id sorted under the index's watermark with no late-arrival marker (by its
/// own clock it was not late), and the message was hidden for good.
#[test]
fn a_frontend_with_a_slow_clock_hides_no_mail() {
    use common::api::{INGEST_TOKEN, token_env};
    let pool = pool(1, &token_env());
    let a = &pool.frontends[0];
    let bucket = pool.s3.bucket("mail");
    let mut slow_env = cloud_env(&pool.s3, &bucket, &pool.redis);
    slow_env.extend(token_env().iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // libfaketime (Debian's faketime) moves this process's wall clock only; preloaded into the
    // server itself, so the PID the test kills is the server's.
    let library = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketime.so.1"))
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("libfaketime (run scripts/test, which installs faketime)");
    slow_env.push(("LD_PRELOAD".into(), library));
    slow_env.push(("FAKETIME".into(), "-15m".into()));
    slow_env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
    let b = Server::start_with(tempfile::tempdir().unwrap(), slow_env);
    b.wait_ready(200);
    common::eventually("the slow clock was never measured", || {
        let offset = b.metrics().get("cloudpop_clock_offset_ms{}");
        (800_000.0..1_000_000.0).contains(&offset)
    });
    assert!(b.ops_get("/readyz").1.contains("clock"), "{}", b.ops_get("/readyz").1);

    // 120 messages received yesterday: the first session's QUIT writes the maildrop's index.
    a.add_account("ida", "secret");
    let mbox: String = (0..120)
        .map(|i| {
            format!(
                "From old@example.org Mon Dec  1 10:{:02}:{:02} 2025\nSubject: old {i}\n\nbody {i}\n\n",
                i / 60,
                i % 60
            )
        })
        .collect();
    let file = a.dir.path().join("old.mbox");
    std::fs::write(&file, mbox).unwrap();
    let (ok, out, err) =
        common::cli_env(&a.data_dir(), &a.env, &["import", "mbox", &format!("ida={}", file.display())], b"");
    assert!(ok, "{out}{err}");
    let (mut c, _) = login_within(a, "ida", Duration::from_secs(5));
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("120"));
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // A delivery through the slow frontend.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ingest = runtime.block_on(common::api::ingest(b.api.unwrap(), Some(INGEST_TOKEN)));
    let sent = runtime.block_on(common::api::deliver(
        &mut ingest,
        &["ida"],
        "slow-1",
        b"Subject: new\r\n\r\nfrom the slow frontend\r\n",
    ));
    assert_eq!(sent.unwrap().results[0].status, cloudpop::api::proto::DeliveryStatus::Stored as i32);
    let (mut c, _) = login_within(a, "ida", Duration::from_secs(5));
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("121"), "the slow frontend's message is hidden");
}

/// Issue 22 item 1, pool-wide: 60 users behind one address log in at once, with their right
/// passwords, spread over three frontends sharing Redis: every login gets +OK (before, the
/// attempts in flight counted as failures in Redis and many were refused as "Too many failed
/// logins").
#[test]
fn correct_logins_from_one_address_across_the_pool_are_all_accepted() {
    let pool = pool(3, &[("CLOUDPOP_THROTTLE_ADDRESS_FAILURES", "5")]);
    let a = &pool.frontends[0];
    let passwd: String = (0..60).map(|i| format!("nat{i}:{{PLAIN}}secret::::::\n")).collect();
    let file = a.dir.path().join("nat.passwd");
    std::fs::write(&file, passwd).unwrap();
    let args = ["import", "accounts", file.to_str().unwrap(), "--allow-plain"];
    let (ok, out, err) = common::cli_env(&a.data_dir(), &a.env, &args, b"");
    assert!(ok, "{out}{err}");
    let replies: Vec<String> = std::thread::scope(|scope| {
        let logins: Vec<_> = (0..60)
            .map(|i| {
                let server = &pool.frontends[i % 3];
                scope.spawn(move || try_login(server, &format!("nat{i}")).1)
            })
            .collect();
        logins.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let refused: Vec<&String> = replies.iter().filter(|r| !r.starts_with("+OK")).collect();
    assert!(refused.is_empty(), "{} of 60 correct logins refused: {refused:?}", refused.len());
}
