//! Behind a load balancer: the PROXY protocol header names the real client, whose address then
//! decides the plaintext-login rule, the logs and the throttles.

use crate::common;
use common::{Client, Server};

const REMOTE_V1: &[u8] = b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 110\r\n";
const LOOPBACK_V1: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 110\r\n";

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&995u16.to_be_bytes());
    h
}

#[test]
fn the_real_client_address_decides_the_plaintext_rule() {
    let server =
        Server::start(&[("CLOUDPOP_PROXY_PROTOCOL", "true"), ("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "127.0.0.0/8")]);
    server.add_account("alice", "secret");

    // A remote client without TLS may not send its password in clear.
    let mut remote = Client::connect_after(server.pop3, REMOTE_V1, None);
    assert!(remote.greeting.starts_with("+OK"));
    let caps = remote.lines("CAPA");
    assert!(!caps.iter().any(|l| l == "USER") && caps.iter().any(|l| l == "STLS"), "{caps:?}");
    assert!(remote.cmd("USER alice").starts_with("-ERR [AUTH] Plaintext"));
    assert!(remote.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").starts_with("-ERR [AUTH] Plaintext"));

    // A loopback client (per the header) may log in without TLS.
    let mut local = Client::connect_after(server.pop3, LOOPBACK_V1, None);
    assert!(local.cmd("USER alice").starts_with("+OK"));
    assert!(local.cmd("PASS secret").starts_with("+OK"));
}

#[test]
fn implicit_tls_after_a_v2_header() {
    let server =
        Server::start(&[("CLOUDPOP_PROXY_PROTOCOL", "true"), ("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "127.0.0.0/8")]);
    server.add_account("alice", "secret");
    let mut c = Client::connect_after(server.pop3s, &v2_header([198, 51, 100, 7], 8080), Some(&server.cert()));
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    assert!(server.log().contains("198.51.100.7:8080"));
}

#[test]
fn connections_without_a_header_are_dropped() {
    let server =
        Server::start(&[("CLOUDPOP_PROXY_PROTOCOL", "true"), ("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "127.0.0.0/8")]);
    let mut c = Client::connect_after(server.pop3, b"USER alice\r\n", None);
    assert_eq!(c.greeting, "", "a connection without PROXY header was served");
    assert!(c.is_closed());
}

/// A real HAProxy (Debian's) in TCP mode with `send-proxy-v2`, connecting to cloudpop from
/// 127.0.0.2, the only trusted network; killed by PID when dropped.
struct Haproxy {
    child: std::process::Child,
    front: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backend: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let front: std::net::SocketAddr = format!("127.0.0.1:{}", common::cloud::free_port()).parse().unwrap();
        let config = format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend pop3\n  bind {front}\n  default_backend cloudpop\nbackend cloudpop\n  \
             server one {backend} send-proxy-v2 source 127.0.0.2\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (installed by scripts/test)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(front).is_err() {
            assert!(std::time::Instant::now() < deadline, "haproxy never listened");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, front, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_in_front_is_trusted_and_a_forged_header_from_elsewhere_is_refused() {
    let server =
        Server::start(&[("CLOUDPOP_PROXY_PROTOCOL", "true"), ("CLOUDPOP_PROXY_TRUSTED_NETWORKS", "127.0.0.2/32")]);
    server.add_account("alice", "secret");
    server.deliver("alice", &common::message("via haproxy", 3));
    let haproxy = Haproxy::start(server.pop3);

    // Through the balancer (which connects from 127.0.0.2): cloudpop sees the real client.
    let mut c = Client::connect(haproxy.front);
    assert!(c.greeting.starts_with("+OK"), "{}", c.greeting);
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let log = server.log();
    assert!(log.contains("peer=127.0.0.1:") && !log.contains("peer=127.0.0.2:"), "{log}");

    // Straight to cloudpop from an untrusted address, claiming to be someone else: refused
    // before a single byte is answered.
    let before = server.metrics();
    let mut forged = Client::connect_after(server.pop3, b"PROXY TCP4 198.51.100.1 192.0.2.1 4000 110\r\n", None);
    assert_eq!(forged.greeting, "", "a forged PROXY header from an untrusted peer was served");
    assert!(forged.is_closed());
    let refused = r#"cloudpop_connections_refused_total{listener="pop3",reason="proxy_untrusted"}"#;
    assert_eq!(server.metrics().delta(&before, refused), 1.0);
    assert!(!server.log().contains("198.51.100.1"), "the forged address reached the log");
}
