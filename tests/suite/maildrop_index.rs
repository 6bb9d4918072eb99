//! The S3 backend's maildrop index against a real S3 server (s3s-fs): a login costs three or
//! four requests whatever the maildrop's size, in one or two round trips when it is small, deliveries racing index rewrites lose nothing, a
//! removal hides messages before they are gone, an older index never wins, and a damaged one is
//! rebuilt. Old message ids (as slow uploads and migrations make) are used on purpose: they are
//! the ones an index could hide.

use crate::common::cloud::{S3, s3_settings};
use cloudpop::names::AccountName;
use cloudpop::store::ids::new_message_id_at;
use cloudpop::store::observed::count_calls;
use cloudpop::store::s3::S3Store;
use cloudpop::store::{IndexSeen, MessageStore, StoredMessage, Upkeep};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

struct Fixture {
    s3: S3,
    bucket: String,
    store: S3Store,
}

async fn fixture() -> Fixture {
    let s3 = S3::start();
    let bucket = s3.bucket("index");
    let settings = s3_settings(&s3, &bucket, "t");
    let store = S3Store::new(&settings).await;
    Fixture { s3, bucket, store }
}

impl Fixture {
    /// The files s3s-fs keeps the maildrop's index objects in.
    fn index_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![self.s3.root.path().join("data").join(&self.bucket).join("t/index")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.file_name().is_some_and(|n| n.to_string_lossy().bytes().all(|b| b.is_ascii_digit())) {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }
}

impl Fixture {
    /// A store client of the fixture's bucket through a relay failing as `rule` says, with no
    /// retries.
    async fn failing_at(&self, rule: crate::common::cloud::BatchDeletes) -> (crate::common::cloud::S3Gate, S3Store) {
        let gate = crate::common::cloud::S3Gate::start(self.s3.port, rule);
        let mut settings = s3_settings(&self.s3, &self.bucket, "t");
        settings.endpoint = gate.endpoint();
        settings.max_attempts = 1;
        (gate, S3Store::new(&settings).await)
    }

    /// The names of the late-arrival markers s3s-fs holds, in every maildrop.
    fn late_marker_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![self.s3.root.path().join("data").join(&self.bucket)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.parent().is_some_and(|p| p.ends_with("~late")) {
                    found.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        found
    }
}

fn md(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Stores a message whose id says it was received at `received_ms`.
async fn put_at(store: &S3Store, maildrop: &AccountName, received_ms: u64) -> StoredMessage {
    let mut new = store.create_with_id(maildrop, &new_message_id_at(received_ms)).await.unwrap();
    new.write(format!("Subject: received {received_ms}\r\n\r\nbody\r\n").as_bytes()).await.unwrap();
    new.commit().await.unwrap()
}

/// `count` messages received hours ago, 16 at a time; their ids, sorted.
async fn put_old(store: &S3Store, maildrop: &AccountName, count: u64) -> Vec<String> {
    let base = now_ms() - 3 * 3600 * 1000;
    let mut ids: Vec<String> = futures::stream::iter(0..count)
        .map(|i| async move { put_at(store, maildrop, base + i).await.id })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.sort();
    ids
}

async fn listed(store: &S3Store, maildrop: &AccountName) -> Vec<String> {
    store.list(maildrop).await.unwrap().into_iter().map(|m| m.id).collect()
}

#[tokio::test]
async fn a_login_costs_four_requests_at_most_whatever_the_size_of_the_maildrop() {
    let f = fixture().await;
    let name = md("big");
    let mut ids = put_old(&f.store, &name, 1100).await;
    // No index yet: the whole maildrop (and every late marker) is listed, page by page.
    let (view, requests) = count_calls(f.store.view(&name)).await;
    let view = view.unwrap();
    assert!(requests > 3, "a full listing of 2,200 keys took {requests} requests");
    assert_eq!(view.upkeep, Upkeep::Due, "a large maildrop without an index asks for one");
    assert_eq!(view.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);

    f.store.upkeep(&name, 100, &[], IndexSeen::Unknown).await.unwrap();
    let (view, requests) = count_calls(f.store.view(&name)).await;
    let view = view.unwrap();
    // The index keys and the first page of the maildrop at once, the index, then the keys after
    // its watermark: the first page (1,000 keys) does not reach past the watermark here.
    assert_eq!(requests, 4, "an indexed login of more than 1,000 keys");
    assert_eq!(view.upkeep, Upkeep::BeforeRemoval);
    assert_eq!(view.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);
    assert!(view.messages.iter().all(|m| m.size > 0));

    // New mail is found by the listing after the watermark: still four requests.
    for _ in 0..5 {
        ids.push(put_at(&f.store, &name, now_ms()).await.id);
    }
    let (view, requests) = count_calls(f.store.view(&name)).await;
    assert_eq!(requests, 4);
    assert_eq!(view.unwrap().messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn an_operators_page_is_one_request_whatever_the_size_of_the_maildrop() {
    let f = fixture().await;
    let name = md("paged");
    // Old ids: each has a late marker too, which a page must not show as a message.
    let ids = put_old(&f.store, &name, 250).await;
    f.store.upkeep(&name, 7, &[], IndexSeen::Unknown).await.unwrap();
    let (mut seen, mut after, mut pages) = (Vec::new(), String::new(), Vec::new());
    loop {
        let (page, requests) = count_calls(f.store.list_page(&name, &after, 100)).await;
        let (page, more) = page.unwrap();
        assert_eq!(requests, 1, "page {} took {requests} requests", pages.len() + 1);
        assert!(page.iter().all(|m| m.size > 0));
        pages.push((page.len(), more));
        seen.extend(page.into_iter().map(|m| m.id));
        if !more {
            break;
        }
        after = seen.last().unwrap().clone();
    }
    assert_eq!(pages, [(100, true), (100, true), (50, false)]);
    assert_eq!(seen, ids, "the pages together are the maildrop, in order, once each");
    let (last, _) = f.store.list_page(&name, &ids[249], 100).await.unwrap();
    assert!(last.is_empty());
}

#[tokio::test]
async fn small_maildrops_get_no_index() {
    let f = fixture().await;
    let name = md("small");
    let ids = put_old(&f.store, &name, 10).await;
    f.store.upkeep(&name, 1, &[], IndexSeen::Unknown).await.unwrap();
    assert!(f.index_files().is_empty(), "an index for ten messages");
    let (view, requests) = count_calls(f.store.view(&name)).await;
    let view = view.unwrap();
    assert_eq!(requests, 2, "index keys and one listing page");
    assert_eq!(view.upkeep, Upkeep::None, "the late markers were cleared");
    assert_eq!(view.messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn a_removal_hides_messages_before_they_are_gone_and_an_older_index_never_wins() {
    let f = fixture().await;
    let name = md("fenced");
    let ids = put_old(&f.store, &name, 150).await;
    f.store.upkeep(&name, 10, &[], IndexSeen::Unknown).await.unwrap();
    let older = f.index_files();
    assert_eq!(older.len(), 1);
    let older_text = std::fs::read(&older[0]).unwrap();

    // The holder with fence 20 records the removal, then "crashes" before removing anything.
    let doomed: Vec<String> = ids[..5].to_vec();
    f.store.upkeep(&name, 20, &doomed, IndexSeen::Unknown).await.unwrap();
    assert_eq!(listed(&f.store, &name).await, ids[5..].to_vec(), "removed messages still listed");
    for id in &doomed {
        assert!(f.store.exists(&name, id).await.unwrap(), "upkeep removed {id} itself");
    }

    // A holder that lost its lease without noticing: its index (fence 10, listing the doomed
    // messages) lands late. It is not the newest, so nothing comes back.
    std::fs::write(&older[0], &older_text).unwrap();
    assert_eq!(f.index_files().len(), 2);
    assert_eq!(listed(&f.store, &name).await, ids[5..].to_vec(), "an older index brought messages back");
    // And such a holder is refused outright when it tries to write again.
    let stale = f.store.upkeep(&name, 15, &[], IndexSeen::Unknown).await;
    assert!(stale.is_err(), "a holder with an older fence rewrote the index");

    // The next holder removes the tombstones for good and clears the stray index.
    f.store.upkeep(&name, 30, &[], IndexSeen::Unknown).await.unwrap();
    for id in &doomed {
        assert!(!f.store.exists(&name, id).await.unwrap(), "tombstoned {id} was never removed");
    }
    assert_eq!(f.index_files().len(), 1);
    assert_eq!(listed(&f.store, &name).await, ids[5..].to_vec());
}

#[tokio::test]
async fn deliveries_racing_index_rewrites_lose_nothing() {
    let f = fixture().await;
    let name = md("racing");
    let mut expected = put_old(&f.store, &name, 120).await;
    f.store.upkeep(&name, 1, &[], IndexSeen::Unknown).await.unwrap();
    let store = &f.store;
    let deliveries = async {
        let start = now_ms();
        futures::stream::iter(0..150u64)
            .map(|i| {
                // Half fresh, half received an hour ago (they leave late markers).
                let at = if i % 2 == 0 { now_ms() } else { start - 3600 * 1000 - i };
                let name = &name;
                async move { put_at(store, name, at).await.id }
            })
            .buffer_unordered(8)
            .collect::<Vec<String>>()
            .await
    };
    let rewrites = async {
        for fence in 2..=25 {
            store.upkeep(&name, fence, &[], IndexSeen::Unknown).await.unwrap();
        }
    };
    let (delivered, ()) = tokio::join!(deliveries, rewrites);
    expected.extend(delivered);
    expected.sort();
    assert_eq!(listed(store, &name).await, expected, "a delivery was lost or duplicated");
    store.upkeep(&name, 26, &[], IndexSeen::Unknown).await.unwrap();
    let (view, requests) = count_calls(store.view(&name)).await;
    assert_eq!(view.unwrap().messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), expected);
    assert_eq!(requests, 3);
}

#[tokio::test]
async fn a_damaged_index_is_rebuilt_from_a_full_listing() {
    let f = fixture().await;
    let name = md("damaged");
    let ids = put_old(&f.store, &name, 130).await;
    f.store.upkeep(&name, 1, &[], IndexSeen::Unknown).await.unwrap();
    let file = f.index_files().pop().unwrap();
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();

    let view = f.store.view(&name).await.unwrap();
    assert_eq!(view.messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), ids, "a damaged index hid mail");
    assert_eq!(view.upkeep, Upkeep::Due);
    f.store.upkeep(&name, 2, &[], IndexSeen::Unknown).await.unwrap();
    let (view, requests) = count_calls(f.store.view(&name)).await;
    assert_eq!(requests, 3);
    assert_eq!(view.unwrap().messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}

/// Issue 24: a login does not wait for one listing before it sends the next. Through a gate
/// that holds every request 300 ms, the index keys and the maildrop's keys are asked for at
/// once (their requests arrive together, not a hold apart), and on a maildrop of up to 1,000
/// keys the first page of its listing stands in for the listing after the index's watermark.
#[tokio::test]
async fn a_login_lists_the_index_keys_and_the_maildrop_at_once() {
    use crate::common::cloud::{BatchDeletes, S3Gate};
    use std::time::Duration;
    let f = fixture().await;
    let hold = Duration::from_millis(300);
    let gate = S3Gate::holding(f.s3.port, BatchDeletes::PassAll, hold);
    let mut settings = s3_settings(&f.s3, &f.bucket, "t");
    settings.endpoint = gate.endpoint();
    let far = S3Store::new(&settings).await;
    // The gate notes a request once it is done relaying it, a moment after the client has
    // its answer.
    let lists = |gate: &S3Gate, want: usize| {
        crate::common::eventually("the gate did not note the listings", || gate.spans_of("list-type=2").len() >= want);
        gate.spans_of("list-type=2")
    };

    // A small maildrop, no index: two listings, sent together.
    let small = md("small");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(put_at(&f.store, &small, now_ms()).await.id);
    }
    assert_eq!(listed(&far, &small).await, ids);
    let spans = lists(&gate, 2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans[0].apart(&spans[1]) < hold / 2, "the two listings went one after the other: {spans:?}");

    // An indexed maildrop of 150 messages and 3 new ones: the two listings together, then the
    // index; no listing after the watermark.
    let big = md("indexed");
    let mut ids = put_old(&f.store, &big, 150).await;
    f.store.upkeep(&big, 1, &[], IndexSeen::Unknown).await.unwrap();
    for _ in 0..3 {
        ids.push(put_at(&f.store, &big, now_ms()).await.id);
    }
    gate.spans.lock().unwrap().clear();
    let (view, requests) = count_calls(far.view(&big)).await;
    assert_eq!(view.unwrap().messages.into_iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(requests, 3, "an indexed login of up to 1,000 keys");
    let spans = lists(&gate, 2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans[0].apart(&spans[1]) < hold / 2, "the two listings went one after the other: {spans:?}");
    assert!(spans.iter().all(|s| !s.line.contains("start-after")), "a listing after the watermark: {spans:?}");
}

/// S3 requests of one operation so far (2xx and 404 answers alike).
fn s3_requests(server: &crate::common::Server, operation: &str) -> f64 {
    server.metrics().sum("cloudpop_s3_requests_total", &format!("operation=\"{operation}\""))
}

/// Through the real binary in cloud mode: the first session's QUIT writes the index, the next
/// login reads the maildrop in three requests, and DELE on an indexed maildrop sticks.
#[tokio::test]
async fn pop3_sessions_keep_the_index_and_use_it() {
    use crate::common::cloud::{Redis, cloud_env};
    use crate::common::{Client, Server};
    let redis = Redis::start();
    let s3 = S3::start();
    let bucket = s3.bucket("mail");
    let settings = s3_settings(&s3, &bucket, "pool");
    let mut env = cloud_env(&s3, &bucket, &redis);
    // The account record is read at every login here, so the counts below do not depend on
    // when the account cache's feed subscribed.
    env.push(("CLOUDPOP_ACCOUNT_CACHE_SECS".into(), "0".into()));
    // The server reaches S3 through a relay that counts requests on the wire, so the counts
    // below do not rest on cloudpop's own request counter alone.
    let gate = crate::common::cloud::S3Gate::start(s3.port, crate::common::cloud::BatchDeletes::PassAll);
    env.retain(|(k, _)| k != "CLOUDPOP_S3_ENDPOINT");
    env.push(("CLOUDPOP_S3_ENDPOINT".into(), gate.endpoint()));
    let wire = |gate: &crate::common::cloud::S3Gate| {
        let lists = gate.count("GET", |t| t.contains("list-type=2"));
        let gets = gate.count("GET", |t| !t.contains("list-type="));
        (lists as f64, gets as f64)
    };
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    // The account first: creating one clears whatever an earlier account of the name left.
    server.add_account("bigbox", "pw");
    let seeded = put_old(&S3Store::new(&settings).await, &md("bigbox"), 150).await;
    let pop3 = server.pop3;
    let session = move |commands: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let mut c = Client::login(pop3, "bigbox", "pw");
            let replies: Vec<String> = commands.iter().map(|cmd| c.cmd(cmd)).collect();
            assert!(c.cmd("QUIT").starts_with("+OK"));
            replies
        })
    };
    // First session: a full listing (no index yet); its QUIT writes the index.
    assert!(session(vec!["STAT".into()]).await.unwrap()[0].starts_with("+OK 150 "));

    let (lists, gets) = (s3_requests(&server, "ListObjectsV2"), s3_requests(&server, "GetObject"));
    let on_wire = wire(&gate);
    let replies = session((1..=10).map(|i| format!("DELE {i}")).collect()).await.unwrap();
    assert!(replies.iter().all(|r| r.starts_with("+OK")), "{replies:?}");
    // The login: the account record, then the maildrop in three requests (index keys, the
    // index, the listing after its watermark). The QUIT's upkeep reads the maildrop the same
    // way once more before it writes the new index and removes.
    let session_lists = s3_requests(&server, "ListObjectsV2") - lists;
    let session_gets = s3_requests(&server, "GetObject") - gets;
    assert_eq!((session_lists, session_gets), (4.0, 3.0), "S3 requests of a session with DELE and QUIT");
    let (wire_lists, wire_gets) = wire(&gate);
    let on_the_wire = (wire_lists - on_wire.0, wire_gets - on_wire.1);
    assert_eq!(on_the_wire, (session_lists, session_gets), "cloudpop's request counter disagrees with the wire");

    let uidls = tokio::task::spawn_blocking(move || Client::login(pop3, "bigbox", "pw").lines("UIDL")).await.unwrap();
    let listed: Vec<&str> = uidls.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(listed, seeded[10..].iter().map(String::as_str).collect::<Vec<_>>(), "DELE on an indexed maildrop");
}

/// Quota checks read the pool's usage counter, not the mailbox: one listing starts the counter,
/// then deliveries, QUIT deletions and operator deletions keep it exact without listing.
/// Kept-UIDL deliveries need no listing either.
#[tokio::test]
async fn quota_checks_count_without_listing_the_mailbox() {
    use crate::common::api::{self as grpc, ADMIN_TOKEN, INGEST_TOKEN, token_env};
    use crate::common::cloud::{Redis, cloud_env};
    use crate::common::{Client, Server};
    use cloudpop::api::proto::{DeleteMessagesRequest, Quota, SetQuotaRequest};
    let redis = Redis::start();
    let s3 = S3::start();
    let bucket = s3.bucket("mail");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.extend(token_env().map(|(k, v)| (k.to_string(), v.to_string())));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("quota", "pw");
    let seeded = put_old(&S3Store::new(&s3_settings(&s3, &bucket, "pool")).await, &md("quota"), 150).await;
    let mut admin = grpc::admin(server.api.unwrap(), Some(ADMIN_TOKEN)).await;
    let quota = Quota { max_bytes: 0, max_messages: 153 };
    admin.set_quota(SetQuotaRequest { name: "quota".into(), quota: Some(quota), update_mask: None }).await.unwrap();
    let mut ingest = grpc::ingest(server.api.unwrap(), Some(INGEST_TOKEN)).await;
    let message = b"Subject: q\r\n\r\nbody\r\n";
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();

    // The first delivery reads the maildrop once (its index keys, then its messages) and
    // starts the counter; the next ones list nothing.
    let lists = s3_requests(&server, "ListObjectsV2");
    grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap();
    assert_eq!(s3_requests(&server, "ListObjectsV2") - lists, 2.0, "the first quota check");
    let lists = s3_requests(&server, "ListObjectsV2");
    grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap();
    grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap();
    let full = grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
    assert_eq!(s3_requests(&server, "ListObjectsV2") - lists, 0.0, "quota checks listed the mailbox");
    assert_eq!(usage_counter(&mut conn).await.0, 153);

    // A session deletes two and the operator one: room for three again, still without listing.
    let pop3 = server.pop3;
    let stat = tokio::task::spawn_blocking(move || {
        let mut c = Client::login(pop3, "quota", "pw");
        assert!(c.cmd("DELE 1").starts_with("+OK") && c.cmd("DELE 2").starts_with("+OK"));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let mut c = Client::login(pop3, "quota", "pw");
        let stat = c.cmd("STAT");
        c.cmd("QUIT");
        stat
    })
    .await
    .unwrap();
    let (messages, octets) = usage_counter(&mut conn).await;
    assert_eq!(stat, format!("+OK {messages} {octets}"), "the counter after QUIT differs from the mailbox");
    assert_eq!(messages, 151);
    admin.delete_messages(DeleteMessagesRequest { name: "quota".into(), ids: vec![seeded[2].clone()] }).await.unwrap();
    assert_eq!(usage_counter(&mut conn).await.0, 150);
    let lists = s3_requests(&server, "ListObjectsV2");
    for _ in 0..3 {
        grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap();
    }
    let full = grpc::deliver(&mut ingest, &["quota"], "", message).await.unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    assert_eq!(s3_requests(&server, "ListObjectsV2") - lists, 0.0, "quota checks listed the mailbox");
}

/// The pool's usage counter of the `quota` mailbox: (messages, octets).
async fn usage_counter(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let (messages, octets): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
        .arg("cloudpop:usage:{quota}")
        .arg("messages")
        .arg("octets")
        .query_async(conn)
        .await
        .unwrap();
    (messages.expect("no counter"), octets.expect("no counter"))
}

/// Issue 22 item 8: a late delivery whose marker cannot be written (and whose clean-up cannot
/// delete anything) leaves no message hidden under the index. The marker is written first, so
/// the failure comes before the message exists; before, the message was stored, the marker
/// failed, the rollback failed, and the message sat under the watermark where no login saw it
/// while its retry answered "duplicate".
#[tokio::test]
async fn a_late_delivery_whose_marker_fails_hides_nothing() {
    use crate::common::cloud::BatchDeletes;
    let f = fixture().await;
    let name = md("unmarked");
    let ids = put_old(&f.store, &name, 120).await;
    f.store.upkeep(&name, 1, &[], IndexSeen::Unknown).await.unwrap();
    let (gate, failing) = f.failing_at(BatchDeletes::FailLateMarkersAndDeletes).await;
    let id = new_message_id_at(now_ms() - 2 * 3600 * 1000);
    let mut new = failing.create_with_id(&name, &id).await.unwrap();
    new.write(b"Subject: late\r\n\r\nmigrated\r\n").await.unwrap();
    assert!(new.commit().await.is_err(), "a late message was stored without its marker");
    assert!(gate.batches_refused.load(std::sync::atomic::Ordering::SeqCst) > 0, "the gate failed nothing");
    // Whatever is stored is visible, before and after the next rewrite of the index.
    let stored = f.store.exists(&name, &id).await.unwrap();
    f.store.upkeep(&name, 2, &[], IndexSeen::Unknown).await.unwrap();
    let seen = listed(&f.store, &name).await;
    assert_eq!(seen.contains(&id), stored, "stored: {stored}, listed: {}", seen.contains(&id));
    assert_eq!(seen.len(), ids.len() + usize::from(stored));
    // The retry through a healthy store delivers it, visibly.
    let mut again = f.store.create_with_id(&name, &id).await.unwrap();
    again.write(b"Subject: late\r\n\r\nmigrated\r\n").await.unwrap();
    again.commit().await.unwrap();
    f.store.upkeep(&name, 3, &[], IndexSeen::Unknown).await.unwrap();
    assert!(listed(&f.store, &name).await.contains(&id), "the retried message is hidden");
}

/// Issue 22 item 8: a marker whose message has not arrived (a delivery still uploading, or one
/// cut off after the marker) lists nothing and survives a rewrite of the index; once the
/// message arrives it is listed.
#[tokio::test]
async fn a_marker_without_its_message_lists_nothing_and_waits() {
    use crate::common::cloud::BatchDeletes;
    let f = fixture().await;
    let name = md("waiting");
    let ids = put_old(&f.store, &name, 120).await;
    f.store.upkeep(&name, 1, &[], IndexSeen::Unknown).await.unwrap();
    let (_gate, failing) = f.failing_at(BatchDeletes::FailMessagesAndDeletes).await;
    let id = new_message_id_at(now_ms() - 2 * 3600 * 1000);
    let body = b"Subject: late\r\n\r\nstill uploading\r\n";
    let mut new = failing.create_with_id(&name, &id).await.unwrap();
    new.write(body).await.unwrap();
    assert!(new.commit().await.is_err(), "the gate let the message through");
    assert!(!f.store.exists(&name, &id).await.unwrap());
    let (view, requests) = count_calls(f.store.view(&name)).await;
    assert_eq!(view.unwrap().messages.len(), ids.len(), "a marker without its message was listed");
    assert_eq!(requests, 4, "three requests and one HEAD for the marker");
    f.store.upkeep(&name, 2, &[], IndexSeen::Unknown).await.unwrap();
    assert!(f.late_marker_files().iter().any(|m| m.starts_with(&id)), "the rewrite removed a waiting marker");
    // The message arrives (the delivery's retry): now it is listed.
    let mut again = f.store.create_with_id(&name, &id).await.unwrap();
    again.write(body).await.unwrap();
    again.commit().await.unwrap();
    assert!(listed(&f.store, &name).await.contains(&id), "the late message is hidden");
}

/// Issue 22 item 10: a holder that lost the maildrop writes its index late (a pause between its
/// lease check and its write: here, the write is simply made after the next holder's view).
/// The next holder discards that index instead of applying its tombstones, so no message of
/// its view is removed; before, it removed them.
#[tokio::test]
async fn an_index_written_after_its_holder_was_fenced_out_is_discarded() {
    let f = fixture().await;
    let name = md("fenced-late");
    let ids = put_old(&f.store, &name, 150).await;
    f.store.upkeep(&name, 10, &[], IndexSeen::Unknown).await.unwrap();
    // The next holder (fence 30) takes its view.
    let view = f.store.view(&name).await.unwrap();
    assert_eq!(view.index, IndexSeen::At(Some(10)));
    // The fenced-out holder (fence 20) now lands its index, tombstoning a message.
    f.store.upkeep(&name, 20, &ids[..1], view.index).await.unwrap();
    // The next holder's own upkeep (at its QUIT) must not remove what its view lists.
    f.store.upkeep(&name, 30, &[], view.index).await.unwrap();
    assert!(f.store.exists(&name, &ids[0]).await.unwrap(), "a fenced-out holder's tombstone removed a message");
    assert_eq!(listed(&f.store, &name).await, ids, "a message of the holder's view is gone from the listing");
}

/// Issue 22 item 10: a damaged newest index falls back to the index before it, whose
/// tombstones still hold: a message whose removal was recorded there (and failed) does not come
/// back. Before, a damaged index meant a full listing without any tombstones.
#[tokio::test]
async fn a_damaged_newest_index_keeps_the_tombstones_before_it() {
    let f = fixture().await;
    let name = md("damaged-newest");
    let ids = put_old(&f.store, &name, 150).await;
    // The holder with fence 10 records removals, then "crashes" before removing them.
    f.store.upkeep(&name, 10, &ids[..5], IndexSeen::Unknown).await.unwrap();
    let good = f.index_files().pop().unwrap();
    // A newer index (fence 20) that is damaged.
    let text = std::fs::read(&good).unwrap();
    // Index keys sort newest first: their names are u64::MAX - fence.
    assert!(good.ends_with((u64::MAX - 10).to_string()), "{}", good.display());
    let damaged = good.with_file_name((u64::MAX - 20).to_string());
    std::fs::write(&damaged, &text[..text.len() / 2]).unwrap();
    let view = f.store.view(&name).await.unwrap();
    let seen: Vec<String> = view.messages.into_iter().map(|m| m.id).collect();
    assert_eq!(seen, ids[5..].to_vec(), "removed messages came back behind a damaged index");
    assert_eq!(view.upkeep, Upkeep::Due);
}
