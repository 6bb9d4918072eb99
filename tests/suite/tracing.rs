//! Traces against a real OTLP/gRPC receiver (the OpenTelemetry protocol's own service, run in
//! the test): the span tree of a real POP3 session in the embedded and the cloud deployment,
//! the RETR span's link to the trace that delivered the message, gRPC calls joining the
//! caller's trace, no secrets in any attribute, and a collector that goes away mid-test
//! changing nothing for POP3 clients.

use crate::common;
use common::api::{self as grpc, ADMIN_TOKEN, INGEST_TOKEN, token_env};
use common::cloud::{Redis, S3, cloud_env};
use common::otlp::Collector;
use common::{Client, Server};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const BODY_TEXT: &str = "a line only the message body holds";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} span, got {}", found.len());
    found[0]
}

fn otel_env(collector: SocketAddr) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = token_env().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{collector}")));
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    env.push(("OTEL_SERVICE_NAME".into(), "cloudpop-test".into()));
    env.push(("POD_NAME".into(), "cloudpop-7d9f-abcde".into()));
    env
}

/// Delivers one message over gRPC as a caller inside trace `CALLER_TRACE`.
fn deliver_traced(rt: &tokio::runtime::Runtime, server: &Server) {
    rt.block_on(async {
        let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
        let create = cloudpop::api::proto::CreateAccountRequest {
            name: "alice".into(),
            password: "secret pw".into(),
            quota: None,
            policy: None,
        };
        admin.create_account(create).await.unwrap();
        let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
        let message = format!("Subject: traced\r\n\r\n{BODY_TEXT}\r\n");
        let frames = grpc::frames(&["alice"], "", message.as_bytes(), 100);
        let mut request = tonic::Request::new(tokio_stream::iter(frames));
        let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
        request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
        ingest.deliver(request).await.unwrap();
    });
}

/// Logs in, retrieves the message and quits with a deletion.
fn retrieve(server: &Server) {
    let mut c = Client::login(server.pop3, "alice", "secret pw");
    let (status, body) = c.multi("RETR 1");
    assert!(status.starts_with("+OK") && String::from_utf8_lossy(&body).contains(BODY_TEXT));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

/// The checks both deployments share; returns the spans.
/// `listing_calls`: the requests that read the maildrop at login (the embedded store's one
/// call; with S3, the index keys and one listing page of a maildrop too small for an index).
fn check_session_tree(collector: &Collector, listing_calls: &str) -> Vec<Span> {
    let spans = collector.wait_for(&[
        "pop3.session",
        "pop3.login",
        "maildrop.lock",
        "maildrop.open",
        "pop3.retr",
        "store.open",
        "pop3.update",
        "ingest.deliver",
        "cloudpop.v1.Ingest/Deliver",
    ]);
    let session = one(&spans, "pop3.session");
    let child_of = |name: &str, parent: &Span| {
        let span = one(&spans, name);
        assert_eq!(span.trace_id, parent.trace_id, "{name} is in another trace");
        assert_eq!(span.parent_span_id, parent.span_id, "{name} has the wrong parent");
        span.clone()
    };
    let login = child_of("pop3.login", session);
    child_of("maildrop.lock", &login);
    let open = child_of("maildrop.open", &login);
    let retr = child_of("pop3.retr", session);
    child_of("store.open", &retr);
    let update = child_of("pop3.update", session);
    assert_eq!(attr(session, "account").as_deref(), Some("alice"));
    assert_eq!(attr(session, "listener").as_deref(), Some("pop3"));
    assert!(attr(session, "peer").unwrap().starts_with("127.0.0.1:"));
    assert_eq!(attr(&login, "mechanism").as_deref(), Some("USER"));
    assert_eq!(attr(&login, "outcome").as_deref(), Some("ok"));
    assert!(attr(&login, "hash_ms").is_some());
    assert_eq!(attr(&open, "messages").as_deref(), Some("1"));
    assert_eq!(attr(&open, "store_calls").as_deref(), Some(listing_calls));
    assert_eq!(attr(&update, "deleted").as_deref(), Some("1"));
    assert!(attr(&retr, "octets").unwrap().parse::<u64>().unwrap() > 0);
    assert!(attr(&retr, "ttfb_ms").is_some());

    // gRPC joined the caller's trace, and the RETR links to the delivery inside it.
    let grpc = one(&spans, "cloudpop.v1.Ingest/Deliver");
    assert_eq!(hex(&grpc.trace_id), CALLER_TRACE);
    assert_eq!(hex(&grpc.parent_span_id), CALLER_SPAN);
    let ingest = child_of("ingest.deliver", grpc);
    assert_eq!(attr(&ingest, "recipients").as_deref(), Some("1"));
    assert_eq!(retr.links.len(), 1, "the RETR span has no link to its delivery");
    assert_eq!(hex(&retr.links[0].trace_id), CALLER_TRACE);
    assert_eq!(retr.links[0].span_id, ingest.span_id);

    // No password, SASL response, token or body text anywhere.
    for (resource, span) in collector.spans() {
        let mut values: Vec<String> = span.attributes.iter().map(|kv| text(&kv.value)).collect();
        values.extend(span.events.iter().flat_map(|e| e.attributes.iter().map(|kv| text(&kv.value))));
        values.extend(resource.iter().map(|kv| text(&kv.value)));
        for value in values {
            for secret in ["secret pw", ADMIN_TOKEN, INGEST_TOKEN, BODY_TEXT] {
                assert!(!value.contains(secret), "{} carries a secret: {value}", span.name);
            }
        }
    }
    let (resource, _) = &collector.spans()[0];
    let res = |k: &str| resource.iter().find(|kv| kv.key == k).map(|kv| text(&kv.value));
    assert_eq!(res("service.name").as_deref(), Some("cloudpop-test"));
    assert_eq!(res("service.version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(res("service.instance.id").as_deref(), Some("cloudpop-7d9f-abcde"));
    spans
}

#[test]
fn a_session_is_traced_and_linked_to_its_delivery() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, _stop) = Collector::start(&rt);
    let server = Server::start_with(tempfile::tempdir().unwrap(), otel_env(addr));
    deliver_traced(&rt, &server);
    retrieve(&server);
    let spans = check_session_tree(&collector, "1");
    let store_open = one(&spans, "store.open");
    assert_eq!(attr(store_open, "store.backend").as_deref(), Some("fs"));
    assert_eq!(server.metrics().get("cloudpop_spans_dropped_total{}"), 0.0);

    // A failed call carries its gRPC status (NOT_FOUND = 5) on the server span.
    let refused = rt.block_on(async {
        let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
        grpc::deliver(&mut ingest, &["nobody"], "", b"Subject: lost\r\n\r\n").await
    });
    assert_eq!(refused.unwrap_err().code(), tonic::Code::NotFound);
    common::eventually("no span with the failed call's status arrived", || {
        collector.spans().iter().any(|(_, s)| {
            s.name == "cloudpop.v1.Ingest/Deliver" && attr(s, "rpc.grpc.status_code").as_deref() == Some("5")
        })
    });
}

#[test]
fn cloud_sessions_trace_s3_requests_and_redis_commands() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, _stop) = Collector::start(&rt);
    let (redis, s3) = (Redis::start(), S3::start());
    let bucket = s3.bucket("mail");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.extend(otel_env(addr));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    deliver_traced(&rt, &server);
    retrieve(&server);
    let spans = check_session_tree(&collector, "2");
    let store_open = one(&spans, "store.open");
    assert_eq!(attr(store_open, "store.backend").as_deref(), Some("s3"));
    assert_eq!(attr(store_open, "s3.operation").as_deref(), Some("GetObject"));
    assert_eq!(attr(store_open, "http.status_code").as_deref(), Some("200"));
    assert_eq!(attr(store_open, "s3.attempt").as_deref(), Some("1"));
    let lock = one(&spans, "maildrop.lock");
    let redis_set = spans.iter().find(|s| s.name == "redis" && s.parent_span_id == lock.span_id);
    let redis_set = redis_set.expect("no Redis span under maildrop.lock");
    // The acquire script (take the lease and its fence in one step).
    assert_eq!(attr(redis_set, "db.operation").as_deref(), Some("EVALSHA"));
}

#[test]
fn a_collector_that_goes_away_changes_nothing_for_pop3_clients() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, stop) = Collector::start(&rt);
    let mut env = otel_env(addr);
    env.push(("OTEL_BSP_MAX_QUEUE_SIZE".into(), "64".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    deliver_traced(&rt, &server);
    collector.wait_for(&["ingest.deliver"]);
    stop.send(()).unwrap();
    // Sessions keep working while every export fails; the lost spans are counted.
    for _ in 0..20 {
        let mut c = Client::login(server.pop3, "alice", "secret pw");
        let (status, body) = c.multi("RETR 1");
        assert!(status.starts_with("+OK") && String::from_utf8_lossy(&body).contains(BODY_TEXT));
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    common::eventually("spans lost to a dead collector were never counted", || {
        server.metrics().get("cloudpop_spans_dropped_total{}") > 0.0
    });
}

#[test]
fn json_log_lines_in_a_traced_session_carry_session_and_trace_ids() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, _stop) = Collector::start(&rt);
    let mut env = otel_env(addr);
    env.push(("CLOUDPOP_LOG_FORMAT".into(), "json".into()));
    // RUST_LOG wins over the `log` setting (info): the per-command debug lines appear.
    env.push(("RUST_LOG".into(), "cloudpop=debug,info".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    deliver_traced(&rt, &server);
    retrieve(&server);
    let spans = collector.wait_for(&["pop3.session"]);
    let trace_id = hex(&one(&spans, "pop3.session").trace_id);

    let log = server.log();
    let mut in_session = 0;
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let Some(session) = entry["spans"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "pop3.session"))
        else {
            continue;
        };
        in_session += 1;
        assert!(session["session"].as_str().is_some_and(|id| id.len() == 12), "{line}");
        assert_eq!(session["trace_id"].as_str(), Some(trace_id.as_str()), "{line}");
        assert!(!line.contains("secret pw"), "a password reached the log: {line}");
    }
    assert!(in_session >= 3, "too few session log lines:\n{log}");
    assert!(log.contains(r#""verb":"RETR""#), "RUST_LOG was not honoured:\n{log}");
}

/// An LMTP delivery is traced (`lmtp.session` with its `lmtp.deliver`), and the RETR of the
/// message links to that delivery.
#[test]
fn an_lmtp_delivery_is_traced_and_retrieval_links_to_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, _stop) = Collector::start(&rt);
    let mut env = otel_env(addr);
    env.push(("CLOUDPOP_LMTP_LISTEN".into(), "127.0.0.1:0".into()));
    env.push(("CLOUDPOP_LMTP_STRIP_DOMAIN".into(), "true".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("alice", "secret pw");
    let mut lmtp = Client::connect(server.lmtp.unwrap());
    lmtp.send(b"LHLO mx.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    let replies: Vec<String> = std::iter::from_fn(|| Some(lmtp.line())).take_while(|l| !l.starts_with("354")).collect();
    assert!(replies.iter().any(|l| l.starts_with("250 2.1.5")), "{replies:?}");
    lmtp.send(format!("Subject: traced\r\n\r\n{BODY_TEXT}\r\n.\r\nQUIT\r\n").as_bytes());
    assert!(lmtp.line().starts_with("250 2.0.0"));
    retrieve(&server);
    let spans = collector.wait_for(&["lmtp.session", "lmtp.deliver", "pop3.retr"]);
    let session = one(&spans, "lmtp.session");
    let deliver = one(&spans, "lmtp.deliver");
    assert_eq!(deliver.parent_span_id, session.span_id);
    assert_eq!(attr(session, "lhlo").as_deref(), Some("mx.test"));
    assert_eq!(attr(deliver, "stored").as_deref(), Some("1"));
    let retr = one(&spans, "pop3.retr");
    assert_eq!(retr.links.len(), 1, "the RETR span has no link to its LMTP delivery");
    assert_eq!(retr.links[0].span_id, deliver.span_id);
}

#[test]
fn directory_and_token_checks_are_traced_without_secrets() {
    use common::identity::{DIRECTORY_TOKEN, IdentityServices, Pki};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, addr, _stop) = Collector::start(&rt);
    let pki = Pki::new();
    let services = IdentityServices::start(&pki);
    services.set_users(serde_json::json!({"dir-user@example.com": {"password": "directory pw"}}));
    services.new_key("k1", "ES256");
    let ca = pki.path("ca.pem").display().to_string();
    let mut env = otel_env(addr);
    for (key, value) in [
        ("CLOUDPOP_AUTH_BACKEND", "http".to_owned()),
        ("CLOUDPOP_AUTH_HTTP_URL", services.url("/auth")),
        ("CLOUDPOP_AUTH_HTTP_TOKEN", DIRECTORY_TOKEN.into()),
        ("CLOUDPOP_AUTH_HTTP_CA_FILE", ca.clone()),
        ("CLOUDPOP_AUTH_HTTP_CLIENT_CERT", pki.path("client.pem").display().to_string()),
        ("CLOUDPOP_AUTH_HTTP_CLIENT_KEY", pki.path("client.key").display().to_string()),
        ("CLOUDPOP_OAUTH_JWKS_URL", services.url("/jwks.json")),
        ("CLOUDPOP_OAUTH_ISSUER", "https://idp".into()),
        ("CLOUDPOP_OAUTH_AUDIENCE", "pop".into()),
        ("CLOUDPOP_OAUTH_CA_FILE", ca),
    ] {
        env.push((key.into(), value));
    }
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    Client::login(server.pop3, "dir-user@example.com", "directory pw").cmd("QUIT");
    let claims = |exp: &str| serde_json::json!({"iss": "https://idp", "aud": "pop", "email": "dir-user@example.com", "email_verified": true, "exp": exp});
    let (good, expired) = (services.mint("k1", claims("+300"), None), services.mint("k1", claims("-300"), None));
    for token in [&good, &expired] {
        let mut c = Client::connect(server.pop3);
        let response = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("user=dir-user@example.com\x01auth=Bearer {token}\x01\x01"),
        );
        let reply = c.cmd(&format!("AUTH XOAUTH2 {response}"));
        if reply.starts_with("+ ") {
            c.cmd("");
        } else {
            c.cmd("QUIT");
        }
    }
    // Spans arrive in batches, a parent after its children: wait until both directory calls,
    // both token checks and every one of their parents are in.
    let arrived = || {
        let spans: Vec<Span> = collector.spans().into_iter().map(|(_, s)| s).collect();
        let named = |name: &str| spans.iter().filter(|s| s.name == name).count();
        let parents_in = spans
            .iter()
            .filter(|s| s.name.starts_with("auth."))
            .all(|child| spans.iter().any(|s| s.span_id == child.parent_span_id));
        (named("auth.directory") == 2 && named("auth.token") == 2 && parents_in).then_some(spans)
    };
    common::eventually("the auth spans and their parents", || arrived().is_some());
    let spans = arrived().unwrap();
    // The password login's check, and the lookup the valid token's login made (the expired
    // token never got that far), each under its login.
    let directory: Vec<&Span> = spans.iter().filter(|s| s.name == "auth.directory").collect();
    let calls: Vec<(Option<String>, Option<String>)> =
        directory.iter().map(|s| (attr(s, "call"), attr(s, "outcome"))).collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in ["verify", "lookup"] {
        assert!(calls.contains(&(Some(call.into()), Some("accepted".into()))), "{calls:?}");
    }
    for span in directory {
        let login = spans.iter().find(|s| s.span_id == span.parent_span_id).expect("the directory call's parent");
        assert_eq!(login.name, "pop3.login");
        assert_eq!(attr(span, "backend").as_deref(), Some("http"));
    }
    let tokens: Vec<&Span> = spans.iter().filter(|s| s.name == "auth.token").collect();
    let outcomes: Vec<(Option<String>, Option<String>)> =
        tokens.iter().map(|s| (attr(s, "outcome"), attr(s, "reason"))).collect();
    assert!(outcomes.contains(&(Some("valid".into()), None)), "{outcomes:?}");
    assert!(outcomes.contains(&(Some("refused".into()), Some("expired".into()))), "{outcomes:?}");
    for (_, span) in collector.spans() {
        for kv in &span.attributes {
            let value = text(&kv.value);
            for secret in ["directory pw", DIRECTORY_TOKEN, good.as_str(), expired.as_str()] {
                assert!(!value.contains(secret), "{} carries a secret: {value}", span.name);
            }
        }
    }
}
