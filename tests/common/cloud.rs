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
    /// Extra server arguments (TLS, passwords); with TLS, readiness is checked by the client.
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Self {
        let mut redis =
            Self { child: Running::default(), port: free_port(), dir: tempfile::tempdir().unwrap(), extra: Vec::new() };
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
        let mut redis = Self { child: Running::default(), port, dir: tempfile::tempdir().unwrap(), extra };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`Redis::stop`]).
    pub fn restart(&mut self) {
        assert!(!self.child.is_running(), "already running");
        let mut args = ["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec();
        args.extend(self.extra.iter().cloned());
        self.child = Running(Some(spawn("redis-server", &args, self.dir.path().join("redis.log"))));
        if self.extra.is_empty() {
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
        ("CLOUDPOP_REDIS_URL", redis.url()),
        ("CLOUDPOP_REDIS_TIMEOUT_MS", "500".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
