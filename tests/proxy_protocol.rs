//! Behind a load balancer: the PROXY protocol header names the real client, whose address then
//! decides the plaintext-login rule, the logs and the throttles.

mod common;
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
