//! Runs the one shared conformance suite against every backend: the embedded ones (filesystem,
//! in-process locks) and the cloud ones (a real S3 server, a real Redis).

use crate::common;
use crate::conformance;

use cloudpop::config::Config;
use cloudpop::lock::memory::MemoryLocks;
use cloudpop::lock::redis::RedisLocks;
use cloudpop::store::fs::FsStore;
use cloudpop::store::s3::{S3Settings, S3Store};
use cloudpop::throttle::memory::MemoryThrottle;
use cloudpop::throttle::redis::RedisThrottle;
use common::cloud::{Redis, S3, S3_ACCESS_KEY, S3_SECRET_KEY};
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

macro_rules! lock_cases {
    ($make:path) => {
        #[tokio::test]
        async fn locks_are_exclusive_leases() {
            let (_guard, locks) = $make();
            conformance::locks_are_exclusive_leases(&locks).await;
        }

        #[tokio::test]
        async fn expired_leases_free_themselves() {
            let (_guard, locks) = $make();
            conformance::expired_leases_free_themselves(&locks).await;
        }
    };
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

mod memory_locks {
    use super::*;

    fn make() -> ((), MemoryLocks) {
        ((), MemoryLocks::new())
    }

    lock_cases!(make);

    fn throttle() -> std::sync::Arc<MemoryThrottle> {
        std::sync::Arc::new(MemoryThrottle::new(conformance::throttle_limits()))
    }

    #[tokio::test]
    async fn throttle_counts_per_account_and_address() {
        conformance::throttle_counts_per_account_and_address(&*throttle()).await;
    }

    #[tokio::test]
    async fn throttle_trusts_the_owners_address() {
        conformance::throttle_trusts_the_owners_address(&*throttle()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn throttle_admits_no_more_than_the_limit_in_parallel() {
        conformance::throttle_admits_no_more_than_the_limit_in_parallel(throttle()).await;
    }
}

mod redis_locks {
    use super::*;

    fn config(redis: &Redis) -> Config {
        Config { redis_url: redis.url(), ..Config::default() }
    }

    fn make() -> (Redis, RedisLocks) {
        let redis = Redis::start();
        let conn = cloudpop::redis_conn::connect(&config(&redis)).unwrap();
        (redis, RedisLocks::new(conn, "conformance:"))
    }

    lock_cases!(make);

    fn throttle(redis: &Redis) -> std::sync::Arc<RedisThrottle> {
        let conn = cloudpop::redis_conn::connect(&config(redis)).unwrap();
        std::sync::Arc::new(RedisThrottle::new(conn, "conformance:", conformance::throttle_limits()))
    }

    #[tokio::test]
    async fn throttle_counts_per_account_and_address() {
        let redis = Redis::start();
        conformance::throttle_counts_per_account_and_address(&*throttle(&redis)).await;
    }

    #[tokio::test]
    async fn throttle_trusts_the_owners_address() {
        let redis = Redis::start();
        conformance::throttle_trusts_the_owners_address(&*throttle(&redis)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn throttle_admits_no_more_than_the_limit_in_parallel() {
        let redis = Redis::start();
        conformance::throttle_admits_no_more_than_the_limit_in_parallel(throttle(&redis)).await;
    }
}

mod redis_tls {
    use super::*;
    use cloudpop::lock::MaildropLocks;

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
        let locks = RedisLocks::new(cloudpop::redis_conn::connect(&config).unwrap(), "tls:");
        conformance::locks_are_exclusive_leases(&locks).await;

        let wrong = Config { redis_password: Some(cloudpop::secret::Secret::new("wrong")), ..config };
        let locks = RedisLocks::new(cloudpop::redis_conn::connect(&wrong).unwrap(), "tls:");
        let name = cloudpop::names::AccountName::parse("x").unwrap();
        assert!(locks.acquire(&name, Duration::from_secs(1)).await.is_err(), "a wrong password was accepted");
    }
}
