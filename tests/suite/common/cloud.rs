//! Throwaway real servers for cloud-mode tests: `redis-server` and the `s3s-fs` S3 server, each
//! on a free loopback port, stopped and restarted by PID. A missing binary fails the test: the
//! README's test command installs both.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const S3_ACCESS_KEY: &str = "cloudpop-test";
pub const S3_SECRET_KEY: &str = "cloudpop-test-secret";

/// A free TCP port on loopback (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(program: &str, args: &[String], log: PathBuf) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}; run scripts/test, which installs it"))
}

/// One round trip on a fresh connection, or None if the server is not answering.
fn exchange(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// A server process we started, killed (SIGKILL: no goodbye to clients) by PID.
#[derive(Default)]
struct Running(Option<Child>);

impl Running {
    fn is_running(&self) -> bool {
        self.0.is_some()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` without persistence, like a cache node that restarts empty.
pub struct Redis {
    child: Running,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra server arguments (TLS, passwords, cluster mode, replication).
    extra: Vec<String>,
    /// TLS only: readiness is checked by the client.
    tls: bool,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A plain Redis with extra server arguments (cluster mode, replication).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut redis = Self {
            child: Running::default(),
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            tls: false,
        };
        redis.restart();
        redis
    }

    /// A TLS-only Redis (`rediss://`) that requires `password`, using the given PEM files.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: &str) -> Self {
        let port = free_port();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(String::from)
        .to_vec();
        let mut redis = Self { child: Running::default(), port, dir: tempfile::tempdir().unwrap(), extra, tls: true };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`Redis::stop`]).
    pub fn restart(&mut self) {
        assert!(!self.child.is_running(), "already running");
        let dir = self.dir.path().to_str().unwrap();
        let mut args =
            ["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]
                .map(String::from)
                .to_vec();
        args.extend(self.extra.iter().cloned());
        self.child = Running(Some(spawn("redis-server", &args, self.dir.path().join("redis.log"))));
        if !self.tls {
            super::eventually("redis-server did not become ready", || {
                exchange(self.port, b"PING\r\n").is_some_and(|r| r.starts_with(b"+PONG"))
            });
        } else {
            super::eventually("redis-server did not become ready", || {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            });
        }
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// A Redis Cluster of three primaries (no replicas) on loopback, slots spread by
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for node in &nodes {
            super::eventually("the cluster did not come up", || {
                exchange(node.port, b"CLUSTER INFO\r\n")
                    .is_some_and(|r| String::from_utf8_lossy(&r).contains("cluster_state:ok"))
            });
        }
        Self { nodes }
    }

    /// Seed URLs for `redis_url`, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(Redis::url).collect::<Vec<_>>().join(",")
    }
}

/// A Redis primary, one replica and a Sentinel that monitors them as `primary`, reacting
/// after one second without an answer.
pub struct RedisSentinel {
    pub servers: Vec<Redis>,
    sentinel: Running,
    pub sentinel_port: u16,
    dir: tempfile::TempDir,
}

pub const SENTINEL_MASTER: &str = "primary";

impl RedisSentinel {
    pub fn start() -> Self {
        let primary = Redis::start();
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 4000\n",
                dir.path().display(),
                primary.port
            ),
        )
        .unwrap();
        let args = [conf.to_str().unwrap().to_string(), "--sentinel".into()];
        let sentinel = Running(Some(spawn("redis-server", &args, dir.path().join("sentinel.log"))));
        let set = Self { servers: vec![primary, replica], sentinel, sentinel_port, dir };
        super::eventually("the replica did not sync", || {
            set.info(set.servers[1].port).contains("master_link_status:up")
        });
        set
    }

    /// Waits until the sentinel has found the replica (it asks the primary every 10 s), so it
    /// has somewhere to fail over to.
    pub fn wait_for_replica(&self) {
        super::eventually("the sentinel did not find the replica", || {
            self.sentinel_says(&["SENTINEL", "REPLICAS", SENTINEL_MASTER]).contains("ip")
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port of the server the sentinel names as primary now.
    pub fn primary_port(&self) -> u16 {
        let reply = self.sentinel_says(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        reply.lines().last().and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    fn sentinel_says(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").arg("-p").arg(self.sentinel_port.to_string()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `INFO replication` of the server on `port`.
    pub fn info(&self, port: u16) -> String {
        let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(["INFO", "replication"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Asks the sentinel to fail over now (the old primary becomes a replica).
    pub fn fail_over(&self) {
        let reply = self.sentinel_says(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
        assert!(reply.contains("OK"), "SENTINEL FAILOVER: {reply}");
    }

    /// The server on `port`.
    pub fn server(&mut self, port: u16) -> &mut Redis {
        self.servers.iter_mut().find(|s| s.port == port).expect("one of ours")
    }
}

/// An `s3s-fs` S3 server over a temporary directory; each top-level folder is a bucket.
pub struct S3 {
    child: Running,
    pub port: u16,
    pub root: tempfile::TempDir,
}

impl S3 {
    pub fn start() -> Self {
        let mut s3 = Self { child: Running::default(), port: free_port(), root: tempfile::tempdir().unwrap() };
        s3.restart();
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (a folder, for s3s-fs).
    pub fn bucket(&self, name: &str) -> String {
        std::fs::create_dir_all(self.root.path().join("data").join(name)).unwrap();
        name.to_owned()
    }

    pub fn restart(&mut self) {
        assert!(!self.child.is_running(), "already running");
        let data = self.root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let args = [
            "--host".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
            "--access-key".into(),
            S3_ACCESS_KEY.into(),
            "--secret-key".into(),
            S3_SECRET_KEY.into(),
            data.to_string_lossy().into_owned(),
        ];
        self.child = Running(Some(spawn("s3s-fs", &args, self.root.path().join("s3.log"))));
        super::eventually("s3s-fs did not become ready", || {
            exchange(self.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_some_and(|r| r.starts_with(b"HTTP/1.1"))
        });
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// The environment that puts `cloudpop` in cloud mode against these servers.
pub fn cloud_env(s3: &S3, bucket: &str, redis: &Redis) -> Vec<(String, String)> {
    let mut env = cloud_env_without_redis(s3, bucket);
    env.push(("CLOUDPOP_REDIS_URL".into(), redis.url()));
    env
}

/// [`cloud_env`] without the Redis address, for a test that sets up Redis its own way.
pub fn cloud_env_without_redis(s3: &S3, bucket: &str) -> Vec<(String, String)> {
    [
        ("CLOUDPOP_STORE", "s3".to_string()),
        ("CLOUDPOP_LOCKS", "redis".into()),
        ("CLOUDPOP_S3_ENDPOINT", s3.endpoint()),
        ("CLOUDPOP_S3_BUCKET", bucket.into()),
        ("CLOUDPOP_S3_PREFIX", "pool".into()),
        ("CLOUDPOP_S3_PATH_STYLE", "true".into()),
        ("CLOUDPOP_S3_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
        ("CLOUDPOP_S3_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
        ("CLOUDPOP_S3_TIMEOUT_SECS", "3".into()),
        ("CLOUDPOP_REDIS_TIMEOUT_MS", "500".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A TCP relay in front of a real server that, once armed, passes the first request containing
/// a trigger but swallows every reply on that connection for a while, then cuts it: a command
/// the server applied whose answer never arrived.
pub struct ReplyDropper {
    pub port: u16,
    armed: Armed,
}

impl ReplyDropper {
    pub fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed: Armed = Default::default();
        let shared = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                relay(client, server, shared.clone());
            }
        });
        Self { port, armed }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next request containing `trigger` loses its reply (and the connection, after `hold`).
    pub fn arm(&self, trigger: &[u8], hold: Duration) {
        *self.armed.lock().unwrap() = Some((trigger.to_vec(), hold));
    }
}

/// The trigger of a [`ReplyDropper`], and how long it swallows replies.
type Armed = std::sync::Arc<std::sync::Mutex<Option<(Vec<u8>, Duration)>>>;

fn relay(mut client: TcpStream, mut server: TcpStream, armed: Armed) {
    let cut_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>> = Default::default();
    let (mut client_w, mut server_r) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let cut = cut_at.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut armed = armed.lock().unwrap();
            if let Some((trigger, hold)) = armed.as_ref()
                && buf[..n].windows(trigger.len()).any(|w| w == trigger.as_slice())
            {
                *cut.lock().unwrap() = Some(std::time::Instant::now() + *hold);
                *armed = None;
            }
            drop(armed);
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        server_r.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let read = server_r.read(&mut buf);
            // Looked at after the read: the trigger may have passed while it waited.
            let until = *cut_at.lock().unwrap();
            if until.is_some_and(|t| std::time::Instant::now() >= t) {
                break;
            }
            match read {
                Ok(0) => break,
                Ok(n) if until.is_none() => {
                    if client_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Ok(_) => {} // swallowed
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = client_w.shutdown(std::net::Shutdown::Both);
        let _ = server_r.shutdown(std::net::Shutdown::Both);
    });
}

/// What an [`S3Gate`] refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BatchDeletes {
    /// Nothing: the gate only counts requests on the wire.
    PassAll,
    /// Batch deletes (`POST /bucket?delete`) without Content-MD5, with 400 InvalidRequest
    /// (older MinIO, Ceph RGW).
    RequireContentMd5,
    /// All batch deletes, with 501 NotImplemented (stores without DeleteObjects).
    Refuse,
    /// Writes of late-arrival markers and every DELETE, with 503 (a store failing just there).
    FailLateMarkersAndDeletes,
    /// Writes of messages (not of their late-arrival markers) and every DELETE, with 503.
    FailMessagesAndDeletes,
}

/// An HTTP relay in front of a real S3 server that plays an older S3-compatible store for
/// batch deletes, or a store failing at chosen requests. Each request gets its own upstream connection (the relay asks for
/// `Connection: close`), so only request heads need reading.
pub struct S3Gate {
    pub port: u16,
    /// The request line of every request that reached the gate, in order.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub batches_passed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub batches_refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every relayed request's line, when its head arrived and when the relay was done with it
    /// (after the client may have read the answer).
    pub spans: std::sync::Arc<std::sync::Mutex<Vec<RequestSpan>>>,
}

/// One request through an [`S3Gate`].
#[derive(Clone, Debug)]
pub struct RequestSpan {
    pub line: String,
    pub arrived: std::time::Instant,
    pub answered: std::time::Instant,
}

impl RequestSpan {
    /// How far apart the two requests arrived. Through a gate that holds each request, two
    /// sent one after the other arrive at least the hold apart; two sent together, far less.
    pub fn apart(&self, other: &RequestSpan) -> Duration {
        self.arrived.max(other.arrived) - self.arrived.min(other.arrived)
    }
}

impl S3Gate {
    pub fn start(upstream: u16, rule: BatchDeletes) -> Self {
        Self::holding(upstream, rule, Duration::ZERO)
    }

    /// A gate that holds every request for `hold` before passing it on, as a distant store
    /// would: requests sent one after another then never overlap, concurrent ones always do.
    pub fn holding(upstream: u16, rule: BatchDeletes, hold: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Self {
            port,
            requests: Default::default(),
            batches_passed: Default::default(),
            batches_refused: Default::default(),
            spans: Default::default(),
        };
        let (passed, refused) = (gate.batches_passed.clone(), gate.batches_refused.clone());
        let (requests, spans) = (gate.requests.clone(), gate.spans.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (passed, refused, requests, spans) =
                    (passed.clone(), refused.clone(), requests.clone(), spans.clone());
                std::thread::spawn(move || {
                    let arrived = std::time::Instant::now();
                    let line = gate_one(client, upstream, rule, hold, &passed, &refused, &requests);
                    if let Some(line) = line {
                        let answered = std::time::Instant::now();
                        spans.lock().unwrap().push(RequestSpan { line, arrived, answered });
                    }
                });
            }
        });
        gate
    }

    /// The spans of the requests whose line contains `part`, in the order they were answered.
    pub fn spans_of(&self, part: &str) -> Vec<RequestSpan> {
        self.spans.lock().unwrap().iter().filter(|s| s.line.contains(part)).cloned().collect()
    }

    /// Requests seen so far whose request line starts with `method` and whose target matches
    /// `target` (e.g. `"GET"` and `|t| t.contains("list-type=2")`).
    pub fn count(&self, method: &str, target: impl Fn(&str) -> bool) -> usize {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter_map(|line| line.strip_prefix(method)?.strip_prefix(' ')?.split(' ').next())
            .filter(|t| target(t))
            .count()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Relays one request; its request line once it was relayed whole.
fn gate_one(
    mut client: TcpStream,
    upstream: u16,
    rule: BatchDeletes,
    hold: Duration,
    passed: &std::sync::atomic::AtomicUsize,
    refused: &std::sync::atomic::AtomicUsize,
    requests: &std::sync::Mutex<Vec<String>>,
) -> Option<String> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut head = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let request_line = text.lines().next().unwrap_or_default();
    requests.lock().unwrap().push(request_line.to_owned());
    let batch = request_line.starts_with("POST ") && request_line.contains("?delete");
    let has_md5 = text.lines().any(|l| l.to_ascii_lowercase().starts_with("content-md5:"));
    let put = request_line.starts_with("PUT ");
    let fails = match rule {
        BatchDeletes::FailLateMarkersAndDeletes => put && request_line.contains("~late"),
        BatchDeletes::FailMessagesAndDeletes => {
            put && request_line.contains("/mail/") && !request_line.contains("~late")
        }
        _ => false,
    } || (matches!(rule, BatchDeletes::FailLateMarkersAndDeletes | BatchDeletes::FailMessagesAndDeletes)
        && request_line.starts_with("DELETE "));
    if fails {
        refused.fetch_add(1, SeqCst);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code></Error>";
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(reply.as_bytes());
        return None;
    }
    if batch {
        let refusal = match rule {
            BatchDeletes::Refuse => Some(("501 Not Implemented", "NotImplemented", "DeleteObjects is not supported")),
            BatchDeletes::RequireContentMd5 if !has_md5 => {
                Some(("400 Bad Request", "InvalidRequest", "Missing required header for this request: Content-Md5."))
            }
            _ => None,
        };
        if let Some((status, code, message)) = refusal {
            refused.fetch_add(1, SeqCst);
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            );
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(reply.as_bytes());
            return None;
        }
        passed.fetch_add(1, SeqCst);
    }
    let mut rewritten: String = text[..end - 2]
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    // Playing distance, not a timeout: the test asks for it (`S3Gate::holding`).
    std::thread::sleep(hold);
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return None };
    if server.write_all(rewritten.as_bytes()).is_err() || server.write_all(&head[end..]).is_err() {
        return None;
    }
    let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = upload.join();
    Some(request_line.to_owned())
}

/// Settings for a store client of the library itself against `s3`, under `prefix`.
pub fn s3_settings(s3: &S3, bucket: &str, prefix: &str) -> cloudpop::store::s3::S3Settings {
    cloudpop::store::s3::S3Settings {
        endpoint: s3.endpoint(),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        prefix: prefix.into(),
        path_style: true,
        access_key: Some((S3_ACCESS_KEY.into(), cloudpop::secret::Secret::new(S3_SECRET_KEY))),
        timeout: Duration::from_secs(5),
        max_attempts: 3,
    }
}
