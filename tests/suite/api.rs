//! The gRPC API over real connections: delivery, idempotency, quotas, policies, management,
//! security, health and reflection.

use crate::common;
use cloudpop::api::proto::admin_client::AdminClient;
use cloudpop::api::proto::*;
use common::api::{self as grpc, ADMIN_TOKEN, INGEST_TOKEN, token_env};
use common::{Client, Server};
use tonic::Code;

fn start(extra: &[(&str, &str)]) -> Server {
    let mut env: Vec<(&str, &str)> = token_env().to_vec();
    env.extend_from_slice(extra);
    Server::start(&env)
}

async fn create(server: &Server, name: &str) -> Account {
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let req = CreateAccountRequest { name: name.into(), password: "secret".into(), quota: None, policy: None };
    admin.create_account(req).await.unwrap().into_inner()
}

fn stored(result: &RecipientResult) -> bool {
    result.status == DeliveryStatus::Stored as i32
}

#[tokio::test]
async fn delivered_mail_is_retrieved_byte_exact_over_pop3() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let raw = b"From: a@example.com\nSubject: via gRPC\n\n.dot line\nbody\n";
    let reply = grpc::deliver(&mut ingest, &["alice"], "", raw).await.unwrap();
    let want = b"From: a@example.com\r\nSubject: via gRPC\r\n\r\n.dot line\r\nbody\r\n";
    assert_eq!(reply.size, want.len() as u64);
    assert!(stored(&reply.results[0]), "{reply:?}");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.lines("UIDL"), [format!("1 {}", reply.results[0].message_id)]);
    assert_eq!(c.multi("RETR 1").1, want);
}

#[tokio::test]
async fn a_retry_with_the_same_key_stores_nothing_twice() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let msg = b"Subject: once\r\n\r\nonly once\r\n";
    let first = grpc::deliver(&mut ingest, &["alice"], "mta-queue:4711", msg).await.unwrap();
    let again = grpc::deliver(&mut ingest, &["alice"], "mta-queue:4711", msg).await.unwrap();
    assert!(stored(&first.results[0]));
    assert_eq!(again.results[0].status, DeliveryStatus::Duplicate as i32);
    assert_eq!(again.results[0].message_id, first.results[0].message_id);
    let other = grpc::deliver(&mut ingest, &["alice"], "mta-queue:4712", msg).await.unwrap();
    assert!(stored(&other.results[0]));

    // A first attempt that recorded its id and then died before storing: the retry stores the
    // message under that same id.
    let id = cloudpop::store::ids::new_message_id();
    let markers = server.data_dir().join("maildrops/alice/markers");
    // Callers' keys are kept apart from the server's own markers, under `key:`.
    std::fs::write(markers.join("key:crashed-attempt"), &id).unwrap();
    let retry = grpc::deliver(&mut ingest, &["alice"], "crashed-attempt", msg).await.unwrap();
    assert!(stored(&retry.results[0]) && retry.results[0].message_id == id, "{retry:?}");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("3"));
}

#[tokio::test]
async fn multi_recipient_results_are_per_recipient() {
    let server = start(&[]);
    create(&server, "alice").await;
    create(&server, "bob").await;
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let reply = grpc::deliver(&mut ingest, &["alice", "nobody", "Bob", "../x"], "", b"Subject: all\r\n\r\nhi\r\n")
        .await
        .unwrap();
    let statuses: Vec<i32> = reply.results.iter().map(|r| r.status).collect();
    let (s, u) = (DeliveryStatus::Stored as i32, DeliveryStatus::UnknownMailbox as i32);
    assert_eq!(statuses, [s, u, s, u]);
    for user in ["alice", "bob"] {
        let mut c = Client::login(server.pop3, user, "secret");
        assert_eq!(c.multi("RETR 1").1, b"Subject: all\r\n\r\nhi\r\n");
    }
    let err = grpc::deliver(&mut ingest, &["nobody"], "", b"Subject: x\r\n\r\n").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn quotas_are_enforced_with_resource_exhausted() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let quota = Quota { max_bytes: 0, max_messages: 2 };
    let acct = admin
        .set_quota(SetQuotaRequest { name: "alice".into(), quota: Some(quota), update_mask: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acct.quota.unwrap().max_messages, 2);
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let msg = b"Subject: q\r\n\r\n0123456789\r\n";
    for _ in 0..2 {
        grpc::deliver(&mut ingest, &["alice"], "", msg).await.unwrap();
    }
    let err = grpc::deliver(&mut ingest, &["alice"], "", msg).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let quota = Quota { max_bytes: 100, max_messages: 0 };
    admin.set_quota(SetQuotaRequest { name: "alice".into(), quota: Some(quota), update_mask: None }).await.unwrap();
    let err = grpc::deliver(&mut ingest, &["alice"], "", &[msg.as_slice(), &[b'x'; 60]].concat()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let stats = admin.get_mailbox_stats(GetMailboxStatsRequest { name: "alice".into() }).await.unwrap().into_inner();
    assert_eq!(stats.messages, 2);
}

#[tokio::test]
async fn calls_without_the_right_token_are_refused() {
    let server = start(&[]);
    let api = server.api.unwrap();
    let req = || CreateAccountRequest { name: "mallory".into(), password: "x".into(), quota: None, policy: None };
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("wrong"), Code::Unauthenticated),
        (Some(INGEST_TOKEN), Code::PermissionDenied),
    ] {
        let err = grpc::admin(api, token).await.create_account(req()).await.unwrap_err();
        assert_eq!(err.code(), code, "admin call with {token:?}");
    }
    for (token, code) in [(None, Code::Unauthenticated), (Some(ADMIN_TOKEN), Code::PermissionDenied)] {
        let err =
            grpc::deliver(&mut grpc::ingest(api, token).await, &["x"], "", b"Subject: x\r\n\r\n").await.unwrap_err();
        assert_eq!(err.code(), code, "ingest call with {token:?}");
    }
    // Nothing was created by the refused calls.
    let mut admin = grpc::admin(api, Some(ADMIN_TOKEN)).await;
    let err = admin.get_account(GetAccountRequest { name: "mallory".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A server with no tokens configured does not offer the API at all.
    let bare = Server::start(&[]);
    assert!(bare.api.is_none());
    assert!(!bare.log().contains("api listening"));
    // A server with only ingest tokens refuses every admin call.
    let ingest_only = Server::start(&[("CLOUDPOP_API_INGEST_TOKENS", INGEST_TOKEN)]);
    let mut admin = grpc::admin(ingest_only.api.unwrap(), Some(INGEST_TOKEN)).await;
    assert_eq!(admin.get_server_info(GetServerInfoRequest {}).await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn malformed_and_oversize_input_is_refused_and_stores_nothing() {
    let server = start(&[("CLOUDPOP_MAX_MESSAGE_SIZE", "4096")]);
    create(&server, "alice").await;
    let api = server.api.unwrap();
    let mut ingest = grpc::ingest(api, Some(INGEST_TOKEN)).await;
    let chunk_first = vec![DeliverRequest { frame: Some(deliver_request::Frame::Chunk(b"Subject: x\r\n".to_vec())) }];
    let mut two_envelopes = grpc::frames(&["alice"], "", b"Subject: x\r\n\r\n", 100);
    two_envelopes.push(two_envelopes[0].clone());
    let whole = b"Subject: cut\r\n\r\nthe first half and the second half\r\n";
    let mut truncated = grpc::frames(&["alice"], "", whole, 10);
    truncated.truncate(3);
    let mut wrong_size = grpc::frames(&["alice"], "", whole, 10);
    let last = wrong_size.len() - 1;
    wrong_size[last] =
        DeliverRequest { frame: Some(deliver_request::Frame::End(cloudpop::api::proto::End { size: 5 })) };
    let mut after_end = grpc::frames(&["alice"], "", whole, 10);
    after_end.push(after_end[1].clone());
    let cases: Vec<(&str, Vec<DeliverRequest>, Code)> = vec![
        ("chunk before envelope", chunk_first, Code::InvalidArgument),
        ("two envelopes", two_envelopes, Code::InvalidArgument),
        ("no recipients", grpc::frames(&[], "", b"Subject: x\r\n\r\n", 100), Code::InvalidArgument),
        ("not a message", grpc::frames(&["alice"], "", b"\x00\x01binary garbage\xff", 100), Code::InvalidArgument),
        ("empty", grpc::frames(&["alice"], "", b"", 100), Code::InvalidArgument),
        ("bad key", grpc::frames(&["alice"], "../../etc", b"Subject: x\r\n\r\n", 100), Code::InvalidArgument),
        (
            "oversize",
            grpc::frames(&["alice"], "", &[b"Subject: big\r\n\r\n".as_slice(), &[b'x'; 5000]].concat(), 700),
            Code::ResourceExhausted,
        ),
        ("no frames", Vec::new(), Code::InvalidArgument),
        ("no End frame (a sender that died half-way)", truncated, Code::InvalidArgument),
        ("End declares another size", wrong_size, Code::InvalidArgument),
        ("frames after End", after_end, Code::InvalidArgument),
    ];
    for (what, frames, code) in cases {
        let err = ingest.deliver(tokio_stream::iter(frames)).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    let mut admin = grpc::admin(api, Some(ADMIN_TOKEN)).await;
    let stats = admin.get_mailbox_stats(GetMailboxStatsRequest { name: "alice".into() }).await.unwrap().into_inner();
    assert_eq!(stats.messages, 0, "a refused delivery stored something");
    let spool = std::fs::read_dir(server.data_dir().join("spool")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(spool, 0, "spool files left behind");
    let bad_name = CreateAccountRequest { name: "a/b".into(), password: "x".into(), quota: None, policy: None };
    assert_eq!(admin.create_account(bad_name).await.unwrap_err().code(), Code::InvalidArgument);
    let bad_pw = CreateAccountRequest { name: "ok".into(), password: "a\r\nb".into(), quota: None, policy: None };
    assert_eq!(admin.create_account(bad_pw).await.unwrap_err().code(), Code::InvalidArgument);
    create(&server, "dup").await;
    let dup = CreateAccountRequest { name: "DUP".into(), password: "x".into(), quota: None, policy: None };
    assert_eq!(admin.create_account(dup).await.unwrap_err().code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_hundred_megabyte_delivery_in_bounded_memory() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    common::reset_peak_rss(server.pid());
    let before = common::peak_rss_kib(server.pid());
    let line = [b'y'; 98];
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let chunks = (0..100 * 1024 * 1024 / (64 * 1024)).map(move |i| {
        let mut chunk = Vec::with_capacity(64 * 1024);
        if i == 0 {
            chunk.extend_from_slice(b"Subject: huge\r\n\r\n");
        }
        while chunk.len() + 100 <= 64 * 1024 {
            chunk.extend_from_slice(&line);
            chunk.extend_from_slice(b"\r\n");
        }
        counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        DeliverRequest { frame: Some(deliver_request::Frame::Chunk(chunk)) }
    });
    // The envelope alone; the End frame follows the chunks, declaring what they added up to.
    let envelope = grpc::frames(&["alice"], "", b"", 1).into_iter().take(1);
    let end = std::iter::once_with(move || {
        let size = sent.load(std::sync::atomic::Ordering::Relaxed);
        DeliverRequest { frame: Some(deliver_request::Frame::End(cloudpop::api::proto::End { size })) }
    });
    let reply = ingest.deliver(tokio_stream::iter(envelope.chain(chunks).chain(end))).await.unwrap().into_inner();
    assert!(reply.size > 100_000_000 && stored(&reply.results[0]));
    let growth_mib = (common::peak_rss_kib(server.pid()) - before) / 1024;
    assert!(growth_mib < 48, "server memory grew by {growth_mib} MiB during a 100 MB delivery");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", reply.size));
}

/// Issue 23 item 13: an update mask changes only the fields it names; an unknown one is refused.
#[tokio::test]
async fn quota_and_policy_updates_change_only_the_masked_fields() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let mask = |paths: &[&str]| Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
    let both = Some(Quota { max_bytes: 1000, max_messages: 10 });
    admin.set_quota(SetQuotaRequest { name: "alice".into(), quota: both, update_mask: None }).await.unwrap();
    let messages_only = Some(Quota { max_bytes: 0, max_messages: 20 });
    let request = SetQuotaRequest { name: "alice".into(), quota: messages_only, update_mask: mask(&["max_messages"]) };
    let account = admin.set_quota(request).await.unwrap().into_inner();
    assert_eq!(account.quota, Some(Quota { max_bytes: 1000, max_messages: 20 }));
    let policy = Some(Policy { login_delay_secs: 60, expire_days: Some(30) });
    admin.set_policy(SetPolicyRequest { name: "alice".into(), policy, update_mask: None }).await.unwrap();
    let expire_off = Some(Policy { login_delay_secs: 0, expire_days: None });
    let request = SetPolicyRequest { name: "alice".into(), policy: expire_off, update_mask: mask(&["expire_days"]) };
    let account = admin.set_policy(request).await.unwrap().into_inner();
    assert_eq!(account.policy, Some(Policy { login_delay_secs: 60, expire_days: None }));
    let request = SetPolicyRequest { name: "alice".into(), policy: None, update_mask: mask(&["login_delay"]) };
    let refused = admin.set_policy(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("\"login_delay\""), "{refused:?}");
}

#[tokio::test]
async fn login_delay_policy_is_advertised_and_enforced() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let policy = Some(Policy { login_delay_secs: 300, expire_days: None });
    admin.set_policy(SetPolicyRequest { name: "alice".into(), policy, update_mask: None }).await.unwrap();
    let mut c = Client::connect(server.pop3);
    assert!(c.lines("CAPA").iter().any(|l| l == "LOGIN-DELAY 0 USER"));
    c.cmd("USER alice");
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    assert!(c.lines("CAPA").iter().any(|l| l == "LOGIN-DELAY 300"), "per-user value after login");
    c.cmd("QUIT");
    let mut again = Client::connect(server.pop3);
    again.cmd("USER alice");
    let reply = again.cmd("PASS secret");
    assert!(reply.starts_with("-ERR [LOGIN-DELAY]"), "{reply}");
}

#[tokio::test]
async fn account_and_mailbox_management() {
    let server = start(&[]);
    let api = server.api.unwrap();
    let mut admin = grpc::admin(api, Some(ADMIN_TOKEN)).await;
    for i in 0..25 {
        create(&server, &format!("user{i:02}")).await;
    }
    // Pagination visits every account exactly once, in order.
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page =
            admin.list_accounts(ListAccountsRequest { page_size: 10, page_token: token }).await.unwrap().into_inner();
        assert!(page.accounts.len() <= 10);
        seen.extend(page.accounts.into_iter().map(|a| a.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (0..25).map(|i| format!("user{i:02}")).collect::<Vec<_>>());

    let mut ingest = grpc::ingest(api, Some(INGEST_TOKEN)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = grpc::deliver(&mut ingest, &["user00"], "", format!("Subject: {i}\r\n\r\n").as_bytes()).await.unwrap();
        ids.push(r.results[0].message_id.clone());
    }
    let listed = admin
        .list_messages(ListMessagesRequest { name: "user00".into(), page_size: 3, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids[..3]);
    assert!(listed.messages[0].received_unix_ms > 1_700_000_000_000);
    let deleted = admin
        .delete_messages(DeleteMessagesRequest {
            name: "user00".into(),
            ids: vec![ids[1].clone(), "nonexistent".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    let stats = admin.get_mailbox_stats(GetMailboxStatsRequest { name: "user00".into() }).await.unwrap().into_inner();
    assert_eq!(stats.messages, 3);
    let purged = admin.purge_mailbox(PurgeMailboxRequest { name: "user00".into() }).await.unwrap().into_inner();
    assert_eq!(purged.deleted, 3);

    // Disabled accounts can neither log in nor receive mail.
    let acct =
        admin.set_enabled(SetEnabledRequest { name: "user01".into(), enabled: false }).await.unwrap().into_inner();
    assert!(!acct.enabled);
    let mut c = Client::connect(server.pop3);
    c.cmd("USER user01");
    assert!(c.cmd("PASS secret").starts_with("-ERR [AUTH]"));
    let r = grpc::deliver(&mut ingest, &["user01", "user02"], "", b"Subject: x\r\n\r\n").await.unwrap();
    assert_eq!(r.results[0].status, DeliveryStatus::Disabled as i32);
    admin.set_password(SetPasswordRequest { name: "user02".into(), password: "new".into() }).await.unwrap();
    let mut c = Client::connect(server.pop3);
    c.cmd("USER user02");
    assert!(c.cmd("PASS new").starts_with("+OK"));
    c.cmd("QUIT");

    // Deleting an account deletes its mail.
    admin.delete_account(DeleteAccountRequest { name: "user02".into() }).await.unwrap();
    assert_eq!(
        admin.get_account(GetAccountRequest { name: "user02".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!server.data_dir().join("maildrops/user02").exists());
    assert_eq!(
        admin.delete_account(DeleteAccountRequest { name: "user02".into() }).await.unwrap_err().code(),
        Code::NotFound
    );

    let info = admin.get_server_info(GetServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (info.store.as_str(), info.locks.as_str(), info.version.as_str()),
        ("fs", "memory", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn an_operator_can_free_a_stuck_lock() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut holder = Client::login(server.pop3, "alice", "secret");
    assert!(holder.cmd("DELE 1").starts_with("-ERR"));
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let released = admin.release_lock(ReleaseLockRequest { name: "alice".into() }).await.unwrap().into_inner();
    assert!(released.released);
    let mut other = Client::login(server.pop3, "alice", "secret");
    assert!(other.cmd("STAT").starts_with("+OK"));
    let again = admin.release_lock(ReleaseLockRequest { name: "bob".into() }).await.unwrap().into_inner();
    assert!(!again.released);
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let server = start(&[]);
    let channel = grpc::channel(server.api.unwrap()).await;
    // What grpcurl does: list the services by reflection (v1, and v1alpha for grpcurl before
    // 1.8.8), with the token, then call one of them.
    macro_rules! services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{ServerReflectionRequest, ServerReflectionResponse};
            let mut client = ServerReflectionClient::with_interceptor(channel.clone(), grpc::Bearer::admin());
            let list = MessageRequest::ListServices(String::new());
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(list) };
            let mut stream = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
            let answer: Option<ServerReflectionResponse> = stream.message().await.unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = answer.unwrap().message_response else {
                panic!("unexpected reflection answer");
            };
            list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
        }};
    }
    let (v1, v1alpha) = (services!(v1), services!(v1alpha));
    for names in [&v1, &v1alpha] {
        for want in ["cloudpop.v1.Admin", "cloudpop.v1.Ingest", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }
    // Without a token, reflection is refused; the health check itself needs none.
    let mut anonymous =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let refused = anonymous.server_reflection_info(tokio_stream::iter([req])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest { service: String::new() };
    assert!(health.check(check).await.is_ok());
}

/// Polls grpc.health.v1 until it reports `want` (the probe runs every two seconds).
async fn wait_for_health(api: std::net::SocketAddr, want: tonic_health::pb::health_check_response::ServingStatus) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(grpc::channel(api).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = client.check(HealthCheckRequest { service: String::new() }).await.map(|r| r.into_inner().status);
        if status.as_ref().is_ok_and(|s| *s == want as i32) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "health never became {want:?} (last: {status:?})");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_stays_serving_through_backend_outages() {
    use common::cloud::{Redis, S3, cloud_env};
    use tonic_health::pb::health_check_response::ServingStatus::Serving;
    let mut redis = Redis::start();
    let mut s3 = S3::start();
    let bucket = s3.bucket("mail");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.extend(token_env().iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    let api = server.api.unwrap();
    server.wait_ready(200);
    wait_for_health(api, Serving).await;
    // A shared backend's outage leaves the frontend serving, degraded (issue 22 item 18): the
    // gRPC health service says what /readyz says.
    for outage in ["lock service", "message store"] {
        match outage {
            "lock service" => redis.stop(),
            _ => s3.stop(),
        }
        let ops = server.ops.unwrap();
        common::eventually_async("the outage never showed", || async move {
            tokio::task::spawn_blocking(move || common::http_get(ops, "/readyz").1).await.unwrap().contains(outage)
        })
        .await;
        wait_for_health(api, Serving).await;
        match outage {
            "lock service" => redis.restart(),
            _ => s3.restart(),
        }
        common::eventually_async("readiness never recovered", || async move {
            tokio::task::spawn_blocking(move || common::http_get(ops, "/readyz").1).await.unwrap().trim() == "ready"
        })
        .await;
    }
    // Cloud mode through the API: create, deliver, retrieve.
    create(&server, "carol").await;
    let mut ingest = grpc::ingest(api, Some(INGEST_TOKEN)).await;
    grpc::deliver(&mut ingest, &["carol"], "k1", b"Subject: cloud\r\n\r\nvia s3\r\n").await.unwrap();
    let dup = grpc::deliver(&mut ingest, &["carol"], "k1", b"Subject: cloud\r\n\r\nvia s3\r\n").await.unwrap();
    assert_eq!(dup.results[0].status, DeliveryStatus::Duplicate as i32);
    let mut c = Client::login(server.pop3, "carol", "secret");
    assert_eq!(c.multi("RETR 1").1, b"Subject: cloud\r\n\r\nvia s3\r\n");
    assert!(c.cmd("RETR 2").starts_with("-ERR"));
}

#[tokio::test]
async fn api_over_tls_requires_a_client_certificate_when_configured() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.path().join("clients-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert =
        CertificateParams::new(vec!["ops-client".to_string()]).unwrap().signed_by(&client_key, &ca).unwrap();

    let mut env: Vec<(&str, &str)> = token_env().to_vec();
    env.extend([("CLOUDPOP_API_TLS", "true"), ("CLOUDPOP_API_CLIENT_CA", ca_path.to_str().unwrap())]);
    let server = Server::start(&env);
    let url = format!("https://localhost:{}", server.api.unwrap().port());
    let server_ca = Certificate::from_pem(std::fs::read(server.cert()).unwrap());

    let with_cert = ClientTlsConfig::new()
        .ca_certificate(server_ca.clone())
        .domain_name("localhost")
        .identity(Identity::from_pem(client_cert.pem(), client_key.serialize_pem()));
    let channel = Channel::from_shared(url.clone()).unwrap().tls_config(with_cert).unwrap().connect().await.unwrap();
    let mut admin = AdminClient::with_interceptor(channel, grpc::Bearer::admin());
    let info = admin.get_server_info(GetServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.store, "fs");

    let without = ClientTlsConfig::new().ca_certificate(server_ca).domain_name("localhost");
    let refused = async {
        let channel = Channel::from_shared(url).unwrap().tls_config(without).unwrap().connect().await?;
        AdminClient::with_interceptor(channel, grpc::Bearer::admin())
            .get_server_info(GetServerInfoRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(refused.await.is_err(), "a client without a certificate got through");
}

#[tokio::test]
async fn retention_policy_expires_retrieved_mail_once_and_keeps_the_rest() {
    let server = start(&[("CLOUDPOP_SWEEP_INTERVAL_SECS", "1")]);
    let api = server.api.unwrap();
    create(&server, "alice").await;
    create(&server, "bob").await;
    let mut admin = grpc::admin(api, Some(ADMIN_TOKEN)).await;
    let policy = Some(Policy { login_delay_secs: 0, expire_days: Some(0) });
    let acct = admin
        .set_policy(SetPolicyRequest { name: "alice".into(), policy, update_mask: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acct.policy.unwrap().expire_days, Some(0));
    let mut ingest = grpc::ingest(api, Some(INGEST_TOKEN)).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let r = grpc::deliver(&mut ingest, &["alice", "bob"], "", format!("Subject: {i}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        ids.push(r.results[0].message_id.clone());
    }
    for user in ["alice", "bob"] {
        let mut c = Client::login(server.pop3, user, "secret");
        let caps = c.lines("CAPA");
        let want = if user == "alice" { "EXPIRE 0" } else { "EXPIRE NEVER" };
        assert!(caps.iter().any(|l| l == want), "{user}: {caps:?}");
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        c.body();
        assert!(c.multi("TOP 2 0").0.starts_with("+OK"), "TOP is not a retrieval");
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    // The sweeper removes alice's retrieved message (and only that one) within a few rounds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let req = ListMessagesRequest { name: "alice".into(), page_size: 0, page_token: String::new() };
        let left: Vec<String> =
            admin.list_messages(req).await.unwrap().into_inner().messages.into_iter().map(|m| m.id).collect();
        if left.len() == 1 {
            assert_eq!(left, [ids[1].clone()]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retrieved mail never expired: {left:?}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let bob = admin.get_mailbox_stats(GetMailboxStatsRequest { name: "bob".into() }).await.unwrap().into_inner();
    assert_eq!(bob.messages, 2, "mail of an account without retention policy was removed");
}

#[tokio::test]
async fn the_callers_trace_context_is_kept_with_the_message() {
    let server = start(&[]);
    create(&server, "alice").await;
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(tokio_stream::iter(grpc::frames(&["alice"], "", b"Subject: t\r\n\r\n", 100)));
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    let reply = ingest.deliver(request).await.unwrap().into_inner();
    let id = &reply.results[0].message_id;
    let kept = std::fs::read_to_string(server.data_dir().join(format!("maildrops/alice/markers/trace.{id}"))).unwrap();
    assert_eq!(kept, traceparent);
}

#[tokio::test]
async fn migrated_mail_keeps_its_uidl_and_place() {
    let server = start(&[]);
    create(&server, "alice").await;
    let api = server.api.unwrap();
    let mut ingest = grpc::ingest(api, Some(INGEST_TOKEN)).await;
    grpc::deliver(&mut ingest, &["alice"], "", b"Subject: new\r\n\r\n").await.unwrap();
    let migrate = |uidl: &str, ms: i64| {
        let mut frames = grpc::frames(&["alice"], "", b"Subject: old\r\n\r\nfrom the old server\r\n", 100);
        if let Some(deliver_request::Frame::Envelope(e)) = &mut frames[0].frame {
            e.uidl = uidl.into();
            e.received_unix_ms = ms;
        }
        frames
    };
    let old =
        ingest.deliver(tokio_stream::iter(migrate("legacy:001/A", 1_500_000_000_000))).await.unwrap().into_inner();
    assert!(stored(&old.results[0]), "{old:?}");
    let again =
        ingest.deliver(tokio_stream::iter(migrate("legacy:001/A", 1_500_000_000_000))).await.unwrap().into_inner();
    assert_eq!(again.results[0].status, DeliveryStatus::Duplicate as i32, "a migration re-run duplicated mail");
    for bad in ["has space", &"x".repeat(71)] {
        let err = ingest.deliver(tokio_stream::iter(migrate(bad, 0))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let mut admin = grpc::admin(api, Some(ADMIN_TOKEN)).await;
    let req = ListMessagesRequest { name: "alice".into(), page_size: 0, page_token: String::new() };
    let listed = admin.list_messages(req).await.unwrap().into_inner().messages;
    assert_eq!((listed[0].uidl.as_str(), listed[0].received_unix_ms), ("legacy:001/A", 1_500_000_000_000));

    let mut c = Client::login(server.pop3, "alice", "secret");
    let uidls = c.lines("UIDL");
    assert_eq!(uidls[0], "1 legacy:001/A", "the migrated message should come first, with its old UIDL");
    assert_eq!(c.multi("RETR 1").1, b"Subject: old\r\n\r\nfrom the old server\r\n");
    assert!(c.cmd("DELE 1").starts_with("+OK") && c.cmd("QUIT").starts_with("+OK"));
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.lines("UIDL").len(), 1);
    c.cmd("QUIT");
    // A UIDL is never reused, even after its message was deleted.
    let after =
        ingest.deliver(tokio_stream::iter(migrate("legacy:001/A", 1_500_000_000_000))).await.unwrap().into_inner();
    assert_eq!(after.results[0].status, DeliveryStatus::Duplicate as i32, "a deleted message's UIDL was reused");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.lines("UIDL").len(), 1);
    c.cmd("QUIT");

    // An attempt that named its id in the UIDL's marker and died before storing: the retry
    // stores under that id. One that died after storing: the retry finds the message.
    use cloudpop::store::ids;
    let markers = server.data_dir().join("maildrops/alice/markers");
    let crashed = ids::with_uidl(&ids::new_message_id_at(1_400_000_000_000), "legacy:002/B");
    std::fs::write(markers.join(format!("uidl.{}", ids::uidl_hex("legacy:002/B"))), format!("{crashed} pending"))
        .unwrap();
    let retry =
        ingest.deliver(tokio_stream::iter(migrate("legacy:002/B", 1_400_000_000_000))).await.unwrap().into_inner();
    assert!(stored(&retry.results[0]) && retry.results[0].message_id == crashed, "{retry:?}");
    let marker = markers.join(format!("uidl.{}", ids::uidl_hex("legacy:002/B")));
    std::fs::write(&marker, format!("{crashed} pending")).unwrap();
    let again =
        ingest.deliver(tokio_stream::iter(migrate("legacy:002/B", 1_400_000_000_000))).await.unwrap().into_inner();
    assert_eq!(again.results[0].status, DeliveryStatus::Duplicate as i32, "{again:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), crashed, "the marker was not made final");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.lines("UIDL").len(), 2);
}
