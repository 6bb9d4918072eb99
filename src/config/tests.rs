//! Loading and validating the configuration.

use super::*;

/// Environment pairs as `Config::load` takes them (also used by `env`'s tests).
pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn file_then_env_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "max_connections = 5\npop3_listen = \"127.0.0.1:2110\"\n").unwrap();
    let cfg = Config::load(
        Some(&path),
        env(&[
            ("CLOUDPOP_MAX_CONNECTIONS", "7"),
            ("CLOUDPOP_DATA_DIR", "/srv/x"),
            ("HOME", "/root"),
            ("CLOUDPOP_CONFIG", "y"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.max_connections, 7);
    assert_eq!(cfg.pop3_listen, "127.0.0.1:2110");
    assert_eq!(cfg.data_dir, PathBuf::from("/srv/x"));
    let cfg = Config::load(None, env(&[("CLOUDPOP_LOG", "123")])).unwrap();
    assert_eq!(cfg.log, "123");
}

#[test]
fn proxy_headers_need_trusted_networks_given_as_cidrs_or_addresses() {
    let cfg =
        Config::load(None, env(&[("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")])).unwrap();
    let nets: Vec<String> = cfg.proxy_networks().unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    let from_file: Config = toml::from_str("proxy_trusted_networks = [\"10.1.2.3/8\"]").unwrap();
    assert_eq!(from_file.proxy_networks().unwrap()[0].to_string(), "10.0.0.0/8", "host bits are dropped");
    let unguarded = Config { proxy_protocol: true, ..Config::default() };
    assert!(unguarded.validate().unwrap_err().to_string().contains("proxy_trusted_networks"));
    let garbled = Config { proxy_trusted_networks: vec!["10.0.0.0/33".into()], ..Config::default() };
    assert!(garbled.validate().unwrap_err().to_string().contains("10.0.0.0/33"));
    let slow_drain = Config { drain_delay_secs: 60, shutdown_grace_secs: 30, ..Config::default() };
    assert!(slow_drain.validate().unwrap_err().to_string().contains("drain_delay_secs"));
}

#[test]
fn mistakes_are_reported_clearly() {
    let err = Config::load(None, env(&[("CLOUDPOP_MAX_CONNECTIONS", "lots")])).unwrap_err().to_string();
    assert!(err.contains("CLOUDPOP_MAX_CONNECTIONS"), "{err}");
    let bad = Config { idle_timeout_secs: 30, ..Config::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("idle_timeout_secs"));
    let bad = Config { pop3_listen: "nowhere".into(), ..Config::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("pop3_listen"));
    let bad = Config { tls_cert: Some("/nonexistent.pem".into()), ..Config::default() };
    assert!(bad.validate().is_err());
}

#[test]
fn s3_with_in_process_locks_needs_the_single_frontend_promise() {
    let cloud = |locks, single_frontend| Config {
        store: StoreKind::S3,
        s3_bucket: "mail".into(),
        locks,
        single_frontend,
        ..Config::default()
    };
    let err = cloud(LocksKind::Memory, false).validate().unwrap_err().to_string();
    assert!(err.contains("locks = \"redis\"") && err.contains("single_frontend"), "{err}");
    cloud(LocksKind::Memory, true).validate().unwrap();
    cloud(LocksKind::Redis, false).validate().unwrap();
}

#[test]
fn a_lease_shorter_than_the_slowest_s3_request_is_advised_against() {
    let cloud =
        |lease| Config { store: StoreKind::S3, s3_bucket: "mail".into(), lock_lease_secs: lease, ..Config::default() };
    assert!(cloud(120).advice().is_empty(), "the defaults are advised against");
    let advice = cloud(20).advice();
    assert!(advice.len() == 1 && advice[0].contains("lock_lease_secs (20)"), "{advice:?}");
    assert!(Config { lock_lease_secs: 5, ..Config::default() }.advice().is_empty(), "no index without S3");
}

#[test]
fn redis_deployments_are_checked() {
    let redis = |pairs: &[(&str, &str)]| {
        let mut all = vec![("CLOUDPOP_LOCKS", "redis")];
        all.extend_from_slice(pairs);
        Config::load(None, env(&all)).and_then(|c| c.validate().map(|()| c))
    };
    let cluster =
        redis(&[("CLOUDPOP_REDIS_MODE", "cluster"), ("CLOUDPOP_REDIS_URL", "redis://a:7000, redis://b:7000")]).unwrap();
    assert_eq!(cluster.redis_mode, RedisMode::Cluster);
    assert_eq!(cluster.redis_urls().collect::<Vec<_>>(), ["redis://a:7000", "redis://b:7000"]);
    let sentinel = redis(&[
        ("CLOUDPOP_REDIS_MODE", "sentinel"),
        ("CLOUDPOP_REDIS_URL", "redis://s1:26379,redis://s2:26379"),
        ("CLOUDPOP_REDIS_SENTINEL_MASTER", "mail"),
    ]);
    assert!(sentinel.is_ok());

    let refused = |pairs: &[(&str, &str)], says: &str| {
        let err = redis(pairs).unwrap_err().to_string();
        assert!(err.contains(says), "{pairs:?}: {err}");
    };
    refused(&[("CLOUDPOP_REDIS_URL", "redis://a:6379,redis://b:6379")], "redis_mode");
    refused(&[("CLOUDPOP_REDIS_MODE", "cluster"), ("CLOUDPOP_REDIS_URL", "redis://a:7000/3")], "database 0");
    refused(&[("CLOUDPOP_REDIS_MODE", "sentinel"), ("CLOUDPOP_REDIS_URL", "redis://s:26379")], "redis_sentinel_master");
    refused(&[("CLOUDPOP_REDIS_URL", " , ")], "redis_url is empty");
    refused(&[("CLOUDPOP_REDIS_URL", "http://a:6379")], "redis://");
    refused(&[("CLOUDPOP_REDIS_KEY_PREFIX", "pool{1}:")], "redis_key_prefix");
    refused(&[("CLOUDPOP_REDIS_MODE", "shards")], "redis_mode");
}
