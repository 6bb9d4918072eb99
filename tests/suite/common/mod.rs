//! Test support: the real `cloudpop` binary on port 0 with a throwaway data directory, and a
//! small blocking POP3 client (plain, STLS and implicit TLS) that shows the raw protocol.
#![allow(dead_code)]

pub mod api;
pub mod cloud;
pub mod identity;
pub mod otlp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cloudpop");

/// A running `cloudpop serve`, killed (by PID) when dropped.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Extra environment, also given to the `account` and `deliver` commands run for it.
    pub env: Vec<(String, String)>,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    /// The gRPC API, on a free port unless the test disabled it.
    pub api: Option<SocketAddr>,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`).
    pub ops: Option<SocketAddr>,
    /// The LMTP listener, when the test set `CLOUDPOP_LMTP_LISTEN`.
    pub lmtp: Option<SocketAddr>,
}

impl Server {
    /// Starts with test-friendly settings (short failed-login delay); `env` adds or overrides.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, env)
    }

    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::start_with(dir, env)
    }

    /// Starts in cloud mode (or any mode) with an owned environment.
    pub fn start_with(dir: tempfile::TempDir, env: Vec<(String, String)>) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("CLOUDPOP_AUTH_FAILURE_DELAY_MS", "50")
            .env("CLOUDPOP_API_LISTEN", "127.0.0.1:0")
            .env("CLOUDPOP_OPS_LISTEN", "127.0.0.1:0")
            .env("CLOUDPOP_DRAIN_DELAY_SECS", "0")
            .env("CLOUDPOP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("server.log")).unwrap()));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().expect("start cloudpop");
        // Readiness: the server prints one line per bound listener on stdout.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The API starts only when some token is configured.
        let set = |key: &str| env.iter().any(|(k, v)| k == key && !v.is_empty());
        let want_api = !env.iter().any(|(k, v)| k == "CLOUDPOP_API_LISTEN" && v.is_empty())
            && (set("CLOUDPOP_API_ADMIN_TOKENS") || set("CLOUDPOP_API_INGEST_TOKENS"));
        let want_ops = !env.iter().any(|(k, v)| k == "CLOUDPOP_OPS_LISTEN" && v.is_empty());
        let want_lmtp = set("CLOUDPOP_LMTP_LISTEN");
        let (mut pop3, mut pop3s, mut api, mut ops, mut lmtp) = (None, None, None, None, None);
        while pop3.is_none()
            || pop3s.is_none()
            || (want_api && api.is_none())
            || (want_ops && ops.is_none())
            || (want_lmtp && lmtp.is_none())
        {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("server exited before listening:\n{log}");
            }
            let addr = || line.trim().rsplit(' ').next().unwrap().parse::<SocketAddr>().unwrap();
            if line.starts_with("cloudpop: pop3 listening on") {
                pop3 = Some(addr());
            } else if line.starts_with("cloudpop: pop3s listening on") {
                pop3s = Some(addr());
            } else if line.starts_with("cloudpop: api listening on") {
                api = Some(addr());
            } else if line.starts_with("cloudpop: ops listening on") {
                ops = Some(addr());
            } else if line.starts_with("cloudpop: lmtp listening on") {
                lmtp = Some(addr());
            }
        }
        Self { child, dir, env, pop3: pop3.unwrap(), pop3s: pop3s.unwrap(), api, ops, lmtp }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cert(&self) -> PathBuf {
        self.data_dir().join("tls/selfsigned-cert.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn add_account(&self, name: &str, password: &str) {
        let args = ["account", "add", name, "--password-stdin"];
        let (ok, _, err) = cli_env(&self.data_dir(), &self.env, &args, format!("{password}\n").as_bytes());
        assert!(ok, "account add failed: {err}");
    }

    /// Delivers one message through `cloudpop deliver`; returns its id.
    pub fn deliver(&self, name: &str, message: &[u8]) -> String {
        let (ok, out, err) = cli_env(&self.data_dir(), &self.env, &["deliver", name], message);
        assert!(ok, "deliver failed: {err}");
        out.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// GETs a path of the operations listener: (status, body).
    pub fn ops_get(&self, path: &str) -> (u16, String) {
        http_get(self.ops.expect("operations listener enabled"), path)
    }

    /// Waits until `/readyz` answers `want` (200 or 503); panics after 20 s.
    pub fn wait_ready(&self, want: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.ops_get("/readyz");
            if status == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "/readyz stayed {status} ({body}), wanted {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every sample of `/metrics`, parsed by the Prometheus project's own OpenMetrics parser.
    pub fn metrics(&self) -> Metrics {
        let (status, text) = self.ops_get("/metrics");
        assert_eq!(status, 200, "{text}");
        Metrics::parse(&text)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-TERM`, `-INT`, `-KILL`) to the server process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the server to exit; returns its status and its directory, kept for inspection.
    pub fn wait(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let status = self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `cloudpop` subcommand against `data_dir` and returns its stdout; panics on failure.
pub fn cli(data_dir: &Path, args: &[&str], stdin: &[u8]) -> String {
    let (ok, out, err) = cli_result(data_dir, args, stdin);
    assert!(ok, "cloudpop {args:?} failed: {err}");
    out
}

/// Runs a `cloudpop` subcommand; returns (success, stdout, stderr).
pub fn cli_result(data_dir: &Path, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    cli_env(data_dir, &[], args, stdin)
}

/// Runs a `cloudpop` subcommand with extra environment; returns (success, stdout, stderr).
pub fn cli_env(data_dir: &Path, env: &[(String, String)], args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking POP3 client that exposes raw lines.
pub struct Client {
    reader: BufReader<Box<dyn Stream>>,
    pub greeting: String,
}

pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls_wrap(tcp: TcpStream, cert: &Path) -> Box<dyn Stream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(cert), name).unwrap();
    Box::new(rustls::StreamOwned::new(conn, tcp))
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::over(Box::new(tcp(addr)))
    }

    pub fn connect_tls(addr: SocketAddr, cert: &Path) -> Self {
        Self::over(tls_wrap(tcp(addr), cert))
    }

    /// Connects with implicit TLS; also the connection's `tls-exporter` channel binding
    /// (RFC 9266), which only TLS 1.3 gives.
    pub fn connect_tls_with_exporter(addr: SocketAddr, cert: &Path) -> (Self, Option<Vec<u8>>) {
        let mut raw = tcp(addr);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(tls_config(cert), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut raw).unwrap();
        }
        let tls13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        let exporter = conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None).ok();
        (Self::over(Box::new(rustls::StreamOwned::new(conn, raw))), exporter.filter(|_| tls13))
    }

    /// Connects, sends `prefix` (a load balancer's PROXY header), then speaks POP3 (or TLS).
    pub fn connect_after(addr: SocketAddr, prefix: &[u8], tls_cert: Option<&Path>) -> Self {
        let mut raw = tcp(addr);
        raw.write_all(prefix).unwrap();
        match tls_cert {
            Some(cert) => Self::over(tls_wrap(raw, cert)),
            None => Self::over(Box::new(raw)),
        }
    }

    /// Connects to the plain listener and upgrades with STLS.
    pub fn connect_stls(addr: SocketAddr, cert: &Path) -> Self {
        let mut raw = tcp(addr);
        let mut plain = BufReader::new(raw.try_clone().unwrap());
        let mut greeting = String::new();
        plain.read_line(&mut greeting).unwrap();
        raw.write_all(b"STLS\r\n").unwrap();
        let mut reply = String::new();
        plain.read_line(&mut reply).unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
        assert!(plain.buffer().is_empty());
        Self { reader: BufReader::new(tls_wrap(raw, cert)), greeting }
    }

    fn over(stream: Box<dyn Stream>) -> Self {
        let mut client = Self { reader: BufReader::new(stream), greeting: String::new() };
        client.greeting = client.line();
        client
    }

    /// Connects and logs in with USER/PASS, asserting success.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Self {
        let mut c = Self::connect(addr);
        assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
        let reply = c.cmd(&format!("PASS {password}"));
        assert!(reply.starts_with("+OK"), "{reply}");
        c
    }

    pub fn send(&mut self, raw: &[u8]) {
        let stream = self.reader.get_mut();
        stream.write_all(raw).unwrap();
        stream.flush().unwrap();
    }

    /// Reads one line, without its CRLF ("" at end of stream).
    pub fn line(&mut self) -> String {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) => {}
            // A reset is how a server refuses a connection whose bytes it never read.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => {
                return String::new();
            }
            Err(e) => panic!("read failed: {e}"),
        }
        assert!(line.is_empty() || line.ends_with(b"\r\n"), "line not CRLF-terminated: {line:?}");
        String::from_utf8_lossy(&line).trim_end_matches("\r\n").to_owned()
    }

    /// Logs in with USER/PASS, retrying while the maildrop is still held (`[IN-USE]`) by a
    /// session the server has not finished ending; fails after 10 s. Returns the last reply.
    pub fn login_when_free(addr: SocketAddr, user: &str, password: &str) -> (Self, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = Self::connect(addr);
            c.cmd(&format!("USER {user}"));
            let reply = c.cmd(&format!("PASS {password}"));
            if !reply.starts_with("-ERR [IN-USE]") {
                return (c, reply);
            }
            assert!(std::time::Instant::now() < deadline, "{user}'s maildrop still in use after 10 s");
            std::thread::sleep(Duration::from_millis(20)); // a retrying client's pace
        }
    }

    /// Sends a command and returns the single-line reply.
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.line()
    }

    /// Reads the body of a multi-line response, un-dot-stuffed, up to the terminating dot.
    /// Reads at a client's own pace (`per_read` octets, then `pause`) until the server closes the
    /// connection or `timeout` passes; the octets read, and whether the connection was closed.
    pub fn read_slowly(&mut self, per_read: usize, pause: Duration, timeout: Duration) -> (u64, bool) {
        use std::io::Read;
        let started = std::time::Instant::now();
        let mut buf = vec![0u8; per_read];
        let mut total = 0u64;
        while started.elapsed() < timeout {
            match self.reader.read(&mut buf) {
                Ok(0) | Err(_) => return (total, true),
                Ok(n) => total += n as u64,
            }
            std::thread::sleep(pause);
        }
        (total, false)
    }

    pub fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).unwrap();
            assert!(line.ends_with(b"\r\n"), "unterminated multi-line response: {line:?}");
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    /// Sends a multi-line command; returns the status line and the body (empty on -ERR).
    pub fn multi(&mut self, command: &str) -> (String, Vec<u8>) {
        let status = self.cmd(command);
        if status.starts_with("+OK") { (status, self.body()) } else { (status, Vec::new()) }
    }

    /// The lines of a multi-line response as text.
    pub fn lines(&mut self, command: &str) -> Vec<String> {
        let (status, body) = self.multi(command);
        assert!(status.starts_with("+OK"), "{command}: {status}");
        String::from_utf8(body).unwrap().lines().map(str::to_owned).collect()
    }

    /// Whether the server closed the connection: end of stream or a reset before the read
    /// timeout. A server that keeps the socket open and goes silent is not closed (the read
    /// times out), nor is one that sends more.
    pub fn is_closed(&mut self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, TimedOut, UnexpectedEof, WouldBlock};
        let mut probe = [0u8; 1];
        match self.reader.read(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe) => true,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => false,
            Err(e) => panic!("reading to see whether the server closed the connection: {e}"),
        }
    }
}

/// Runs `cloudpop serve` in a fresh data directory with `args` and `env` until it exits, or
/// kills it after 20 s (it started): its exit code (`None` when killed), standard output and
/// standard error. For settings that must stop the server before it starts.
pub fn serve_until_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    drop(dir);
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory (`VmHWM`) of a process in KiB: the kernel's own high-water mark since
/// the start or the last [`reset_peak_rss`], so no peak between two samples is missed.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM")
}

/// Sets a process's peak resident memory back to its current resident memory (Linux: `5` into
/// `/proc/PID/clear_refs`), so that [`peak_rss_kib`] afterwards measures one operation.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    assert!(peak_rss_kib(pid) <= proc_status_kib(pid, "VmRSS") + 1024, "VmHWM was not reset");
}

/// A message with CRLF line endings, a given subject and `lines` body lines.
pub fn message(subject: &str, lines: usize) -> Vec<u8> {
    let mut m = format!("From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n\r\n").into_bytes();
    for i in 0..lines {
        m.extend_from_slice(format!("line {i} of {subject}\r\n").as_bytes());
    }
    m
}

/// Polls until `done` holds (a readiness check, not a sleep); panics with `what` after 20 s.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`eventually`] for async checks, inside a test's runtime.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One HTTP/1.1 GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Bodies here are small; axum sends them with a Content-Length, never chunked.
    (status, body.to_owned())
}

/// Samples from `/metrics`, keyed `name{label="value",...}` with labels sorted.
pub struct Metrics(std::collections::BTreeMap<String, f64>);

impl Metrics {
    /// Parses with `prometheus_client`'s strict OpenMetrics parser (Python, installed by the
    /// test command), so a malformed exposition fails the test.
    pub fn parse(text: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/parse_metrics.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the exposition does not parse: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples: Vec<(String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
        Self(samples.into_iter().collect())
    }

    /// A sample's value. A series that is not exported fails the test (a renamed or never
    /// registered series must not read as 0), naming the family's series that are.
    pub fn get(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(value) => *value,
            None => {
                let family = key.split('{').next().unwrap_or(key);
                let near: Vec<&String> = self.0.keys().filter(|k| k.starts_with(family)).collect();
                panic!("no series {key} in /metrics; of {family}: {near:#?}")
            }
        }
    }

    /// How much `key` grew since `before`. The series must exist now; in `before` it may be
    /// missing (store operations get their series at first use) and then counts as 0.
    pub fn delta(&self, before: &Metrics, key: &str) -> f64 {
        self.get(key) - before.0.get(key).copied().unwrap_or(0.0)
    }

    /// The sum of a family's series whose labels include `label` (`operation="GetObject"`);
    /// fails when the family has no series at all.
    pub fn sum(&self, family: &str, label: &str) -> f64 {
        let open = format!("{family}{{");
        let series: Vec<(&String, &f64)> = self.0.iter().filter(|(k, _)| k.starts_with(&open)).collect();
        assert!(!series.is_empty(), "no series of {family} in /metrics");
        series.into_iter().filter(|(k, _)| k.contains(label)).map(|(_, v)| v).sum()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}
