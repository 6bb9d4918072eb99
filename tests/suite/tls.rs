//! STLS (RFC 2595) and implicit TLS (RFC 8314) with real rustls clients.

use crate::common;
use common::{Client, Server, message, tls_config};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

#[test]
fn implicit_tls_session() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let m = message("over tls", 5);
    server.deliver("alice", &m);
    let mut c = Client::connect_tls(server.pop3s, &server.cert());
    assert!(c.greeting.starts_with("+OK"));
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    assert_eq!(c.multi("RETR 1").1, m);
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn stls_upgrade_then_login() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let mut c = Client::connect_stls(server.pop3, &server.cert());
    let caps = c.lines("CAPA");
    assert!(!caps.iter().any(|l| l == "STLS"), "STLS offered again after TLS: {caps:?}");
    assert!(c.cmd("STLS").starts_with("-ERR"));
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert!(c.cmd("PASS secret").starts_with("+OK"));
    assert!(c.cmd("STAT").starts_with("+OK 0 0"));
}

/// Commands pipelined after STLS in the same packet must be discarded, never run after the
/// handshake (the STARTTLS command-injection attack, CVE-2011-0411 style).
#[test]
fn bytes_after_stls_are_discarded() {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let mut raw = TcpStream::connect(server.pop3).unwrap();
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    raw.write_all(b"STLS\r\nUSER alice\r\nPASS secret\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    // Give the injected bytes time to arrive with the STLS line: they are in one packet anyway.
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(&server.cert()), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, raw);
    tls.write_all(b"STAT\r\n").unwrap();
    let mut reader = BufReader::new(tls);
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert!(reply.starts_with("-ERR"), "injected USER/PASS took effect: {reply}");
}

#[test]
fn only_tls_12_and_13_are_accepted() {
    let server = Server::start(&[]);
    let script = format!(
        r#"
import socket, ssl, sys
def attempt(lo, hi):
    ctx = ssl.create_default_context(cafile={cert:?})
    ctx.minimum_version, ctx.maximum_version = lo, hi
    try:
        with socket.create_connection(("127.0.0.1", {port})) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                return t.version()
    except (ssl.SSLError, OSError):
        return "refused"
V = ssl.TLSVersion
print(attempt(V.TLSv1_3, V.TLSv1_3), attempt(V.TLSv1_2, V.TLSv1_2))
# The same ClientHello, written out by hand so that no client library refuses it first, offering
# TLS 1.2 and then at most TLS 1.1: the server answers the first with a ServerHello (handshake
# record 0x16) and the second with a fatal protocol_version alert (0x15 .. 0x02 0x46).
import struct
def hello(version):
    ext = lambda kind, data: struct.pack(">HH", kind, len(data)) + data
    extensions = (ext(0x000a, bytes.fromhex("0004001d0017"))        # groups: x25519, P-256
                  + ext(0x000b, bytes.fromhex("0100"))              # point formats: uncompressed
                  + ext(0x000d, bytes.fromhex("0006040308040401")))  # signature algorithms
    suites = bytes.fromhex("c02bc02fc009c013002f")
    body = (struct.pack(">H", version) + bytes(32) + b"\x00" + struct.pack(">H", len(suites)) + suites
            + b"\x01\x00" + struct.pack(">H", len(extensions)) + extensions)
    handshake = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake
def answer(version):
    with socket.create_connection(("127.0.0.1", {port}), timeout=10) as s:
        s.sendall(hello(version))
        head = s.recv(7)
    if head[:1] == b"\x16":
        return "server-hello"
    if head[:1] == b"\x15" and head[5:7] == b"\x02\x46":
        return "protocol-version-alert"
    return head.hex() or "closed"
print(answer(0x0303), answer(0x0302))
"#,
        cert = server.cert().to_str().unwrap(),
        port = server.pop3s.port()
    );
    let out = std::process::Command::new("python3").arg("-c").arg(script).output().expect("python3");
    let out = String::from_utf8_lossy(&out.stdout);
    let want = ["TLSv1.3", "TLSv1.2", "server-hello", "protocol-version-alert"];
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), want, "{out}");
}

#[test]
fn configured_certificate_is_used() {
    // Start once to generate a certificate, then hand it to a second server as configured files.
    let first = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::copy(first.cert(), &cert).unwrap();
    std::fs::copy(first.data_dir().join("tls/selfsigned-key.pem"), &key).unwrap();
    drop(first);
    let server =
        Server::start(&[("CLOUDPOP_TLS_CERT", cert.to_str().unwrap()), ("CLOUDPOP_TLS_KEY", key.to_str().unwrap())]);
    assert!(!server.cert().exists(), "generated a certificate although one was configured");
    let c = Client::connect_tls(server.pop3s, &cert);
    assert!(c.greeting.starts_with("+OK"));
}

/// Issue 10: reconnecting clients resume their TLS session (TLS 1.3 tickets, TLS 1.2 tickets or
/// session ids) instead of paying a full handshake, and the default certificate is ECDSA P-256.
/// Checked with OpenSSL's client (Python's `ssl`), on both TLS listeners' implicit port.
#[test]
fn reconnecting_clients_resume_their_tls_session() {
    let server = Server::start(&[]);
    let script = format!(
        r#"
import socket, ssl
V = ssl.TLSVersion
def resumed(version, tickets):
    ctx = ssl.create_default_context(cafile={cert:?})
    ctx.minimum_version = ctx.maximum_version = version
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    session, results = None, []
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", {port})) as s:
            with ctx.wrap_socket(s, server_hostname="localhost", session=session) as t:
                t.recv(100)  # the greeting; a TLS 1.3 ticket arrives with it
                results.append((t.session_reused, t.cipher()[0]))
                session = t.session
    return results
for version, tickets in [(V.TLSv1_3, True), (V.TLSv1_2, True), (V.TLSv1_2, False)]:
    (first, _), (second, cipher) = resumed(version, tickets)
    print(first, second, cipher)
"#,
        cert = server.cert().to_str().unwrap(),
        port = server.pop3s.port()
    );
    let out = std::process::Command::new("python3").arg("-c").arg(script).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 3, "{text}{}", String::from_utf8_lossy(&out.stderr));
    for (line, what) in lines.iter().zip(["TLS 1.3 ticket", "TLS 1.2 ticket", "TLS 1.2 session id"]) {
        assert_eq!(&line[..2], ["False", "True"], "{what}: the second connection was not resumed: {text}");
    }
    assert!(lines[1][2].starts_with("ECDHE-ECDSA-"), "the default certificate is not ECDSA: {text}");
}
