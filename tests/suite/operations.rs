//! The operations surface against the real binary: `/metrics` (read by the Prometheus project's
//! own parser) moving by exactly what a scripted session does, `/healthz` and `/readyz`
//! following Redis, S3 and SIGTERM, graceful drain, and certificates replaced while running.

use crate::common;
use common::cloud::{Redis, S3, cloud_env};
use common::{Client, Server, eventually, message};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn metrics_move_by_exactly_what_a_session_does() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let msg = message("counted", 20);
    server.deliver("alice", &msg);
    server.deliver("alice", &message("second", 2));
    server.wait_ready(200);
    assert_eq!(server.ops_get("/healthz"), (200, "ok\n".into()));
    let before = server.metrics();

    let mut c = Client::login(server.pop3, "alice", "secret");
    assert!(c.cmd("STAT").starts_with("+OK 2"));
    // The gauges checked for 0 below move while a session is open.
    let during = server.metrics();
    assert_eq!(during.get(r#"cloudpop_connections_open{listener="pop3"}"#), 1.0);
    assert_eq!(during.get("cloudpop_sessions_in_transaction{}"), 1.0);
    assert_eq!(c.multi("RETR 1").1, msg);
    let top = c.multi("TOP 1 0").1;
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(c.is_closed());
    let mut bad = Client::connect(server.pop3);
    bad.cmd("USER alice");
    assert!(bad.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    assert!(bad.cmd("QUIT").starts_with("+OK"));
    assert!(bad.is_closed());
    eventually("connections never closed", || {
        server.metrics().get(r#"cloudpop_connections_open{listener="pop3"}"#) == 0.0
    });

    let after = server.metrics();
    let delta = |key: &str| after.delta(&before, key);
    assert_eq!(delta(r#"cloudpop_connections_accepted_total{listener="pop3"}"#), 2.0);
    assert_eq!(delta(r#"cloudpop_logins_total{mechanism="USER",outcome="ok"}"#), 1.0);
    assert_eq!(delta(r#"cloudpop_logins_total{mechanism="USER",outcome="bad_credentials"}"#), 1.0);
    for (verb, n) in
        [("USER", 2.0), ("PASS", 2.0), ("STAT", 1.0), ("RETR", 1.0), ("TOP", 1.0), ("DELE", 1.0), ("QUIT", 2.0)]
    {
        assert_eq!(delta(&format!(r#"cloudpop_commands_total{{verb="{verb}"}}"#)), n, "{verb}");
    }
    assert_eq!(delta(r#"cloudpop_retrieved_bytes_total{verb="RETR"}"#), msg.len() as f64);
    assert_eq!(delta(r#"cloudpop_retrieved_bytes_total{verb="TOP"}"#), top.len() as f64);
    assert_eq!(delta(r#"cloudpop_retrieve_duration_seconds_count{verb="RETR"}"#), 1.0);
    assert_eq!(delta(r#"cloudpop_retrieve_first_byte_seconds_count{verb="TOP"}"#), 1.0);
    assert_eq!(delta(r#"cloudpop_lock_acquisitions_total{outcome="acquired"}"#), 1.0);
    assert_eq!(delta(r#"cloudpop_password_hash_duration_seconds_count{}"#), 2.0);
    let store = |op: &str| format!(r#"cloudpop_store_operations_total{{backend="fs",operation="{op}",outcome="ok"}}"#);
    assert_eq!(delta(&store("account_get")), 2.0);
    assert_eq!(delta(&store("list")), 1.0);
    assert_eq!(delta(&store("open")), 2.0);
    assert_eq!(delta(&store("remove")), 1.0);
    assert_eq!(after.get("cloudpop_sessions_in_transaction{}"), 0.0);
    assert_eq!(after.get("cloudpop_ready{}"), 1.0);
    // Bounded label sets: no account name or client address ever becomes a label.
    for key in after.keys() {
        assert!(!key.contains("alice") && !key.contains("127.0.0.1"), "unbounded label in {key}");
    }
}

/// Issue 23 item 12: a misspelt bucket is not "wrong password" for every user. Logins get
/// [SYS/TEMP], deliveries a temporary failure (the MTA keeps the mail), the log names the
/// bucket, and readiness says what is wrong.
#[test]
fn a_misspelt_bucket_is_a_temporary_failure_and_readiness_names_it() {
    let (redis, s3) = (Redis::start(), S3::start());
    let right = cloud_env(&s3, &s3.bucket("mail"), &redis);
    let good = Server::start_with(tempfile::tempdir().unwrap(), right);
    good.add_account("alice@example.com", "secret");
    drop(good);
    let mut env = cloud_env(&s3, "mial", &redis);
    env.push(("CLOUDPOP_LMTP_LISTEN".into(), "127.0.0.1:0".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    let mut c = Client::connect(server.pop3);
    c.cmd("USER alice@example.com");
    let reply = c.cmd("PASS secret");
    assert_eq!(reply, "-ERR [SYS/TEMP] Temporary server failure (account store unavailable), try again later");
    let mut lmtp = Client::connect(server.lmtp.unwrap());
    use crate::lmtp::say;
    say(&mut lmtp, "LHLO mx.test");
    say(&mut lmtp, "MAIL FROM:<s@example.org>");
    let rcpt = say(&mut lmtp, "RCPT TO:<alice@example.com>");
    assert!(rcpt.starts_with("451 "), "{rcpt}");
    let (status, text) = server.ops_get("/readyz");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(r#"the bucket "mial" does not exist (s3_bucket)"#), "{text}");
    let log = server.log();
    assert!(log.contains("ERROR") && log.contains("the bucket does not exist: check s3_bucket"), "{log}");
    let args = ["account", "passwd", "alice@example.com", "--password-stdin"];
    let (ok, _, err) = common::cli_env(&server.data_dir(), &server.env, &args, b"new\n");
    assert!(!ok && err.contains("does not exist (s3_bucket)"), "{err}");
}

/// Issue 23 item 16: every family is exported from the start, at 0, with its known label
/// values, so dashboards and alerts read 0 rather than "no data" before the first event.
#[test]
fn metric_families_are_exported_at_zero_before_any_event() {
    let server = Server::start(&[]);
    let metrics = server.metrics();
    for series in [
        r#"cloudpop_connections_refused_total{listener="pop3",reason="limit"}"#,
        r#"cloudpop_connections_refused_total{listener="lmtp",reason="untrusted"}"#,
        r#"cloudpop_throttle_refusals_total{reason="failures"}"#,
        r#"cloudpop_throttle_refusals_total{reason="login_delay"}"#,
        r#"cloudpop_reloads_total{outcome="failed",what="tls"}"#,
        r#"cloudpop_ingest_deliveries_total{status="stored",via="grpc"}"#,
        r#"cloudpop_ingest_deliveries_total{status="temporary_failure",via="lmtp"}"#,
        r#"cloudpop_ingest_bytes_total{listener="lmtp"}"#,
        r#"cloudpop_logins_total{mechanism="PLAIN",outcome="bad_credentials"}"#,
        r#"cloudpop_lock_acquisitions_total{outcome="in_use"}"#,
        r#"cloudpop_retrieved_bytes_total{verb="TOP"}"#,
        r#"cloudpop_tls_handshakes_total{listener="api",outcome="failed"}"#,
    ] {
        assert_eq!(metrics.get(series), 0.0, "{series}");
    }
    // An embedded server sends no S3 requests and shows none.
    assert!(!metrics.keys().any(|k| k.starts_with("cloudpop_s3_requests_total")));
}

/// Issue 23 item 18: the reason /readyz gives while Redis cannot be reached is the one the
/// operations page quotes.
#[test]
fn the_documented_readiness_reason_is_the_one_served() {
    let nobody = common::cloud::free_port();
    let server = Server::start(&[
        ("CLOUDPOP_LOCKS", "redis"),
        ("CLOUDPOP_REDIS_URL", &format!("redis://127.0.0.1:{nobody}")),
        ("CLOUDPOP_REDIS_TIMEOUT_MS", "200"),
    ]);
    let mut reason = String::new();
    eventually("no readiness reason", || {
        let (status, text) = server.ops_get("/readyz");
        reason = text.trim().to_owned();
        status == 503 && reason.contains("lock service")
    });
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    assert!(page.contains(&format!("`{reason}`")), "docs/operations.md does not quote {reason:?}");
}

#[test]
fn readiness_is_degraded_by_backend_outages_and_ends_at_sigterm() {
    let (mut redis, mut s3) = (Redis::start(), S3::start());
    let bucket = s3.bucket("mail");
    let mut env = cloud_env(&s3, &bucket, &redis);
    // A drain delay long enough that the checks below surely run inside it on a slow machine.
    env.push(("CLOUDPOP_DRAIN_DELAY_SECS".into(), "8".into()));
    env.push(("CLOUDPOP_SHUTDOWN_GRACE_SECS".into(), "20".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.wait_ready(200);

    // Issue 22 item 18: a shared backend's outage leaves the frontend ready but degraded, so
    // it stays in the Service and POP3 clients get -ERR [SYS/TEMP], not connection refused.
    redis.stop();
    eventually("the Redis outage never showed", || server.ops_get("/readyz").1.contains("degraded: lock service"));
    assert_eq!(server.ops_get("/readyz").0, 200);
    assert_eq!(server.metrics().get("cloudpop_backends_healthy{}"), 0.0);
    let mut c = Client::connect(server.pop3);
    c.cmd("USER alice");
    let reply = c.cmd("PASS secret");
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert_eq!(server.ops_get("/healthz").0, 200, "liveness must not follow dependencies");
    redis.restart();
    eventually("readiness never recovered", || server.ops_get("/readyz").1.trim() == "ready");

    s3.stop();
    eventually("the S3 outage never showed", || server.ops_get("/readyz").1.contains("degraded: message store"));
    assert_eq!(server.ops_get("/readyz").0, 200);
    s3.restart();
    eventually("readiness never recovered", || server.ops_get("/readyz").1.trim() == "ready");
    assert_eq!(server.metrics().get("cloudpop_backends_healthy{}"), 1.0);
    let probes = server.metrics();
    assert!(probes.get(r#"cloudpop_s3_requests_total{operation="HeadBucket",status="2xx"}"#) > 0.0);
    assert_eq!(
        probes.get(r#"cloudpop_s3_requests_total{operation="ListObjectsV2",status="2xx"}"#),
        0.0,
        "probes list the bucket"
    );

    server.signal("-TERM");
    let (status, body) = server.ops_get("/readyz");
    let signalled = Instant::now();
    // Not ready at once; still accepting while the load balancer notices.
    if status != 503 {
        server.wait_ready(503);
    }
    assert!(server.ops_get("/readyz").1.starts_with("draining"), "{body}");
    assert_eq!(server.metrics().get("cloudpop_draining{}"), 1.0);
    let mut late = Client::connect(server.pop3);
    assert!(late.greeting.starts_with("+OK"), "a connection during the drain delay was not served");
    assert!(signalled.elapsed() < Duration::from_secs(8), "the drain delay passed before the check");
    assert!(late.cmd("NOOP").starts_with("-ERR"));
    drop(late);
    let (status, _) = server.wait();
    assert!(status.success(), "{status}");
}

#[test]
fn drain_finishes_a_retr_in_flight_refuses_new_logins_and_deletes_nothing_without_quit() {
    let server = Server::start(&[("CLOUDPOP_DRAIN_DELAY_SECS", "1"), ("CLOUDPOP_SHUTDOWN_GRACE_SECS", "60")]);
    server.add_account("alice", "secret");
    let big: Vec<u8> = message("big", 400_000); // about 12 MB: more than socket buffers hold
    server.deliver("alice", &big);
    server.deliver("alice", &message("small", 2));
    let mut busy = Client::login(server.pop3, "alice", "secret");
    assert!(busy.cmd("DELE 2").starts_with("+OK"));
    // Ask for the big message and read only its status line: the rest is in flight.
    assert!(busy.cmd("RETR 1").starts_with("+OK"));
    let mut waiting = Client::connect(server.pop3);
    assert!(waiting.greeting.starts_with("+OK"));

    server.signal("-TERM");
    server.wait_ready(503);
    eventually("the listener never closed", || TcpStream::connect(server.pop3).is_err());
    assert_eq!(waiting.cmd("USER alice"), "-ERR [SYS/TEMP] Server is shutting down, try again later");
    assert!(waiting.is_closed());

    // The RETR in flight completes, byte for byte.
    let body = busy.body();
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the message sent during the drain differs");
    drop(busy); // no QUIT: the DELE must not be applied

    let (status, dir) = server.wait();
    assert!(status.success(), "{status}");
    let cur = dir.path().join("data/maildrops/alice/cur");
    assert_eq!(std::fs::read_dir(cur).unwrap().count(), 2, "a session that never sent QUIT deleted mail");
}

#[test]
fn a_second_sigterm_cuts_a_graceful_shutdown_short() {
    let server = Server::start(&[("CLOUDPOP_SHUTDOWN_GRACE_SECS", "600")]);
    server.add_account("alice", "secret");
    server.deliver("alice", &message("keep", 1));
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    server.signal("-TERM");
    server.wait_ready(503);
    assert!(c.cmd("NOOP").starts_with("+OK"), "a session in TRANSACTION may go on while draining");
    server.signal("-TERM");
    assert_eq!(c.line(), "-ERR [SYS/TEMP] Server is shutting down, try again later");
    let (status, dir) = server.wait();
    assert!(status.success(), "{status}");
    let cur = dir.path().join("data/maildrops/alice/cur");
    assert_eq!(std::fs::read_dir(cur).unwrap().count(), 1, "a cut session applied its deletion");
}

/// Writes a fresh self-signed certificate and key for localhost into `dir`.
fn new_certificate(dir: &std::path::Path) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
}

/// Points `secret/..data` at `version`, the way the kubelet updates a mounted Secret: a new
/// symlink renamed over the old one.
fn swap_to(secret: &std::path::Path, version: &str) {
    let tmp = secret.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, secret.join("..data")).unwrap();
}

#[test]
fn a_certificate_replaced_by_a_symlink_swap_is_served_without_restart() {
    let secret = tempfile::tempdir().unwrap();
    let s = secret.path();
    new_certificate(&s.join("..v1"));
    new_certificate(&s.join("..v2"));
    swap_to(s, "..v1");
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), s.join(file)).unwrap();
    }
    let (cert, key) = (s.join("tls.crt"), s.join("tls.key"));
    let server = Server::start(&[
        ("CLOUDPOP_TLS_CERT", cert.to_str().unwrap()),
        ("CLOUDPOP_TLS_KEY", key.to_str().unwrap()),
        ("CLOUDPOP_RELOAD_INTERVAL_SECS", "1"),
        ("CLOUDPOP_API_TLS", "true"),
        ("CLOUDPOP_API_ADMIN_TOKENS", common::api::ADMIN_TOKEN),
    ]);
    let (v1, v2) = (s.join("..v1/tls.crt"), s.join("..v2/tls.crt"));
    let mut open = Client::connect_tls(server.pop3s, &v1);
    assert!(open.greeting.starts_with("+OK"));

    swap_to(s, "..v2");
    eventually("the new certificate was never served", || {
        let tcp = TcpStream::connect(server.pop3s).unwrap();
        tls_accepts(tcp, &v2)
    });
    assert!(open.cmd("NOOP").starts_with("+OK") || open.cmd("CAPA").starts_with("+OK"), "an open connection broke");
    // The gRPC API over TLS follows the same files.
    assert!(api_accepts(server.api.unwrap(), &v2), "the API still serves the old certificate");
    assert!(!api_accepts(server.api.unwrap(), &v1), "a client trusting only the old certificate still got through");

    // A broken new version keeps the certificate in use, on SIGHUP too.
    std::fs::create_dir_all(s.join("..v3")).unwrap();
    std::fs::write(s.join("..v3/tls.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    std::fs::copy(s.join("..v2/tls.key"), s.join("..v3/tls.key")).unwrap();
    swap_to(s, "..v3");
    server.signal("-HUP");
    eventually("the broken certificate was not counted", || {
        server.metrics().get(r#"cloudpop_reloads_total{outcome="failed",what="tls"}"#) >= 1.0
    });
    assert!(tls_accepts(TcpStream::connect(server.pop3s).unwrap(), &v2), "a broken certificate replaced a good one");
    assert!(server.metrics().get(r#"cloudpop_reloads_total{outcome="ok",what="tls"}"#) >= 1.0);
}

/// Whether a TLS handshake trusting only `cert` succeeds and the greeting arrives.
fn tls_accepts(tcp: TcpStream, cert: &std::path::Path) -> bool {
    use std::io::Read;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(common::tls_config(cert), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"+OK"
}

#[test]
fn api_token_files_are_reloaded_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-tokens");
    std::fs::write(&file, "old-admin-token\n").unwrap();
    let server = Server::start(&[
        ("CLOUDPOP_API_ADMIN_TOKENS_FILE", file.to_str().unwrap()),
        ("CLOUDPOP_RELOAD_INTERVAL_SECS", "1"),
    ]);
    let api = server.api.expect("API started from a token file");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let info = |token: &'static str| {
        rt.block_on(async {
            let mut admin = common::api::admin(api, Some(token)).await;
            admin.get_server_info(cloudpop::api::proto::GetServerInfoRequest {}).await.map(|_| ()).map_err(|s| s.code())
        })
    };
    assert_eq!(info("old-admin-token"), Ok(()));
    // Rotated the way a Secret update or a deploy tool does it: a new file renamed into place.
    let tmp = dir.path().join("admin-tokens.new");
    std::fs::write(&tmp, "new-admin-token\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    eventually("the new token was never accepted", || info("new-admin-token").is_ok());
    assert_eq!(info("old-admin-token"), Err(tonic::Code::Unauthenticated), "a rotated-out token still works");
    // An unreadable file keeps the tokens in use.
    std::fs::remove_file(&file).unwrap();
    server.signal("-HUP");
    eventually("the failed reload was not counted", || {
        server.metrics().get(r#"cloudpop_reloads_total{outcome="failed",what="api_tokens"}"#) >= 1.0
    });
    assert_eq!(info("new-admin-token"), Ok(()));
}

/// Whether a gRPC call over TLS, trusting only `cert`, succeeds.
fn api_accepts(api: std::net::SocketAddr, cert: &std::path::Path) -> bool {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(cert).unwrap()))
            .domain_name("localhost");
        let url = format!("https://localhost:{}", api.port());
        let Ok(channel) = Channel::from_shared(url).unwrap().tls_config(tls).unwrap().connect().await else {
            return false;
        };
        let mut admin =
            cloudpop::api::proto::admin_client::AdminClient::with_interceptor(channel, common::api::Bearer::admin());
        admin.get_server_info(cloudpop::api::proto::GetServerInfoRequest {}).await.is_ok()
    })
}
