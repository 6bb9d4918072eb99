//! A client generated independently from `proto/` in another language (Python grpcio-tools)
//! manages accounts and delivers mail; the mail is then retrieved over POP3 byte-exact.

use crate::common;
use common::Server;
use common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};

#[test]
fn python_client_generated_from_the_proto_files() {
    let server = Server::start(&token_env());
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/independent_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(proto)
        .arg(server.api.unwrap().to_string())
        .arg(server.pop3.port().to_string())
        .arg(ADMIN_TOKEN)
        .arg(INGEST_TOKEN)
        .output()
        .expect("python3 (run scripts/test, which installs grpcio-tools)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{stderr}");
}
