//! One conformance suite for every storage and lock backend: the POP3 layer relies on exactly
//! these behaviours, so every backend must show them.
#![allow(dead_code)]

use cloudpop::coord::lock::MaildropLocks;
use cloudpop::names::AccountName;
use cloudpop::store::{AccountRecord, AccountStore, MessageStore, Precondition, StoreError};
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn name(s: &str) -> AccountName {
    AccountName::parse(s).unwrap()
}

async fn put(store: &dyn MessageStore, maildrop: &AccountName, chunks: &[&[u8]]) -> String {
    let mut m = store.create(maildrop).await.unwrap();
    for chunk in chunks {
        m.write(chunk).await.unwrap();
    }
    m.commit().await.unwrap().id
}

async fn read_all(store: &dyn MessageStore, maildrop: &AccountName, id: &str) -> Vec<u8> {
    let mut body = store.open(maildrop, id).await.unwrap().body;
    let mut out = Vec::new();
    body.read_to_end(&mut out).await.unwrap();
    out
}

pub async fn messages_round_trip(store: &dyn MessageStore) {
    let md = name("conf-roundtrip");
    assert!(store.list(&md).await.unwrap().is_empty(), "a new maildrop is empty");
    let id = put(store, &md, &[b"Subject: a\r\n", b"\r\n", b"body\r\n"]).await;
    let listed = store.list(&md).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].size), (id.as_str(), 20));
    assert_eq!(read_all(store, &md, &id).await, b"Subject: a\r\n\r\nbody\r\n");
    assert!(matches!(store.open(&md, "0000000000000000000000000000").await, Err(StoreError::NotFound)));
    assert!(matches!(store.open(&md, "../../etc/passwd").await, Err(StoreError::NotFound)));
}

pub async fn uncommitted_messages_are_invisible(store: &dyn MessageStore) {
    let md = name("conf-uncommitted");
    let mut m = store.create(&md).await.unwrap();
    m.write(b"Subject: half\r\n").await.unwrap();
    assert!(store.list(&md).await.unwrap().is_empty(), "a half-written message is visible");
    drop(m);
    assert!(store.list(&md).await.unwrap().is_empty(), "an abandoned message became visible");
    // Large enough to be written in parts (S3 multipart upload).
    let mut big = store.create(&md).await.unwrap();
    let chunk = vec![b'q'; 1 << 20];
    for _ in 0..10 {
        big.write(&chunk).await.unwrap();
    }
    assert!(store.list(&md).await.unwrap().is_empty(), "a half-written large message is visible");
    drop(big);
    assert!(store.list(&md).await.unwrap().is_empty(), "an abandoned large message became visible");
}

pub async fn listing_pages_past_a_thousand(store: &dyn MessageStore) {
    let md = name("conf-many");
    let mut ids = Vec::new();
    for batch in 0..11 {
        let bodies: Vec<String> = (0..100).map(|i| format!("Subject: {batch}-{i}\r\n\r\n")).collect();
        let writes = bodies.iter().map(|body| async { put(store, &md, &[body.as_bytes()]).await });
        ids.extend(futures::future::join_all(writes).await);
    }
    ids.sort();
    let listed: Vec<String> = store.list(&md).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed.len(), 1100, "listing stopped at a page boundary");
    assert_eq!(listed, ids);
    // An operator's pages of the largest size (S3 returns at most 1,000 keys per request).
    let (first, more) = store.list_page(&md, "", 1000).await.unwrap();
    assert_eq!((first.len(), more), (1000, true));
    let (rest, more) = store.list_page(&md, &first[999].id, 1000).await.unwrap();
    assert_eq!((rest.len(), more), (100, false));
    let paged: Vec<String> = first.into_iter().chain(rest).map(|m| m.id).collect();
    assert_eq!(paged, ids, "pages of 1,000 differ from the listing");
}

pub async fn ids_are_unique_ordered_and_well_formed(store: &dyn MessageStore) {
    let md = name("conf-ids");
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(put(store, &md, &[format!("Subject: {i}\r\n\r\n").as_bytes()]).await);
    }
    let listed: Vec<String> = store.list(&md).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(listed, ids, "listing is not in delivery order");
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    assert!(ids.iter().all(|id| (1..=70).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))));
}

pub async fn removal(store: &dyn MessageStore) {
    let md = name("conf-remove");
    let a = put(store, &md, &[b"a\r\n"]).await;
    let b = put(store, &md, &[b"b\r\n"]).await;
    let c = put(store, &md, &[b"c\r\n"]).await;
    let report = store.remove(&md, &[a.clone(), c.clone(), "0000000000000000000000000000".into()]).await.unwrap();
    assert_eq!((report.removed, report.failed.len()), (3, 0), "missing ids count as removed");
    let left: Vec<String> = store.list(&md).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(left, std::slice::from_ref(&b));
    assert!(matches!(store.open(&md, &a).await, Err(StoreError::NotFound)));
    store.remove_maildrop(&md).await.unwrap();
    assert!(store.list(&md).await.unwrap().is_empty());
    store.remove_maildrop(&md).await.unwrap();
}

pub async fn maildrops_are_isolated(store: &dyn MessageStore) {
    let (a, b) = (name("conf-iso"), name("conf-iso2"));
    let id = put(store, &a, &[b"private\r\n"]).await;
    assert!(store.list(&b).await.unwrap().is_empty(), "a maildrop sees another's mail");
    assert!(matches!(store.open(&b, &id).await, Err(StoreError::NotFound)));
    store.remove(&b, std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(store.list(&a).await.unwrap().len(), 1, "removal crossed maildrops");
}

pub async fn large_messages_stream(store: &dyn MessageStore) {
    let md = name("conf-large");
    let chunk = vec![b'z'; 1 << 20];
    let mut m = store.create(&md).await.unwrap();
    for _ in 0..12 {
        m.write(&chunk).await.unwrap();
    }
    let stored = m.commit().await.unwrap();
    assert_eq!(stored.size, 12 << 20);
    let mut body = store.open(&md, &stored.id).await.unwrap().body;
    let (mut total, mut buf) = (0usize, vec![0u8; 64 * 1024]);
    loop {
        let n = body.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == b'z'));
        total += n;
    }
    assert_eq!(total, 12 << 20);
}

pub async fn trace_context_travels_with_messages(store: &dyn MessageStore) {
    use cloudpop::store::TraceParent;
    let md = name("conf-trace");
    let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    // One small message (a single write) and one written in parts (S3 multipart upload).
    for parts in [1usize, 10] {
        let mut m = store.create(&md).await.unwrap();
        m.set_trace_parent(&tp);
        for _ in 0..parts {
            m.write(&vec![b'x'; if parts == 1 { 100 } else { 1 << 20 }]).await.unwrap();
        }
        let id = m.commit().await.unwrap().id;
        assert_eq!(store.open(&md, &id).await.unwrap().delivered_by.as_ref(), Some(&tp), "{parts} parts");
    }
    let plain = put(store, &md, &[b"Subject: untraced\r\n\r\n"]).await;
    assert_eq!(store.open(&md, &plain).await.unwrap().delivered_by, None);
}

pub async fn ping_answers(store: &dyn MessageStore) {
    store.ping().await.unwrap();
}

pub async fn markers_and_fixed_ids(store: &dyn MessageStore) {
    use cloudpop::store::MarkerKey;
    let md = name("conf-markers");
    let key = MarkerKey::parse("delivery:42").unwrap();
    assert_eq!(store.get_marker(&md, &key).await.unwrap(), None);
    let id = cloudpop::store::ids::new_message_id();
    store.put_marker(&md, &key, &id).await.unwrap();
    assert_eq!(store.get_marker(&md, &key).await.unwrap().as_deref(), Some(id.as_str()));
    assert!(store.get_marker(&name("conf-markers2"), &key).await.unwrap().is_none(), "markers crossed maildrops");
    assert!(!store.exists(&md, &id).await.unwrap());
    // Committing the same id twice (an idempotent retry) leaves exactly one message.
    for _ in 0..2 {
        let mut m = store.create_with_id(&md, &id).await.unwrap();
        m.write(b"Subject: once\r\n\r\n").await.unwrap();
        assert_eq!(m.commit().await.unwrap().id, id);
    }
    assert!(store.exists(&md, &id).await.unwrap());
    assert_eq!(store.list(&md).await.unwrap().len(), 1);
    assert!(store.create_with_id(&md, "../escape").await.is_err());
    assert!(MarkerKey::parse("../x").is_none() && MarkerKey::parse("").is_none() && MarkerKey::parse("a/b").is_none());
    store.remove_maildrop(&md).await.unwrap();
    assert_eq!(store.get_marker(&md, &key).await.unwrap(), None, "markers outlived their maildrop");
}

pub async fn retention_ledgers(store: &dyn MessageStore) {
    let (a, b) = (name("conf-ledger-a"), name("conf-ledger-b"));
    assert_eq!(store.get_ledger(&a).await.unwrap(), None);
    assert!(store.ledgers().await.unwrap().is_empty());
    store.put_ledger(&b, "01 5\n").await.unwrap();
    store.put_ledger(&a, "02 7\n").await.unwrap();
    store.put_ledger(&a, "02 7\n03 9\n").await.unwrap();
    assert_eq!(store.get_ledger(&a).await.unwrap().as_deref(), Some("02 7\n03 9\n"));
    assert_eq!(store.ledgers().await.unwrap(), [a.clone(), b.clone()], "listed once each, sorted");
    // An empty ledger is no ledger; a removed maildrop takes its ledger along.
    store.put_ledger(&a, "").await.unwrap();
    assert_eq!(store.get_ledger(&a).await.unwrap(), None);
    store.put_ledger(&a, "").await.unwrap();
    store.remove_maildrop(&b).await.unwrap();
    assert!(store.ledgers().await.unwrap().is_empty(), "a ledger outlived its maildrop");
}

pub async fn accounts(store: &dyn AccountStore) {
    let n = name("conf-account");
    assert!(store.get(&n).await.unwrap().is_none());
    let mut record = AccountRecord {
        name: n.to_string(),
        password_hash: "$argon2id$x".into(),
        created_at: 1,
        quota_bytes: 10,
        login_delay_secs: 5,
        ..AccountRecord::default()
    };
    let first = store.put(&record, Precondition::Absent).await.unwrap();
    assert_eq!(store.get(&n).await.unwrap().as_ref(), Some(&record));
    // Creating what exists, or replacing a version that is not the stored one, is refused.
    assert!(matches!(store.put(&record, Precondition::Absent).await, Err(StoreError::Conflict)));
    let (_, version) = store.get_versioned(&n).await.unwrap().unwrap();
    assert_eq!(version, first);
    record.disabled = true;
    let second = store.put(&record, Precondition::Unchanged(first.clone())).await.unwrap();
    assert!(store.get(&n).await.unwrap().unwrap().disabled, "put replaces");
    record.disabled = false;
    let stale = store.put(&record, Precondition::Unchanged(first)).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "a write from a stale read replaced a newer record: {stale:?}");
    assert!(store.get(&n).await.unwrap().unwrap().disabled, "the stale write went through");
    assert!(store.list().await.unwrap().contains(&n));
    assert!(store.delete(&n).await.unwrap());
    assert!(!store.delete(&n).await.unwrap());
    assert!(store.get(&n).await.unwrap().is_none());
    // A write from a read before the deletion does not bring the record back.
    let revived = store.put(&record, Precondition::Unchanged(second)).await;
    assert!(matches!(revived, Err(StoreError::Conflict)), "{revived:?}");
    assert!(store.get(&n).await.unwrap().is_none(), "a deleted record came back");
    let bad = AccountRecord { name: "../escape".into(), ..record };
    assert!(store.put(&bad, Precondition::Absent).await.is_err(), "an invalid name was stored");
    // The pool's secrets: made once, the same for every caller.
    let secret = store.pool_secret("conformance").await.unwrap();
    assert_eq!(store.pool_secret("conformance").await.unwrap(), secret);
    assert_ne!(store.pool_secret("another").await.unwrap(), secret);
}

pub async fn locks_are_exclusive_leases(locks: &dyn MaildropLocks) {
    locks.ping().await.unwrap();
    let md = name("conf-lock");
    let ttl = Duration::from_secs(30);
    let token = locks.acquire(&md, ttl).await.unwrap().expect("free lock");
    assert!(locks.acquire(&md, ttl).await.unwrap().is_none(), "lock taken twice");
    assert!(locks.acquire(&name("conf-lock2"), ttl).await.unwrap().is_some(), "locks are per maildrop");
    assert!(locks.renew(&md, &token, ttl).await.unwrap());
    let stranger = cloudpop::coord::lock::LeaseToken::generate();
    assert!(!locks.renew(&md, &stranger, ttl).await.unwrap());
    locks.release(&md, &stranger).await.unwrap();
    assert!(locks.acquire(&md, ttl).await.unwrap().is_none(), "a stranger released our lock");
    locks.release(&md, &token).await.unwrap();
    let again = locks.acquire(&md, ttl).await.unwrap().expect("released lock is free");
    assert!(again.fence() > token.fence(), "fences must grow: {} then {}", token.fence(), again.fence());
    locks.release(&md, &again).await.unwrap();
    // Many holders in a row, faster than the clock ticks: still strictly increasing.
    let mut last = again.fence();
    for _ in 0..50 {
        let next = locks.acquire(&md, ttl).await.unwrap().expect("free");
        assert!(next.fence() > last, "fence went from {last} to {}", next.fence());
        last = next.fence();
        locks.release(&md, &next).await.unwrap();
    }
}

pub async fn expired_leases_free_themselves(locks: &dyn MaildropLocks) {
    let md = name("conf-expiry");
    let old = locks.acquire(&md, Duration::from_millis(300)).await.unwrap().unwrap();
    // Wait out the lease (this sleep is the behaviour under test, not a readiness guess).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let new = locks.acquire(&md, Duration::from_secs(30)).await.unwrap().expect("expired lease still held");
    assert!(!locks.renew(&md, &old, Duration::from_secs(30)).await.unwrap(), "old holder renewed a lost lease");
    locks.release(&md, &old).await.unwrap();
    assert!(locks.acquire(&md, Duration::from_secs(30)).await.unwrap().is_none(), "old holder released the new lease");
    locks.release(&md, &new).await.unwrap();
}

/// Limits the throttle cases are written for.
pub fn throttle_limits() -> cloudpop::coord::throttle::Limits {
    cloudpop::coord::throttle::Limits {
        window: Duration::from_secs(60),
        per_account: 3,
        per_address: 5,
        per_known_address: 4,
    }
}

use cloudpop::coord::throttle::{Admission, Attempt, AttemptId, LoginThrottle, Settlement, Subject};

fn subject(login: &str) -> Subject {
    Subject::of_login(login)
}

/// Admits a fresh attempt, or panics with what the throttle said instead.
async fn admitted(throttle: &dyn LoginThrottle, who: &Subject, addr: std::net::IpAddr) -> Attempt {
    match throttle.admit(who, addr, AttemptId::random()).await.unwrap() {
        Admission::Admitted(attempt) => attempt,
        other => panic!("attempt at {who} from {addr} not admitted: {other:?}"),
    }
}

/// One failed guess, admitted and settled.
async fn fail(throttle: &dyn LoginThrottle, who: &Subject, addr: std::net::IpAddr) {
    let attempt = admitted(throttle, who, addr).await;
    throttle.settle(who, addr, attempt, Settlement::Failed).await.unwrap();
}

async fn answer(throttle: &dyn LoginThrottle, who: &Subject, addr: std::net::IpAddr) -> Admission {
    throttle.admit(who, addr, AttemptId::random()).await.unwrap()
}

pub async fn throttle_counts_per_account_and_address(throttle: &dyn LoginThrottle) {
    let victim = subject("conf-victim");
    let other = subject("conf-other");
    let ip = |last: u8| std::net::IpAddr::from([192, 0, 2, last]);
    for i in 0..3 {
        fail(throttle, &victim, ip(i)).await;
    }
    assert_eq!(answer(throttle, &victim, ip(99)).await, Admission::Refused, "account limit not enforced");
    fail(throttle, &other, ip(99)).await;
    for i in 0..4 {
        fail(throttle, &subject(&format!("conf-spread{i}")), ip(50)).await;
    }
    let last = admitted(throttle, &other, ip(50)).await;
    throttle.settle(&other, ip(50), last, Settlement::Failed).await.unwrap();
    assert_eq!(answer(throttle, &other, ip(50)).await, Admission::Refused, "address limit not enforced");
    assert!(matches!(answer(throttle, &subject("conf-third"), ip(51)).await, Admission::Admitted(_)));
    // A success or an unchecked attempt counts nothing.
    let fresh = subject("conf-fresh");
    for (i, settlement) in [Settlement::Succeeded, Settlement::Unchecked].into_iter().cycle().take(10).enumerate() {
        let addr = ip(100 + i as u8);
        let attempt = admitted(throttle, &fresh, addr).await;
        throttle.settle(&fresh, addr, attempt, settlement).await.unwrap();
    }
}

/// A success makes its address known for the account: an attacker elsewhere cannot lock the
/// owner out, and guesses from the owner's address (a shared NAT) are bounded by a budget of
/// their own.
pub async fn throttle_trusts_the_owners_address(throttle: &dyn LoginThrottle) {
    let owner = subject("conf-owner");
    let home = std::net::IpAddr::from([198, 51, 100, 1]);
    let attacker = |i: u8| std::net::IpAddr::from([203, 0, 113, i]);
    let attempt = admitted(throttle, &owner, home).await;
    assert!(!attempt.known, "an address was known before any login from it");
    throttle.settle(&owner, home, attempt, Settlement::Succeeded).await.unwrap();
    for i in 0..3 {
        fail(throttle, &owner, attacker(i)).await;
    }
    assert_eq!(answer(throttle, &owner, attacker(9)).await, Admission::Refused, "the attacker kept guessing");
    let from_home = admitted(throttle, &owner, home).await;
    assert!(from_home.known, "the owner's address was not known");
    throttle.settle(&owner, home, from_home, Settlement::Failed).await.unwrap();
    // Someone behind the owner's NAT gets the known addresses' budget (4), then no more.
    for _ in 0..3 {
        fail(throttle, &owner, home).await;
    }
    assert_eq!(answer(throttle, &owner, home).await, Admission::Refused, "guessing from a known address is unbounded");
    // Known is per account: guesses at another account from the owner's address are counted
    // as from any address.
    let neighbour = admitted(throttle, &subject("conf-neighbour"), home).await;
    assert!(!neighbour.known);
}

/// Parallel attempts at one account: no more than the budget are in flight at once; the rest
/// wait, and once the admitted ones fail, they are refused.
pub async fn throttle_admits_no_more_than_the_limit_in_parallel(throttle: std::sync::Arc<dyn LoginThrottle>) {
    let target = subject("conf-parallel");
    let addr = |i: u8| std::net::IpAddr::from([10, 9, 8, i]);
    let attempts: Vec<_> = (0..40u8)
        .map(|i| {
            let (throttle, target) = (throttle.clone(), target.clone());
            tokio::spawn(async move { (i, throttle.admit(&target, addr(i), AttemptId::random()).await.unwrap()) })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut waiting = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            (i, Admission::Admitted(attempt)) => admitted.push((i, attempt)),
            (_, Admission::Wait) => waiting += 1,
            (_, Admission::Refused) => panic!("refused before any failure was counted"),
        }
    }
    assert_eq!((admitted.len(), waiting), (3, 37), "admitted and waiting of 40 parallel guesses with a limit of 3");
    for (i, attempt) in admitted {
        throttle.settle(&target, addr(i), attempt, Settlement::Failed).await.unwrap();
    }
    assert_eq!(answer(&*throttle, &target, addr(77)).await, Admission::Refused);
}

/// Many correct logins at once from one address (a NAT): they wait for each other, none is
/// refused, and none leaves a failure behind.
pub async fn throttle_never_counts_correct_logins(throttle: std::sync::Arc<dyn LoginThrottle>) {
    let address = std::net::IpAddr::from([10, 6, 6, 6]);
    let logins: Vec<_> = (0..40)
        .map(|i| {
            let throttle = throttle.clone();
            tokio::spawn(async move {
                let who = subject(&format!("conf-nat{i}"));
                let id = AttemptId::random();
                let mut waits = 0;
                loop {
                    match throttle.admit(&who, address, id).await.unwrap() {
                        Admission::Admitted(attempt) => {
                            tokio::task::yield_now().await;
                            throttle.settle(&who, address, attempt, Settlement::Succeeded).await.unwrap();
                            return waits;
                        }
                        Admission::Wait => {
                            waits += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Admission::Refused => panic!("a correct login was refused"),
                    }
                }
            })
        })
        .collect();
    let mut waited = 0;
    for login in logins {
        waited += login.await.unwrap();
    }
    assert!(waited > 0, "40 logins from one address with a limit of 5 never had to wait");
    // The address's whole budget is still there.
    for i in 0..5 {
        fail(&*throttle, &subject(&format!("conf-after{i}")), address).await;
    }
    assert_eq!(answer(&*throttle, &subject("conf-after9"), address).await, Admission::Refused);
}

/// Parallel attempts at many accounts from one address: the address limit holds, and the
/// attempts the address turned away are taken back from their accounts.
pub async fn throttle_address_limit_holds_in_parallel(throttle: std::sync::Arc<dyn LoginThrottle>) {
    let address = std::net::IpAddr::from([10, 7, 7, 7]);
    let attempts: Vec<_> = (0..40)
        .map(|i| {
            let throttle = throttle.clone();
            tokio::spawn(async move {
                let who = subject(&format!("conf-spray{i}"));
                (who.clone(), throttle.admit(&who, address, AttemptId::random()).await.unwrap())
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for attempt in attempts {
        if let (who, Admission::Admitted(attempt)) = attempt.await.unwrap() {
            admitted.push((who, attempt));
        }
    }
    assert_eq!(
        admitted.len(),
        5,
        "{} of 40 parallel guesses from one address were admitted with a limit of 5",
        admitted.len()
    );
    for (who, attempt) in &admitted {
        throttle.settle(who, address, *attempt, Settlement::Failed).await.unwrap();
    }
    let mut budgets = Vec::new();
    for i in 0..40u8 {
        let who = subject(&format!("conf-spray{i}"));
        let mut left = 0;
        while left < 4 {
            let addr = std::net::IpAddr::from([10, 8, i, left]);
            match answer(&*throttle, &who, addr).await {
                Admission::Admitted(attempt) => throttle.settle(&who, addr, attempt, Settlement::Failed).await.unwrap(),
                _ => break,
            }
            left += 1;
        }
        budgets.push(left);
    }
    budgets.sort();
    assert_eq!(budgets, [vec![2; 5], vec![3; 35]].concat(), "accounts' budgets after attempts the address refused");
}

/// The same attempt asked or settled twice (a client retrying after a timeout) counts once.
pub async fn throttle_counts_a_repeated_call_once(throttle: &dyn LoginThrottle) {
    let who = subject("conf-retry");
    let addr = std::net::IpAddr::from([192, 0, 2, 200]);
    let id = AttemptId::random();
    let first = throttle.admit(&who, addr, id).await.unwrap();
    assert_eq!(throttle.admit(&who, addr, id).await.unwrap(), first);
    let Admission::Admitted(attempt) = first else { panic!("{first:?}") };
    for _ in 0..3 {
        throttle.settle(&who, addr, attempt, Settlement::Failed).await.unwrap();
    }
    // One failure counted: two more are allowed (limit 3).
    fail(throttle, &who, addr).await;
    fail(throttle, &who, addr).await;
    assert_eq!(answer(throttle, &who, addr).await, Admission::Refused);
}

fn session(id: &str, started_unix: u64) -> cloudpop::coord::registry::SessionInfo {
    cloudpop::coord::registry::SessionInfo {
        id: id.into(),
        account: format!("user-{id}"),
        peer: "192.0.2.1:5000".into(),
        frontend: "conformance/1".into(),
        tls: true,
        started_unix,
    }
}

/// The pool's session registry: listed oldest first, ended on request, gone when
/// unregistered or expired.
pub async fn sessions_register_list_and_end(registry: &dyn cloudpop::coord::registry::SessionRegistry) {
    let long = Duration::from_secs(60);
    registry.register(&session("b", 200), long).await.unwrap();
    registry.register(&session("a", 100), long).await.unwrap();
    registry.register(&session("short", 300), Duration::from_millis(200)).await.unwrap();
    // Refreshing keeps one entry.
    registry.register(&session("b", 200), long).await.unwrap();
    assert!(!registry.request_end("nobody").await.unwrap(), "ended a session nobody registered");
    assert!(registry.request_end("a").await.unwrap());
    assert!(registry.end_requested("a").await.unwrap());
    assert!(!registry.end_requested("b").await.unwrap());
    // The short one expires by itself, as when its frontend dies.
    crate::common::eventually_async("an expired session is still listed", || async {
        registry.list().await.unwrap() == vec![session("a", 100), session("b", 200)]
    })
    .await;
    assert!(!registry.request_end("short").await.unwrap(), "ended an expired session");
    registry.unregister("a").await.unwrap();
    assert!(!registry.end_requested("a").await.unwrap(), "an end request outlived its session");
    assert_eq!(registry.list().await.unwrap(), vec![session("b", 200)]);
}
