//! Real POP3 clients from Debian and Python retrieve mail byte-exact: poplib (plain, POP3_SSL,
//! STLS), curl (pop3:// with STLS and pop3s://), fetchmail, getmail6 and mpop.
//!
//! The test command installs these clients; a missing one is a failure, never a skip.

use crate::common;
use common::Server;
use std::path::Path;
use std::process::Command;

/// Three messages that exercise dot-stuffing, long bodies and many lines.
fn corpus() -> Vec<Vec<u8>> {
    let mut big = b"From: a@example.com\r\nSubject: big\r\n\r\n".to_vec();
    for i in 0..6000usize {
        big.extend_from_slice(
            format!("{}line {i} {}\r\n", if i.is_multiple_of(5) { "." } else { "" }, "y".repeat(i % 70)).as_bytes(),
        );
    }
    vec![
        b"From: a@example.com\r\nSubject: first\r\n\r\n.leading dot\r\n.\r\n..two dots\r\nend\r\n".to_vec(),
        big,
        b"From: b@example.com\r\nSubject: third\r\n\r\nshort\r\n".to_vec(),
    ]
}

fn server_with_corpus() -> (Server, Vec<Vec<u8>>) {
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    let corpus = corpus();
    for m in &corpus {
        server.deliver("alice", m);
    }
    (server, corpus)
}

fn run(cmd: &mut Command) -> String {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run the README test command to install it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn lf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n").into_bytes()
}

/// Reads every file in `dir`, strips what the client adds, sorts by content.
fn delivered(dir: &Path, strip_prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes.strip_prefix(strip_prefix).map(<[u8]>::to_vec).unwrap_or(bytes)
        })
        .collect();
    got.sort();
    got
}

fn sorted_lf(corpus: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut want: Vec<Vec<u8>> = corpus.iter().map(|m| lf(m)).collect();
    want.sort();
    want
}

#[test]
fn python_poplib_plain_ssl_and_stls() {
    let (server, corpus) = server_with_corpus();
    let script = r#"
import poplib, ssl, sys, json
port, sport, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
def fetch(c):
    c.user("alice"); c.pass_("secret")
    count, _ = c.stat()
    msgs = [b"\r\n".join(c.retr(i)[1]).hex() + "0d0a" for i in range(1, count + 1)]
    caps = sorted(c.capa().keys())
    c.quit()
    return {"msgs": msgs, "caps": caps}
plain = poplib.POP3("127.0.0.1", port)
stls = poplib.POP3("localhost", port); stls.stls(ctx)
implicit = poplib.POP3_SSL("localhost", sport, context=ctx)
print(json.dumps([fetch(plain), fetch(stls), fetch(implicit)]))
"#;
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(server.pop3.port().to_string())
        .arg(server.pop3s.port().to_string())
        .arg(server.cert()));
    let results: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    let want: Vec<String> = corpus.iter().map(|m| m.iter().map(|b| format!("{b:02x}")).collect()).collect();
    for (mode, result) in ["plain", "stls", "pop3_ssl"].iter().zip(&results) {
        let got: Vec<String> =
            result["msgs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        assert!(got == want, "poplib {mode}: messages differ");
    }
}

#[test]
fn curl_pop3_with_stls_and_pop3s() {
    let (server, corpus) = server_with_corpus();
    let cert = server.cert();
    for (i, m) in corpus.iter().enumerate() {
        for url in [
            format!("pop3://127.0.0.1:{}/{}", server.pop3.port(), i + 1),
            format!("pop3s://127.0.0.1:{}/{}", server.pop3s.port(), i + 1),
        ] {
            let out = Command::new("curl")
                .args(["-sS", "--ssl-reqd", "--cacert"])
                .arg(&cert)
                .args(["-u", "alice:secret", &url])
                .output()
                .expect("curl");
            assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == *m, "{url}: message differs ({} vs {} octets)", out.stdout.len(), m.len());
        }
    }
    // The listing and UIDL through curl's custom request.
    let out = Command::new("curl")
        .args(["-sS", "-u", "alice:secret", "-X", "UIDL", &format!("pop3://127.0.0.1:{}/", server.pop3.port())])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn fetchmail_over_stls() {
    let (server, corpus) = server_with_corpus();
    let out = tempfile::tempdir().unwrap();
    let inbox = out.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let rc = out.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 service {port} protocol pop3 auth password\n  user \"alice\" password \"secret\" is \"x\" here\n  \
             sslproto 'TLS1.2+' sslcertck sslcertfile \"{cert}\" sslcommonname \"localhost\"\n  keep fetchall\n  \
             mda \"/bin/sh -c 'cat > {inbox}/msg.$$'\"\n",
            port = server.pop3.port(),
            cert = server.cert().display(),
            inbox = inbox.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    run(Command::new("fetchmail")
        .args(["-f"])
        .arg(&rc)
        .args(["--nosyslog", "--invisible", "--norewrite", "--idfile"])
        .arg(out.path().join("fetchids"))
        .env("HOME", out.path()));
    // fetchmail hands messages to the MDA with LF line endings.
    assert_eq!(delivered(&inbox, b""), sorted_lf(&corpus));
}

#[test]
fn getmail6_over_implicit_tls() {
    let (server, corpus) = server_with_corpus();
    let out = tempfile::tempdir().unwrap();
    let inbox = out.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let rc = out.path().join("getmailrc");
    std::fs::write(
        &rc,
        format!(
            "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\nport = {port}\nusername = alice\npassword = secret\n\
             ssl_ca_certs = {cert}\nssl_hostname = localhost\n\n[destination]\ntype = MDA_external\npath = /bin/sh\n\
             arguments = (\"-c\", \"cat > {inbox}/msg.$$\")\nallow_root_commands = true\nunixfrom = false\n\n\
             [options]\nread_all = true\ndelete = true\ndelivered_to = false\nreceived = false\nmessage_log_syslog = false\n",
            port = server.pop3s.port(),
            cert = server.cert().display(),
            inbox = inbox.display()
        ),
    )
    .unwrap();
    run(Command::new("getmail")
        .arg(format!("--getmaildir={}", out.path().display()))
        .arg(format!("--rcfile={}", rc.display())));
    // getmail adds a Return-Path header of its own.
    assert_eq!(delivered(&inbox, b"Return-Path: <unknown>\n"), sorted_lf(&corpus));
    // delete = true: getmail sent DELE and QUIT, so the maildrop is empty now.
    let mut c = common::Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
}

#[test]
fn mpop_over_stls_and_uidl_tracking() {
    let (server, corpus) = server_with_corpus();
    let out = tempfile::tempdir().unwrap();
    let maildir = out.path().join("md");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mpop = |extra: &str| {
        run(Command::new("mpop")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={}", server.pop3.port()))
            .args(["--tls=on", "--tls-starttls=on", "--tls-host-override=localhost"])
            .arg(format!("--tls-trust-file={}", server.cert().display()))
            .args(["--auth=user", "--user=alice", "--passwordeval=echo secret", "--received-header=off", extra])
            .arg(format!("--delivery=maildir,{}", maildir.display()))
            .arg(format!("--uidls-file={}", out.path().join("uidls").display()))
            .env("HOME", out.path()))
    };
    mpop("--keep=on");
    assert_eq!(delivered(&maildir.join("new"), b""), sorted_lf(&corpus));
    // A second run uses UIDL and fetches nothing new.
    let second = mpop("--keep=on");
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 3, "{second}");
}
