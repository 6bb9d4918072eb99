//! A POP3 load generator, and the corpus both servers of the comparison are given.
//!
//! It speaks POP3 itself (plain TCP or implicit TLS) and knows nothing of either server's
//! internals, so the same workload runs against cloudpop and Dovecot. `bench/compare.py` drives
//! it; run it alone with `cargo run --release --example loadgen -- help`.
//!
//! * `corpus-cloudpop` and `corpus-dovecot` provision the same deterministic corpus: through
//!   cloudpop's gRPC API (so every message takes the real ingest path, for any store), or as
//!   Dovecot maildirs with a passwd-file.
//! * `run` runs one workload for a number of seconds with a number of concurrent clients and
//!   prints one JSON line: operations, rate, octets, session times, and the CPU time the
//!   server's process tree spent meanwhile (`--pid`, several for a pool). With `--period-ms` it
//!   paces instead: each user runs one session every period, as a polling mail client does,
//!   and `--addr` may list a pool, taken in turn as a round-robin balancer would.
//! * `idle` opens idle sessions from many loopback source addresses and prints the growth of the
//!   server tree's memory (PSS, so Dovecot's shared pages are not counted once per process).

use cloudpop::client::ApiClient;
use cloudpop::secret::Secret;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const USAGE: &str = "\
usage: loadgen <command> [--option value]...

  corpus-cloudpop --api URL --token ADMIN --ingest-token INGEST [--users 1000 --messages 20 --median 11000 --big 16 --big-messages 4]
  corpus-dovecot  --dir DIR --scheme plain|argon2id --prefix p [same sizes]
  run   --workload sessions|logins|tls|retr --addr HOST:PORT[,HOST:PORT...] --prefix u [--clients 64
        --seconds 10 --users 1000 --password pw --pid PID[,PID...] --max-ops N]
        [--period-ms P --rounds R: every user once per P ms, R times, instead of --clients/--seconds]
  idle  --addr HOST:PORT --sessions N [--login --prefix u --users N --password pw --pid PID]

Users are {prefix}0..{prefix}N-1 with password pw; the 1 MiB corpus is big0..big{B-1}.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let options = match Options::parse(rest) {
        Ok(options) => options,
        Err(e) => fail(&e),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = match command.as_str() {
        "corpus-cloudpop" => runtime.block_on(corpus_cloudpop(&options)),
        "corpus-dovecot" => corpus_dovecot(&options),
        "run" => runtime.block_on(run(&options)),
        "idle" => runtime.block_on(idle(&options)),
        _ => Err(USAGE.to_owned()),
    };
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(1);
}

/// `--name value` pairs; a flag without a value (`--login`) reads as "true".
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut args = args.iter().peekable();
        while let Some(arg) = args.next() {
            let name = arg.strip_prefix("--").ok_or_else(|| format!("unexpected argument {arg:?}\n{USAGE}"))?;
            let value = match args.peek() {
                Some(next) if !next.starts_with("--") => args.next().cloned().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            map.insert(name.to_owned(), value);
        }
        Ok(Self(map))
    }

    fn text(&self, name: &str, default: Option<&str>) -> Result<String, String> {
        match (self.0.get(name), default) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(default)) => Ok(default.to_owned()),
            (None, None) => Err(format!("--{name} is required\n{USAGE}")),
        }
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.0.get(name) {
            Some(value) => value.parse().map_err(|_| format!("--{name} {value:?} is not a number")),
            None => Ok(default),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// Sizes and counts of the corpus; the same options give the same messages, byte for byte.
struct Corpus {
    users: u64,
    messages: u64,
    median: f64,
    big: u64,
    big_messages: u64,
}

impl Corpus {
    fn from(options: &Options) -> Result<Self, String> {
        Ok(Self {
            users: options.number("users", 1000)?,
            messages: options.number("messages", 20)?,
            median: options.number("median", 11_000)? as f64,
            big: options.number("big", 16)?,
            big_messages: options.number("big-messages", 4)?,
        })
    }

    /// Message `index` of user `user`: headers and a text body with CRLF line ends, some lines
    /// starting with a dot. Sizes follow a log-normal spread around the median (most mail is
    /// a few KB, some is tens of KB), between 1 KB and 200 KB.
    fn message(&self, user: u64, index: u64) -> Vec<u8> {
        let mut random = Random(user.wrapping_mul(1_000_003) ^ index.wrapping_mul(7919) ^ 0x5eed);
        let normal = (0..12).map(|_| random.unit()).sum::<f64>() - 6.0;
        let size = (self.median * (0.8 * normal).exp()).clamp(1_000.0, 200_000.0) as usize;
        compose(&mut random, user, index, size)
    }

    fn big_message(&self, user: u64, index: u64) -> Vec<u8> {
        let mut random = Random(user.wrapping_mul(31) ^ index ^ 0xb16);
        compose(&mut random, user, index, 1 << 20)
    }
}

fn compose(random: &mut Random, user: u64, index: u64, size: usize) -> Vec<u8> {
    const WORDS: [&str; 12] =
        ["mail", "invoice", "meeting", "tomorrow", "report", "hello", "server", "cloud", "retrieve", "the", "a", "of"];
    let mut out = format!(
        "Return-Path: <sender{index}@example.net>\r\nFrom: Sender {index} <sender{index}@example.net>\r\n\
         To: user{user}@example.com\r\nSubject: benchmark message {index}\r\n\
         Date: Mon, 23 Nov 2026 10:{:02}:00 +0000\r\nMessage-ID: <{user}.{index}@bench.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        index % 60
    )
    .into_bytes();
    while out.len() < size {
        let mut line = String::with_capacity(80);
        if random.next().is_multiple_of(40) {
            line.push('.');
        }
        while line.len() < 70 {
            line.push_str(WORDS[(random.next() % WORDS.len() as u64) as usize]);
            line.push(' ');
        }
        line.push_str("\r\n");
        out.extend_from_slice(line.as_bytes());
    }
    // Cut to size; the last line, cut short, still ends with CRLF.
    out.truncate(size.saturating_sub(2));
    while out.last() == Some(&b'\r') {
        out.pop();
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// xorshift64*: small, deterministic, good enough for message text and sizes.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Accounts and messages through cloudpop's API: `u{i}` and `big{i}`, password `pw`.
async fn corpus_cloudpop(options: &Options) -> Result<(), String> {
    let corpus = Corpus::from(options)?;
    let url = options.text("api", None)?;
    let admin = ApiClient::connect(&url, Secret::new(options.text("token", None)?), None, false)
        .await
        .map_err(|e| e.to_string())?;
    let ingest = ApiClient::connect(&url, Secret::new(options.text("ingest-token", None)?), None, false)
        .await
        .map_err(|e| e.to_string())?;
    let api = ApiClient { admin: admin.admin, ingest: ingest.ingest };
    let prefix = options.text("prefix", Some("u"))?;
    let started = Instant::now();
    let (mut accounts, mut messages) = (0u64, 0u64);
    let mut jobs = tokio::task::JoinSet::new();
    let mut work: Vec<(String, Vec<(u64, bool)>)> = (0..corpus.users)
        .map(|u| (format!("{prefix}{u}"), (0..corpus.messages).map(|m| (m, false)).collect()))
        .collect();
    work.extend((0..corpus.big).map(|u| (format!("big{u}"), (0..corpus.big_messages).map(|m| (m, true)).collect())));
    let corpus = Arc::new(corpus);
    let mut work = work.into_iter();
    loop {
        // Eight accounts in flight: the server hashes passwords on a bounded pool anyway.
        while jobs.len() < 8 {
            let Some((name, list)) = work.next() else { break };
            let (mut api, corpus) = (clone_api(&api), corpus.clone());
            jobs.spawn(async move { provision_one(&mut api, &corpus, name, list).await });
        }
        match jobs.join_next().await {
            Some(Ok(Ok(n))) => {
                accounts += 1;
                messages += n;
            }
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    println!(
        "{{\"accounts\": {accounts}, \"messages\": {messages}, \"seconds\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn clone_api(api: &ApiClient) -> ApiClient {
    ApiClient { admin: api.admin.clone(), ingest: api.ingest.clone() }
}

async fn provision_one(
    api: &mut ApiClient,
    corpus: &Corpus,
    name: String,
    list: Vec<(u64, bool)>,
) -> Result<u64, String> {
    let user = name.trim_start_matches(|c: char| c.is_ascii_alphabetic()).parse::<u64>().unwrap_or(0);
    let request =
        cloudpop::api::proto::CreateAccountRequest { name: name.clone(), password: "pw".into(), ..Default::default() };
    match api.admin.create_account(request).await {
        Ok(_) => {}
        // A second run over the same server adds nothing.
        Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(0),
        Err(status) => return Err(format!("creating {name}: {}", status.message())),
    }
    for &(index, big) in &list {
        let body = if big { corpus.big_message(user, index) } else { corpus.message(user, index) };
        api.deliver(vec![name.clone()], format!("bench-{name}-{index}"), std::io::Cursor::new(body))
            .await
            .map_err(|status| format!("delivering to {name}: {}", status.message()))?;
    }
    Ok(list.len() as u64)
}

/// The same corpus as Dovecot maildirs under `DIR/mail/{user}/`, with `DIR/passwd` holding
/// `{PLAIN}pw` or an argon2id hash at cloudpop's own cost for every user.
fn corpus_dovecot(options: &Options) -> Result<(), String> {
    let corpus = Corpus::from(options)?;
    let dir = PathBuf::from(options.text("dir", None)?);
    let scheme = options.text("scheme", Some("plain"))?;
    let prefix = options.text("prefix", Some("u"))?;
    let started = Instant::now();
    let mut users: Vec<(String, u64, bool)> = (0..corpus.users).map(|u| (format!("{prefix}{u}"), u, false)).collect();
    users.extend((0..corpus.big).map(|u| (format!("big{u}"), u, true)));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<Vec<(String, u64, bool)>> =
        (0..threads).map(|t| users.iter().skip(t).step_by(threads).cloned().collect()).collect();
    let lines: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let (corpus, dir, scheme) = (&corpus, &dir, &scheme);
                scope.spawn(move || {
                    chunk.iter().map(|(name, user, big)| dovecot_user(corpus, dir, scheme, name, *user, *big)).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a provisioning thread panicked".into()))).collect()
    });
    let mut passwd = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("passwd"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for chunk in lines {
        for line in chunk? {
            writeln!(passwd, "{line}").map_err(|e| e.to_string())?;
        }
    }
    println!("{{\"accounts\": {}, \"seconds\": {:.1}}}", users.len(), started.elapsed().as_secs_f64());
    Ok(())
}

fn dovecot_user(corpus: &Corpus, dir: &Path, scheme: &str, name: &str, user: u64, big: bool) -> Result<String, String> {
    let maildir = dir.join("mail").join(name);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).map_err(|e| format!("{}: {e}", maildir.display()))?;
    }
    let count = if big { corpus.big_messages } else { corpus.messages };
    for index in 0..count {
        let body = if big { corpus.big_message(user, index) } else { corpus.message(user, index) };
        // Maildir keeps LF line ends; Dovecot adds the CRs when it sends, as it would for mail
        // an MTA delivered. S= is the file's size, W= the size with CRLF line ends.
        let lf: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
        let file = format!("{}.M{index}P{user}.bench,S={},W={}:2,", 1_790_000_000 + index, lf.len(), body.len());
        std::fs::write(maildir.join("cur").join(file), &lf).map_err(|e| e.to_string())?;
    }
    let password = match scheme {
        "plain" => "{PLAIN}pw".to_owned(),
        "argon2id" => format!("{{ARGON2ID}}{}", argon2id("pw")?),
        other => return Err(format!("unknown scheme {other:?}")),
    };
    Ok(format!("{name}:{password}"))
}

/// An argon2id hash at exactly the cost cloudpop uses for its own accounts.
fn argon2id(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let hasher =
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, cloudpop::accounts::hashing::params());
    let salt = SaltString::generate(&mut OsRng);
    hasher.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// USER, PASS, STAT, UIDL, RETR of every message, QUIT.
    Sessions,
    /// USER, PASS, QUIT.
    Logins,
    /// A full TLS handshake (no resumption), USER, PASS, STAT, QUIT.
    Tls,
    /// One session per client on its own 1 MiB-message mailbox, RETR in a loop.
    Retr,
}

struct Target {
    /// The server, or a pool taken in turn.
    addrs: Vec<SocketAddr>,
    prefix: String,
    users: u64,
    password: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    octets: AtomicU64,
    errors: AtomicU64,
    next_user: AtomicU64,
    next_addr: AtomicU64,
    /// How long each session took, in milliseconds.
    session_ms: std::sync::Mutex<Vec<f64>>,
}

async fn run(options: &Options) -> Result<(), String> {
    let workload = match options.text("workload", None)?.as_str() {
        "sessions" => Workload::Sessions,
        "logins" => Workload::Logins,
        "tls" => Workload::Tls,
        "retr" => Workload::Retr,
        other => return Err(format!("unknown workload {other:?}")),
    };
    let clients = options.number("clients", 64)?;
    let seconds = options.number("seconds", 10)?;
    let target = Arc::new(Target {
        addrs: options.text("addr", None)?.split(',').map(address).collect::<Result<_, _>>()?,
        prefix: options.text("prefix", Some("u"))?,
        users: options.number("users", 1000)?.max(1),
        password: options.text("password", Some("pw"))?,
        tls: (workload == Workload::Tls).then(tls_connector),
    });
    let servers: Vec<u32> = options
        .text("pid", Some("0"))?
        .split(',')
        .map(|pid| pid.parse().map_err(|_| format!("--pid {pid:?} is not a process id")))
        .collect::<Result<_, _>>()?;
    let period = Duration::from_millis(options.number("period-ms", 0)?);
    let rounds = options.number("rounds", 1)?;
    // A warm-up stops after this many sessions (one per user), whatever the time.
    let max_ops = options.number("max-ops", u64::MAX)?;
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before: f64 = servers.iter().map(|&pid| tree_cpu_ms(pid)).sum();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    if !period.is_zero() {
        // Paced: user u starts its sessions at (r + u / users) periods, spread evenly.
        for round in 0..rounds {
            for user in 0..target.users {
                let at = started + period.mul_f64(round as f64 + user as f64 / target.users as f64);
                tokio::time::sleep_until(at.into()).await;
                let (target, counters) = (target.clone(), counters.clone());
                tasks.spawn(async move {
                    if let Err(e) = one_session(&target, user, user, workload, &counters).await
                        && counters.errors.fetch_add(1, Ordering::Relaxed) < 5
                    {
                        eprintln!("loadgen: {e}");
                    }
                });
            }
        }
    }
    for client in (0..clients).filter(|_| period.is_zero()) {
        let (target, counters) = (target.clone(), counters.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline && counters.next_user.load(Ordering::Relaxed) < max_ops {
                let outcome = match workload {
                    Workload::Retr => retr_loop(&target, client, deadline, &counters).await,
                    _ => {
                        let user = counters.next_user.fetch_add(1, Ordering::Relaxed) % target.users;
                        one_session(&target, client, user, workload, &counters).await
                    }
                };
                if let Err(e) = outcome
                    && counters.errors.fetch_add(1, Ordering::Relaxed) < 5
                {
                    eprintln!("loadgen: {e}");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = servers.iter().map(|&pid| tree_cpu_ms(pid)).sum::<f64>() - cpu_before;
    let ops = counters.ops.load(Ordering::Relaxed);
    let mut times = std::mem::take(&mut *counters.session_ms.lock().unwrap());
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| times.get(((times.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let octets = counters.octets.load(Ordering::Relaxed);
    let mb = octets as f64 / 1e6;
    println!(
        "{{\"ops\": {ops}, \"seconds\": {elapsed:.2}, \"rate\": {:.1}, \"octets\": {octets}, \"mb_per_s\": {:.1}, \
         \"server_cpu_ms\": {cpu:.0}, \"cpu_ms_per_op\": {:.3}, \"cpu_ms_per_mb\": {:.3}, \"errors\": {}, \
         \"session_ms_median\": {:.2}, \"session_ms_p90\": {:.2}}}",
        ops as f64 / elapsed,
        mb / elapsed,
        cpu / (ops.max(1) as f64),
        if mb > 0.0 { cpu / mb } else { 0.0 },
        counters.errors.load(Ordering::Relaxed),
        percentile(0.5),
        percentile(0.9),
    );
    Ok(())
}

fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not an address like 127.0.0.1:110"))
}

async fn one_session(
    target: &Target,
    client: u64,
    user: u64,
    workload: Workload,
    counters: &Counters,
) -> Result<(), String> {
    let turn = counters.next_addr.fetch_add(1, Ordering::Relaxed) as usize;
    let addr = target.addrs[turn % target.addrs.len()];
    let started = Instant::now();
    let tcp = connect(addr, Some(source(client))).await?;
    match &target.tls {
        Some(tls) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
            session(Pop3::new(stream), target, user, workload, counters).await
        }
        None => session(Pop3::new(tcp), target, user, workload, counters).await,
    }?;
    counters.session_ms.lock().unwrap().push(started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut pop: Pop3<S>,
    target: &Target,
    user: u64,
    workload: Workload,
    counters: &Counters,
) -> Result<(), String> {
    pop.status().await?;
    pop.login(&format!("{}{user}", target.prefix), &target.password).await?;
    if workload != Workload::Logins {
        let stat = pop.command("STAT").await?;
        if workload == Workload::Sessions {
            let count: u64 = stat.split(' ').nth(1).and_then(|n| n.parse().ok()).ok_or("STAT reply without a count")?;
            counters.octets.fetch_add(pop.multiline("UIDL").await?, Ordering::Relaxed);
            for n in 1..=count {
                counters.octets.fetch_add(pop.multiline(&format!("RETR {n}")).await?, Ordering::Relaxed);
            }
        }
    }
    pop.command("QUIT").await?;
    counters.ops.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Client `client` logs in to `big{client}` and retrieves its messages in turn until the
/// deadline; every complete RETR is one operation.
async fn retr_loop(target: &Target, client: u64, deadline: Instant, counters: &Counters) -> Result<(), String> {
    let mut pop = Pop3::new(connect(target.addrs[0], Some(source(client))).await?);
    pop.status().await?;
    pop.login(&format!("big{client}"), &target.password).await?;
    let stat = pop.command("STAT").await?;
    let count: u64 = stat.split(' ').nth(1).and_then(|n| n.parse().ok()).filter(|&n| n > 0).ok_or("nothing to RETR")?;
    let mut n = 0;
    while Instant::now() < deadline {
        counters.octets.fetch_add(pop.multiline(&format!("RETR {}", n % count + 1)).await?, Ordering::Relaxed);
        counters.ops.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    pop.command("QUIT").await?;
    Ok(())
}

/// Loopback source addresses, 127.0.1.2 upwards, so that clients look like the many machines
/// they stand for (per-address limits and throttles apply to each as to a real client), and
/// each address has an ephemeral port range of its own.
const SOURCES: u64 = 64;

fn source(client: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2 + (client % SOURCES) as u8))
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| e.to_string())?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A POP3 client that reads replies into one reusable buffer and counts multi-line octets
/// without copying them anywhere.
struct Pop3<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3<S> {
    fn new(stream: S) -> Self {
        Self { stream, buf: vec![0; 256 * 1024], start: 0, end: 0 }
    }

    async fn fill(&mut self) -> Result<(), String> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        self.end += n;
        Ok(())
    }

    /// The next status line; an `-ERR` is an error.
    async fn status(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf[self.start..self.end], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + at]).into_owned();
                self.start += at + 2;
                return if line.starts_with("+OK") { Ok(line) } else { Err(format!("server said {line:?}")) };
            }
            self.fill().await?;
        }
    }

    async fn command(&mut self, command: &str) -> Result<String, String> {
        self.send(command).await?;
        self.status().await
    }

    async fn send(&mut self, command: &str) -> Result<(), String> {
        let line = format!("{command}\r\n");
        self.stream.write_all(line.as_bytes()).await.map_err(|e| format!("write: {e}"))
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.command(&format!("USER {user}")).await?;
        self.command(&format!("PASS {password}")).await.map(drop)
    }

    /// Sends a command with a multi-line reply and returns the reply's size in octets
    /// (dot-stuffed, terminator excluded).
    async fn multiline(&mut self, command: &str) -> Result<u64, String> {
        self.command(command).await?;
        // The body ends with CRLF "." CRLF; an empty one is just "." CRLF.
        while self.end - self.start < 3 {
            self.fill().await?;
        }
        if self.buf[self.start..self.end].starts_with(b".\r\n") {
            self.start += 3;
            return Ok(0);
        }
        let mut octets = 0u64;
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(at) = memchr::memmem::find(data, b"\r\n.\r\n") {
                octets += at as u64 + 2;
                self.start += at + 5;
                return Ok(octets);
            }
            // Keep the last four bytes: they may begin the terminator.
            let consumed = data.len().saturating_sub(4);
            octets += consumed as u64;
            self.start += consumed;
            self.fill().await?;
        }
    }
}

/// A TLS client that checks the handshake signature (so its cost is real) but accepts any
/// certificate: both servers use a self-signed one.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // Every connection pays the full handshake, as a client that cannot resume would.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Idle sessions and memory

/// Opens `--sessions` connections, spread over `SOURCES` loopback source addresses, reads each greeting and, with `--login`,
/// logs in as a distinct user; then measures the server tree's memory against before.
async fn idle(options: &Options) -> Result<(), String> {
    let addr = address(&options.text("addr", None)?)?;
    let sessions = options.number("sessions", 1000)?;
    let login = options.flag("login");
    let prefix = options.text("prefix", Some("u"))?;
    let users = options.number("users", sessions)?;
    if login && users < sessions {
        return Err("--login needs a distinct user per session (--users >= --sessions)".into());
    }
    let password = options.text("password", Some("pw"))?;
    let server = options.number("pid", 0)? as u32;
    let before = tree_pss_kib(server);
    let started = Instant::now();
    let mut open = Vec::with_capacity(sessions as usize);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while open.len() < sessions as usize {
        // Logins in flight stay under the server's queue of password checks (max_pending_logins).
        while pending.len() < if login { 64 } else { 256 } && next < sessions {
            let source = source(next);
            let (prefix, password) = (prefix.clone(), password.clone());
            let n = next;
            pending.spawn(async move {
                let mut pop = Pop3::new(connect(addr, Some(source)).await?);
                pop.status().await?;
                if login {
                    pop.login(&format!("{prefix}{n}"), &password).await?;
                }
                pop.buf = Vec::new();
                Ok::<_, String>(pop)
            });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(pop))) => open.push(pop),
            Some(Ok(Err(e))) => return Err(format!("after {} sessions: {e}", open.len())),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    let opened = started.elapsed().as_secs_f64();
    // Let the server settle (buffers given back, hashing pool idle) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree_pss_kib(server);
    println!(
        "{{\"sessions\": {}, \"login\": {login}, \"open_seconds\": {opened:.1}, \"server_pss_before_kib\": {before}, \
         \"server_pss_after_kib\": {after}, \"kib_per_session\": {:.2}}}",
        open.len(),
        (after as f64 - before as f64) / open.len().max(1) as f64
    );
    drop(open);
    Ok(())
}

/// Processes of the tree rooted at `root` (the server and, for Dovecot, its children).
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse().ok())) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).into_iter().flatten());
        i += 1;
    }
    out
}

/// Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split(' ').map(str::to_owned).collect())
}

/// CPU time of the tree in milliseconds: user and system time of every live process, plus the
/// time of children they have already reaped (Dovecot's short-lived processes end up there).
fn tree_cpu_ms(root: u32) -> f64 {
    if root == 0 {
        return 0.0;
    }
    let ticks = 100.0; // USER_HZ on Linux
    let total: u64 = tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| (11..=14).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum::<u64>())
        .sum();
    total as f64 * 1000.0 / ticks
}

/// Proportional set size of the tree in KiB.
fn tree_pss_kib(root: u32) -> u64 {
    if root == 0 {
        return 0;
    }
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            let line = text.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}
