//! Runs the one shared conformance suite against every backend: the embedded ones (filesystem,
//! in-process locks) and the cloud ones (a real S3 server, a real Redis).

use crate::common;
use crate::conformance;

use cloudpop::config::{Config, RedisMode};
use cloudpop::coord::lock::MaildropLocks;
use cloudpop::coord::lock::memory::MemoryLocks;
use cloudpop::coord::lock::redis::RedisLocks;
use cloudpop::coord::registry::SessionRegistry;
use cloudpop::coord::registry::memory::MemorySessions;
use cloudpop::coord::registry::redis::RedisSessions;
use cloudpop::coord::throttle::LoginThrottle;
use cloudpop::coord::throttle::memory::MemoryThrottle;
use cloudpop::coord::throttle::redis::RedisThrottle;
use cloudpop::names::AccountName;
use cloudpop::store::fs::FsStore;
use cloudpop::store::s3::{S3Settings, S3Store};
use common::cloud::{Redis, RedisCluster, RedisSentinel, S3, S3_ACCESS_KEY, S3_SECRET_KEY, SENTINEL_MASTER};
use std::sync::Arc;
use std::time::Duration;

/// Runs each named case of the message and account suite against a store built by `$make`.
macro_rules! store_cases {
    ($make:path; $($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let (_guard, store) = $make().await;
            conformance::$case(&store).await;
        }
    )*};
}

mod fs {
    use super::*;

    async fn make() -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        (dir, store)
    }

    store_cases!(make; messages_round_trip, uncommitted_messages_are_invisible, ids_are_unique_ordered_and_well_formed,
        removal, maildrops_are_isolated, large_messages_stream, accounts, listing_pages_past_a_thousand,
        markers_and_fixed_ids, trace_context_travels_with_messages, ping_answers, retention_ledgers);
}

mod s3 {
    use super::*;

    async fn make() -> (S3, S3Store) {
        let server = S3::start();
        let settings = S3Settings {
            endpoint: server.endpoint(),
            region: "us-east-1".into(),
            bucket: server.bucket("conformance"),
            prefix: "suite".into(),
            path_style: true,
            access_key: Some((S3_ACCESS_KEY.into(), cloudpop::secret::Secret::new(S3_SECRET_KEY))),
            timeout: Duration::from_secs(5),
            max_attempts: 3,
        };
        let store = S3Store::new(&settings).await;
        (server, store)
    }

    store_cases!(make; messages_round_trip, uncommitted_messages_are_invisible, ids_are_unique_ordered_and_well_formed,
        removal, maildrops_are_isolated, large_messages_stream, accounts, listing_pages_past_a_thousand,
        markers_and_fixed_ids, trace_context_travels_with_messages, ping_answers, retention_ledgers);
}

/// The coordination backends of one deployment, as the service builds them.
struct Coordination {
    locks: Arc<dyn MaildropLocks>,
    throttle: Arc<dyn LoginThrottle>,
    sessions: Arc<dyn SessionRegistry>,
}

fn redis_coordination(config: &Config) -> Coordination {
    let conn = cloudpop::coord::redis_link::connect(&cloudpop::settings::redis(config).unwrap()).unwrap();
    Coordination {
        locks: Arc::new(RedisLocks::new(conn.clone(), "conformance:")),
        throttle: Arc::new(RedisThrottle::new(conn.clone(), "conformance:", conformance::throttle_limits())),
        sessions: Arc::new(RedisSessions::new(conn, "conformance:")),
    }
}

/// Runs the lock, throttle and session cases against the backends `$make` builds (with a
/// guard that keeps their servers up).
macro_rules! coordination_cases {
    ($make:path) => {
        #[tokio::test]
        async fn locks_are_exclusive_leases() {
            let (_guard, c) = $make();
            conformance::locks_are_exclusive_leases(&*c.locks).await;
        }

        #[tokio::test]
        async fn expired_leases_free_themselves() {
            let (_guard, c) = $make();
            conformance::expired_leases_free_themselves(&*c.locks).await;
        }

        #[tokio::test]
        async fn throttle_counts_per_account_and_address() {
            let (_guard, c) = $make();
            conformance::throttle_counts_per_account_and_address(&*c.throttle).await;
        }

        #[tokio::test]
        async fn throttle_trusts_the_owners_address() {
            let (_guard, c) = $make();
            conformance::throttle_trusts_the_owners_address(&*c.throttle).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn throttle_admits_no_more_than_the_limit_in_parallel() {
            let (_guard, c) = $make();
            conformance::throttle_admits_no_more_than_the_limit_in_parallel(c.throttle).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn throttle_never_counts_correct_logins() {
            let (_guard, c) = $make();
            conformance::throttle_never_counts_correct_logins(c.throttle).await;
        }

        #[tokio::test]
        async fn throttle_counts_a_repeated_call_once() {
            let (_guard, c) = $make();
            conformance::throttle_counts_a_repeated_call_once(&*c.throttle).await;
        }

        #[tokio::test]
        async fn throttle_address_limit_holds_in_parallel() {
            let (_guard, c) = $make();
            conformance::throttle_address_limit_holds_in_parallel(c.throttle).await;
        }

        #[tokio::test]
        async fn sessions_register_list_and_end() {
            let (_guard, c) = $make();
            conformance::sessions_register_list_and_end(&*c.sessions).await;
        }
    };
}

mod memory_locks {
    use super::*;

    fn make() -> ((), Coordination) {
        let c = Coordination {
            locks: Arc::new(MemoryLocks::new()),
            throttle: Arc::new(MemoryThrottle::new(conformance::throttle_limits())),
            sessions: Arc::new(MemorySessions::default()),
        };
        ((), c)
    }

    coordination_cases!(make);
}

mod redis_locks {
    use super::*;

    fn make() -> (Redis, Coordination) {
        let redis = Redis::start();
        let c = redis_coordination(&Config { redis_url: redis.url(), ..Config::default() });
        (redis, c)
    }

    coordination_cases!(make);
}

/// A real three-primary Redis Cluster: every script's keys share a slot, and the rest is
/// routed by the cluster client.
mod redis_cluster {
    use super::*;

    fn config(cluster: &RedisCluster) -> Config {
        Config { redis_mode: RedisMode::Cluster, redis_url: cluster.urls(), ..Config::default() }
    }

    fn make() -> (RedisCluster, Coordination) {
        let cluster = RedisCluster::start();
        let c = redis_coordination(&config(&cluster));
        (cluster, c)
    }

    coordination_cases!(make);

    /// Issue 22 item 13: an acquire the cluster client sends again (after a response timeout)
    /// answers the lease its first run took, instead of "held" by an orphan that locks the
    /// owner out for a whole lease.
    #[tokio::test]
    async fn an_acquire_sent_twice_gets_its_own_lease() {
        let cluster = RedisCluster::start();
        let config = config(&cluster);
        let conn = cloudpop::coord::redis_link::connect(&cloudpop::settings::redis(&config).unwrap()).unwrap();
        let locks = RedisLocks::new(conn, "twice:");
        let maildrop = AccountName::parse("twice").unwrap();
        let request = cloudpop::coord::lock::LeaseToken::generate();
        let ttl = Duration::from_secs(30);
        let first = locks.acquire_as(&maildrop, ttl, request.clone()).await.unwrap().expect("free");
        let again = locks.acquire_as(&maildrop, ttl, request).await.unwrap();
        assert_eq!(again.as_ref(), Some(&first), "a repeated acquire was told the lease is held");
        let other = cloudpop::coord::lock::LeaseToken::generate();
        assert!(locks.acquire_as(&maildrop, ttl, other).await.unwrap().is_none(), "a lease was taken twice");
        locks.release(&maildrop, &first).await.unwrap();
    }

    /// The keys of many maildrops, accounts and addresses land on every primary: the layout
    /// spreads load instead of pinning it to one slot.
    #[tokio::test]
    async fn keys_spread_over_every_primary() {
        let (cluster, c) = make();
        for i in 0..30u8 {
            let maildrop = AccountName::parse(&format!("spread{i}")).unwrap();
            let token = c.locks.acquire(&maildrop, Duration::from_secs(30)).await.unwrap().expect("free");
            assert!(c.locks.renew(&maildrop, &token, Duration::from_secs(30)).await.unwrap());
            let who = cloudpop::coord::throttle::Subject::of_login(maildrop.as_str());
            let id = cloudpop::coord::throttle::AttemptId::random();
            let attempt = c.throttle.admit(&who, std::net::IpAddr::from([192, 0, 2, i]), id).await.unwrap();
            assert!(matches!(attempt, cloudpop::coord::throttle::Admission::Admitted(_)));
        }
        for node in &cluster.nodes {
            let mut conn = redis::Client::open(node.url()).unwrap().get_connection().unwrap();
            let keys: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
            assert!(keys > 0, "primary on port {} holds no keys", node.port);
        }
    }
}

/// A primary named by Redis Sentinel: the primary is looked up through the sentinel.
mod redis_sentinel {
    use super::*;

    #[tokio::test]
    async fn locks_through_the_sentinel() {
        let set = RedisSentinel::start();
        let c = redis_coordination(&Config {
            redis_mode: RedisMode::Sentinel,
            redis_url: set.url(),
            redis_sentinel_master: SENTINEL_MASTER.into(),
            ..Config::default()
        });
        conformance::locks_are_exclusive_leases(&*c.locks).await;
        conformance::sessions_register_list_and_end(&*c.sessions).await;
    }

    #[tokio::test]
    async fn an_unknown_primary_name_is_an_error_not_a_hang() {
        let set = RedisSentinel::start();
        let c = redis_coordination(&Config {
            redis_mode: RedisMode::Sentinel,
            redis_url: set.url(),
            redis_sentinel_master: "nonesuch".into(),
            ..Config::default()
        });
        let started = std::time::Instant::now();
        assert!(c.locks.ping().await.is_err(), "a primary nobody monitors answered");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

mod redis_tls {
    use super::*;
    use cloudpop::coord::lock::MaildropLocks;

    /// rediss:// with a private CA and a password: the locks work the same over TLS.
    #[tokio::test]
    async fn locks_over_tls_with_password() {
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = cloudpop::tls::self_signed_paths(certs.path()).unwrap();
        let redis = Redis::start_tls(&cert, &key, "s3cret pass");
        let config = Config {
            redis_url: format!("rediss://localhost:{}", redis.port),
            redis_password: Some(cloudpop::secret::Secret::new("s3cret pass")),
            redis_tls_ca_file: Some(cert.clone()),
            ..Config::default()
        };
        let locks = RedisLocks::new(
            cloudpop::coord::redis_link::connect(&cloudpop::settings::redis(&config).unwrap()).unwrap(),
            "tls:",
        );
        conformance::locks_are_exclusive_leases(&locks).await;

        let wrong = Config { redis_password: Some(cloudpop::secret::Secret::new("wrong")), ..config };
        let locks = RedisLocks::new(
            cloudpop::coord::redis_link::connect(&cloudpop::settings::redis(&wrong).unwrap()).unwrap(),
            "tls:",
        );
        let name = cloudpop::names::AccountName::parse("x").unwrap();
        assert!(locks.acquire(&name, Duration::from_secs(1)).await.is_err(), "a wrong password was accepted");
    }
}
