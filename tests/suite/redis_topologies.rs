//! A pool of `cloudpop serve` processes on the two scaled-out Redis deployments: a real
//! three-primary Redis Cluster, and a real primary and replica under Redis Sentinel through
//! a demotion and a crash of the primary.

use crate::common;
use crate::pool::{login_within, try_login, within_a_second};
use cloudpop::api::proto::{ListSessionsRequest, SetPasswordRequest};
use common::api::{ADMIN_TOKEN, token_env};
use common::cloud::{RedisCluster, RedisSentinel, S3, SENTINEL_MASTER, cloud_env_without_redis};
use common::{Client, Server, message};
use std::time::Duration;

/// `count` frontends in cloud mode on `s3` and the Redis that `redis` describes.
fn frontends(count: usize, s3: &S3, redis: &[(&str, String)], extra: &[(&str, &str)]) -> Vec<Server> {
    let bucket = s3.bucket("mail");
    let mut env = cloud_env_without_redis(s3, &bucket);
    env.extend(redis.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.extend(token_env().into_iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (0..count).map(|_| Server::start_with(tempfile::tempdir().unwrap(), env.clone())).collect()
}

fn set_password(server: &Server, name: &str, password: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
        admin.set_password(SetPasswordRequest { name: name.into(), password: password.into() }).await.unwrap();
    });
}

fn session_accounts(server: &Server) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut admin = common::api::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
        let sessions = admin.list_sessions(ListSessionsRequest {}).await.unwrap().into_inner().sessions;
        sessions.into_iter().map(|s| (s.account, s.frontend)).collect()
    })
}

#[test]
fn a_pool_on_redis_cluster_shares_locks_sessions_throttle_and_account_changes() {
    let cluster = RedisCluster::start();
    let s3 = S3::start();
    let redis = [("CLOUDPOP_REDIS_MODE", "cluster".to_string()), ("CLOUDPOP_REDIS_URL", cluster.urls())];
    let extra = [("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "3"), ("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "0")];
    let pool = frontends(2, &s3, &redis, &extra);
    let (a, b) = (&pool[0], &pool[1]);
    a.wait_ready(200);
    b.wait_ready(200);
    a.add_account("alice", "secret");
    a.add_account("bob", "secret");
    a.deliver("alice", &message("one", 2));
    a.deliver("alice", &message("two", 2));

    // One maildrop, one session, across the pool; operators see it from any frontend.
    let (mut alice, _) = login_within(a, "alice", Duration::from_secs(5));
    let (_, reply) = try_login(b, "alice");
    assert!(reply.starts_with("-ERR [IN-USE]"), "second login elsewhere in the pool: {reply}");
    let sessions = session_accounts(b);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].0, "alice");
    assert!(alice.cmd("DELE 1").starts_with("+OK"));
    assert!(alice.cmd("QUIT").starts_with("+OK"));
    let (mut again, _) = login_within(b, "alice", Duration::from_secs(5));
    assert_eq!(again.cmd("STAT").split(' ').nth(1), Some("1"), "the deletion did not reach the other frontend");
    assert!(again.cmd("QUIT").starts_with("+OK"));
    assert!(session_accounts(a).is_empty(), "a finished session is still listed");

    // Failed logins count across the pool.
    for server in [a, b, a] {
        let mut c = Client::connect(server.pop3);
        c.cmd("USER bob");
        assert_eq!(c.cmd("PASS guess"), "-ERR [AUTH] Authentication failed");
    }
    let (_, reply) = try_login(b, "bob");
    assert_eq!(reply, "-ERR [SYS/TEMP] Too many failed logins, try again later");

    // A password change reaches the other frontend's caches at once (pub/sub through the
    // cluster bus): the old password stops working there.
    common::eventually("b never served a record from its cache", || {
        Client::login(b.pop3, "alice", "secret").cmd("QUIT");
        b.metrics().get("cloudpop_account_cache_hits_total{}") > 0.0
    });
    set_password(a, "alice", "changed");
    within_a_second(b, "alice", "secret", false);
    within_a_second(b, "alice", "changed", true);

    // Every primary holds part of what the pool wrote.
    for node in &cluster.nodes {
        let mut conn = redis::Client::open(node.url()).unwrap().get_connection().unwrap();
        let keys: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        assert!(keys > 0, "the primary on port {} holds none of the pool's keys", node.port);
    }
}

/// The maildrop's last fence, read from the server on `port`.
fn fence(port: u16, maildrop: &str) -> u64 {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
    let fence: Option<u64> = redis::cmd("GET").arg(format!("cloudpop:fence:{{{maildrop}}}")).query(&mut conn).unwrap();
    fence.expect("no fence recorded")
}

/// Logs in, checks the maildrop is held pool-wide, deletes one message and quits; returns the
/// messages left.
fn poll_and_delete_one(a: &Server, b: &Server) -> usize {
    let (mut c, _) = login_within(a, "alice", Duration::from_secs(15));
    let (_, reply) = try_login(b, "alice");
    assert!(reply.starts_with("-ERR [IN-USE]"), "second login elsewhere in the pool: {reply}");
    let count: usize = c.cmd("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    count - 1
}

#[test]
fn a_pool_on_sentinel_follows_the_primary_through_a_demotion_and_a_crash() {
    let mut set = RedisSentinel::start();
    let s3 = S3::start();
    let redis = [
        ("CLOUDPOP_REDIS_MODE", "sentinel".to_string()),
        ("CLOUDPOP_REDIS_URL", set.url()),
        ("CLOUDPOP_REDIS_SENTINEL_MASTER", SENTINEL_MASTER.to_string()),
    ];
    let pool = frontends(2, &s3, &redis, &[]);
    let (a, b) = (&pool[0], &pool[1]);
    a.add_account("alice", "secret");
    for i in 0..3 {
        a.deliver("alice", &message(&format!("m{i}"), 2));
    }
    assert_eq!(poll_and_delete_one(a, b), 2);
    let first = set.primary_port();
    let fence_before = fence(first, "alice");
    set.wait_for_replica();

    // A controlled failover: the old primary is demoted and answers writes with READONLY.
    set.fail_over();
    common::eventually("the sentinel did not switch primaries", || set.primary_port() != first);
    let second = set.primary_port();
    common::eventually("the old primary was not demoted", || set.info(first).contains("role:slave"));
    assert_eq!(poll_and_delete_one(b, a), 1);
    let fence_after = fence(second, "alice");
    assert!(fence_after > fence_before, "a lease after the failover has fence {fence_after} <= {fence_before}");

    // A crash of the new primary: the sentinel promotes the demoted one back.
    common::eventually("the demoted primary did not catch up", || set.info(first).contains("master_link_status:up"));
    set.server(second).stop();
    common::eventually("the sentinel did not promote the replica", || set.primary_port() == first);
    assert_eq!(poll_and_delete_one(a, b), 0);
    assert!(fence(first, "alice") > fence_after, "fences went backwards across the crash");

    // Account changes still reach every frontend through the new primary.
    set_password(a, "alice", "changed");
    within_a_second(b, "alice", "secret", false);
    within_a_second(b, "alice", "changed", true);
}
