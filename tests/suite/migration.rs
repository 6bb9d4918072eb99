//! Moving a provider's users in from a real Dovecot (Debian's `dovecot-pop3d`, a private
//! instance on loopback): the UIDLs, sizes and bodies POP3 clients saw there are what cloudpop
//! shows after `cloudpop import` (from the maildirs into the embedded store, and over POP3
//! into a cloud pool through the API); a fetchmail that keeps mail downloads nothing after the
//! switch; the passwords, in every scheme Dovecot writes, log in and are re-hashed to argon2id.

use crate::common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};
use crate::common::cloud::{Redis, S3, cloud_env, free_port};
use crate::common::{Server, cli_env};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Users of the old server and the scheme of their stored password.
const USERS: [(&str, &str); 7] = [
    ("alice", "SHA512-CRYPT"),
    ("bob", "SHA256-CRYPT"),
    ("carol", "BLF-CRYPT"),
    ("dave", "ARGON2ID"),
    ("erin", "SSHA512"),
    ("frank", "PBKDF2"),
    ("grace", "PLAIN"),
];

fn password(user: &str) -> String {
    format!("{user} pässword")
}

/// A private Dovecot: its own configuration, base directory, maildirs and passwd file, a
/// certificate for STLS and POP3S, killed by PID when dropped.
struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    pop3: u16,
    pop3s: u16,
}

impl Dovecot {
    fn start() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Dovecot's processes run as its own users and must reach their files.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cert = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-days", "2"])
            .arg("-keyout")
            .arg(root.join("key.pem"))
            .arg("-out")
            .arg(root.join("cert.pem"))
            .output()
            .unwrap();
        assert!(cert.status.success(), "openssl: {}", String::from_utf8_lossy(&cert.stderr));
        std::fs::set_permissions(root.join("key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
        // The passwd file, hashed by Dovecot's own tool in every scheme.
        let mut passwd = String::new();
        for (user, scheme) in USERS {
            let out = Command::new("doveadm").args(["pw", "-s", scheme, "-p", &password(user)]).output().unwrap();
            assert!(out.status.success(), "doveadm pw -s {scheme}: {}", String::from_utf8_lossy(&out.stderr));
            passwd.push_str(&format!("{user}:{}::::::\n", String::from_utf8(out.stdout).unwrap().trim()));
        }
        std::fs::write(root.join("passwd"), passwd).unwrap();
        for (n, (user, _)) in USERS.iter().enumerate() {
            let maildir = root.join("mail").join(user);
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub)).unwrap();
            }
            for (i, body) in messages(user).iter().enumerate() {
                let name = format!("{}.M{i}P{n}.old-server", 1_700_000_000 + i * 60);
                std::fs::write(maildir.join("new").join(name), body).unwrap();
            }
        }
        let chown = Command::new("chown").args(["-R", "dovecot:dovecot"]).arg(root.join("mail")).status().unwrap();
        assert!(chown.success());
        let (pop3, pop3s) = (free_port(), free_port());
        let r = root.display();
        let conf = format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\nprotocols = pop3\n\
             listen = 127.0.0.1\nssl = yes\nssl_cert = <{r}/cert.pem\nssl_key = <{r}/key.pem\n\
             disable_plaintext_auth = no\nauth_mechanisms = plain login\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n\
             mail_location = maildir:{r}/mail/%u\ndefault_internal_user = dovecot\ndefault_login_user = dovenull\n\
             pop3_uidl_format = %08Xu%08Xv\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = {pop3s}\n  }}\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={r}/mail/%u\n}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), conf).unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(root.join("stderr.log")).unwrap()))
            .spawn()
            .expect("dovecot (Debian's dovecot-pop3d; scripts/test installs it)");
        crate::common::eventually("Dovecot listens", || std::net::TcpStream::connect(("127.0.0.1", pop3s)).is_ok());
        Self { dir, child, pop3, pop3s }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// The old server's messages of `user`, as written to its maildir (LF line endings).
fn messages(user: &str) -> Vec<Vec<u8>> {
    vec![
        format!("From: news@example.org\nTo: {user}@example.com\nSubject: first for {user}\n\nhello {user}\n")
            .into_bytes(),
        format!("Subject: dots and 8 bits\n\n.a line with a leading dot\n..two\nnaïve café for {user}\n").into_bytes(),
        format!("Subject: third\nMessage-ID: <{user}.3@example.org>\n\n{}\n", "long line ".repeat(50)).into_bytes(),
    ]
}

/// What a POP3 client sees in each mailbox: (UIDL, LIST size, RETR body) in order, read with
/// Python's poplib over `security` (`stls` or `ssl`).
fn listing(port: u16, cert: &Path, security: &str) -> BTreeMap<String, Vec<(String, u64, Vec<u8>)>> {
    let script = r#"
import json, poplib, ssl, sys, base64
port, cert, security, users = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ctx = ssl.create_default_context(cafile=cert)
ctx.check_hostname = False
out = {}
for user, password in users:
    if security == "ssl":
        p = poplib.POP3_SSL("127.0.0.1", port, context=ctx)
    else:
        p = poplib.POP3("127.0.0.1", port)
        p.stls(context=ctx)
    p.user(user)
    p.pass_(password)
    uidls = [l.decode().split() for l in p.uidl()[1]]
    sizes = dict(l.decode().split() for l in p.list()[1])
    out[user] = [(u, int(sizes[n]), base64.b64encode(b"\r\n".join(p.retr(int(n))[1]) + b"\r\n").decode()) for n, u in uidls]
    p.quit()
print(json.dumps(out))
"#;
    let users: Vec<(String, String)> = USERS.iter().map(|(u, _)| (u.to_string(), password(u))).collect();
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), cert.to_str().unwrap(), security])
        .arg(serde_json::to_string(&users).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "poplib on port {port}: {}", String::from_utf8_lossy(&out.stderr));
    let raw: BTreeMap<String, Vec<(String, u64, String)>> = serde_json::from_slice(&out.stdout).unwrap();
    use base64::Engine;
    raw.into_iter()
        .map(|(user, list)| {
            let list = list
                .into_iter()
                .map(|(u, size, body)| (u, size, base64::engine::general_purpose::STANDARD.decode(body).unwrap()))
                .collect();
            (user, list)
        })
        .collect()
}

/// fetchmail keeping alice's mail on `port`, with `idfile` remembering what it has seen;
/// returns how many messages it delivered into `inbox`.
fn fetchmail(port: u16, cert: &Path, idfile: &Path, inbox: &Path) -> usize {
    let rc = idfile.with_extension("rc");
    let config = format!(
        "poll 127.0.0.1 service {port} protocol pop3 uidl auth password\n  user \"alice\" password \"{}\" is \"x\" here\n  \
         sslproto 'TLS1.2+' sslcertck sslcertfile \"{}\" sslcommonname \"localhost\"\n  keep\n  \
         mda \"/bin/sh -c 'cat > {}/msg.$$'\"\n",
        password("alice"),
        cert.display(),
        inbox.display()
    );
    std::fs::write(&rc, config).unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = std::fs::read_dir(inbox).unwrap().count();
    let out = Command::new("fetchmail")
        .args(["--nosyslog", "--invisible", "--norewrite", "--idfile"])
        .arg(idfile)
        .arg("-f")
        .arg(&rc)
        .env("HOME", inbox.parent().unwrap())
        .output()
        .unwrap();
    // 0: mail delivered; 1: no new mail.
    assert!(matches!(out.status.code(), Some(0 | 1)), "fetchmail: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_dir(inbox).unwrap().count() - before
}

/// The number of messages an import report says it stored.
fn messages_stored(report: &str) -> usize {
    let before = &report[..report.find(" messages, ").expect("a report line")];
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

fn import(server: &Server, env: &[(String, String)], args: &[&str]) -> String {
    let (ok, out, err) = cli_env(&server.data_dir(), env, args, b"");
    assert!(ok, "cloudpop {args:?} failed: {out}{err}");
    out
}

#[test]
fn mailboxes_and_passwords_move_from_dovecot_without_redownloads() {
    let dovecot = Dovecot::start();
    let cert = dovecot.path("cert.pem");
    let before = listing(dovecot.pop3, &cert, "stls");
    assert_eq!(before["alice"].len(), 3);
    assert!(before["alice"][0].0.ends_with(&before["alice"][1].0[8..]), "Dovecot's %08Xu%08Xv UIDLs");
    let work = tempfile::tempdir().unwrap();
    let (idfile, inbox) = (work.path().join("fetchids"), work.path().join("inbox"));
    std::fs::create_dir(&inbox).unwrap();
    assert_eq!(fetchmail(dovecot.pop3, &cert, &idfile, &inbox), 3, "fetchmail's first poll of the old server");

    // The embedded store, straight from the maildirs (Dovecot keeps running: a live copy).
    let server = Server::start(&[]);
    let passwd = dovecot.path("passwd");
    let out = import(&server, &[], &["import", "accounts", passwd.to_str().unwrap(), "--allow-plain"]);
    assert!(out.starts_with("imported: 7 accounts created (0 already there)"), "{out}");
    let maildirs: Vec<String> =
        USERS.iter().map(|(u, _)| format!("{u}={}", dovecot.path(&format!("mail/{u}")).display())).collect();
    let args =
        |cmd: &'static str| [&["import", cmd][..], &maildirs.iter().map(String::as_str).collect::<Vec<_>>()].concat();
    let out = import(&server, &[], &args("maildir"));
    assert!(out.contains(" 21 messages, ") && out.contains("0 skipped; 0 failed"), "{out}");
    let again = import(&server, &[], &args("maildir"));
    assert!(again.contains(" 0 messages, 0 octets; 21 messages already imported earlier"), "{again}");
    assert_eq!(listing(server.pop3s.port(), &server.cert(), "ssl"), before, "cloudpop differs from Dovecot");
    // The switch: alice's fetchmail, keeping mail, now polls cloudpop and finds nothing new.
    assert_eq!(fetchmail(server.pop3.port(), &server.cert(), &idfile, &inbox), 0, "fetchmail downloaded again");

    // Every scheme logged in above (listing() used each password once), and was re-hashed.
    let rehashed = server.metrics().get("cloudpop_password_rehashes_total{}");
    assert_eq!(rehashed, 6.0, "six imported hashes replaced (the PLAIN one was hashed at import)");
    for (user, _) in USERS {
        let record = std::fs::read_to_string(server.data_dir().join(format!("accounts/{user}.json"))).unwrap();
        assert!(record.contains("$argon2id$v=19$m=7168,t=5,p=1$"), "{user}: {record}");
        assert!(!record.contains(&password(user)), "{user}'s password stored in clear");
    }
    assert_eq!(listing(server.pop3s.port(), &server.cert(), "ssl"), before, "logins after the re-hash");
    assert_eq!(server.metrics().get("cloudpop_password_rehashes_total{}"), 6.0);

    // A cloud pool, through its API, pulling every mailbox over POP3 (implicit TLS) from Dovecot.
    let (s3, redis) = (S3::start(), Redis::start());
    let bucket = s3.bucket("migration");
    let mut env = cloud_env(&s3, &bucket, &redis);
    env.extend(token_env().iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cloud = Server::start_with(tempfile::tempdir().unwrap(), env.clone());
    let api = format!("http://{}", cloud.api.unwrap());
    let as_admin = [("CLOUDPOP_API_TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
    let as_ingest = [("CLOUDPOP_API_TOKEN".to_owned(), INGEST_TOKEN.to_owned())];
    let out =
        import(&cloud, &as_admin, &["import", "accounts", passwd.to_str().unwrap(), "--allow-plain", "--api", &api]);
    assert!(out.starts_with("imported: 7 accounts created"), "{out}");
    let users = work.path().join("users");
    let lines: Vec<String> = USERS.iter().map(|(u, _)| format!("{u}\t{}", password(u))).collect();
    std::fs::write(&users, lines.join("\n")).unwrap();
    let pull = [
        "import",
        "pop3",
        "--server",
        &format!("127.0.0.1:{}", dovecot.pop3s),
        "--security",
        "implicit",
        "--ca",
        cert.to_str().unwrap(),
        "--users",
        users.to_str().unwrap(),
        "--api",
        &api,
    ];
    let out = import(&cloud, &as_ingest, &pull);
    assert!(out.contains(" 21 messages, ") && out.contains("0 failed"), "{out}");
    let again = import(&cloud, &as_ingest, &pull);
    assert!(again.contains(" 0 messages, 0 octets; 21 messages already imported earlier"), "{again}");
    assert_eq!(listing(cloud.pop3s.port(), &cloud.cert(), "ssl"), before, "the cloud pool differs from Dovecot");
}

/// An mbox written by Python's `mailbox` module, imported with a `kill -9` half-way: running
/// the same import again finishes it, and every message is in the mailbox exactly once, in
/// the file's order, with the same UIDLs a clean import assigns.
#[test]
fn an_interrupted_mbox_import_resumes_without_duplicates() {
    const COUNT: usize = 1000;
    let work = tempfile::tempdir().unwrap();
    let mbox = work.path().join("alice.mbox");
    let script = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1])
for i in range(int(sys.argv[2])):
    box.add(f"From: s@example.org\nSubject: message {i}\nX-Order: {i}\n\nFrom the start of line {i}\n.dot {i}\n".encode())
box.flush()
"#;
    let out =
        Command::new("python3").args(["-c", script, mbox.to_str().unwrap(), &COUNT.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(&[]);
    server.add_account("alice", "pw");
    let arg = format!("alice={}", mbox.display());
    let mut child = Command::new(crate::common::BIN)
        .args(["import", "mbox", &arg, "--data-dir"])
        .arg(server.data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stored = || std::fs::read_dir(server.data_dir().join("maildrops/alice/cur")).map_or(0, |d| d.count());
    crate::common::eventually("the import stores its first messages", || stored() >= 50);
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = stored();
    assert!(partial < COUNT, "the import finished before it could be interrupted");
    let out = import(&server, &[], &["import", "mbox", &arg]);
    let resumed = messages_stored(&out);
    assert!(resumed <= COUNT - partial + 1, "{out}");
    assert!(out.contains(" 0 failed"), "{out}");

    let mut pop = crate::common::Client::login(server.pop3, "alice", "pw");
    let uidls = pop.lines("UIDL");
    assert_eq!(uidls.len(), COUNT, "messages lost or duplicated");
    // A clean import elsewhere assigns the same UIDLs, in the same order.
    let clean = Server::start(&[]);
    clean.add_account("alice", "pw");
    import(&clean, &[], &["import", "mbox", &arg]);
    let mut pop_clean = crate::common::Client::login(clean.pop3, "alice", "pw");
    assert_eq!(pop_clean.lines("UIDL"), uidls);
    let (_, first) = pop.multi("RETR 1");
    assert_eq!(
        first,
        b"From: s@example.org\r\nSubject: message 0\r\nX-Order: 0\r\n\r\nFrom the start of line 0\r\n.dot 0\r\n"
    );
    let (_, last) = pop.multi(&format!("TOP {COUNT} 0"));
    assert!(String::from_utf8_lossy(&last).contains(&format!("X-Order: {}", COUNT - 1)), "the order was lost");
}

/// An old POP3 server that misbehaves in its UIDL listing: `lines` gives the listing's lines
/// for one login (it may be very long); every RETR gets a small message. The hostile peer of
/// the tests below, on loopback.
fn broken_pop3_source(lines: fn() -> Box<dyn Iterator<Item = String> + Send>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut out = std::io::BufWriter::new(conn.try_clone().unwrap());
                let mut input = BufReader::new(conn);
                let _ = out.write_all(b"+OK broken server ready\r\n").and_then(|()| out.flush());
                let mut line = String::new();
                while input.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let command = line.trim_end().to_ascii_uppercase();
                    let reply = if command == "UIDL" {
                        let mut listing = String::from("+OK\r\n");
                        for entry in lines() {
                            listing.push_str(&entry);
                            listing.push_str("\r\n");
                            if listing.len() > 64 * 1024 {
                                if out.write_all(listing.as_bytes()).is_err() {
                                    return;
                                }
                                listing.clear();
                            }
                        }
                        listing + ".\r\n"
                    } else if let Some(n) = command.strip_prefix("RETR ") {
                        format!("+OK\r\nSubject: message {n}\r\n\r\nbody {n}\r\n.\r\n")
                    } else {
                        "+OK\r\n".to_owned()
                    };
                    if out.write_all(reply.as_bytes()).and_then(|()| out.flush()).is_err() || command == "QUIT" {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

/// Runs `cloudpop import pop3` from `port` for the user `old` into the mailbox `new`.
fn import_from(server: &Server, port: u16) -> (bool, String) {
    let users = server.dir.path().join("users");
    std::fs::write(&users, "old:pw:new\n").unwrap();
    let args = ["import", "pop3", "--server", &format!("127.0.0.1:{port}"), "--security", "none"];
    let args = [&args[..], &["--users", users.to_str().unwrap()]].concat();
    let (ok, out, err) = cli_env(&server.data_dir(), &server.env, &args, b"");
    (ok, out + &err)
}

/// Issue 22 item 17: a source that gives one UIDL to two messages has the later one reported
/// (and the import exits non-zero), not silently dropped as "already imported"; a listing that
/// never ends is refused at a bound, not collected without limit; and an import into mailboxes
/// that do not exist yet fails, instead of storing nothing and exiting 0.
#[test]
fn a_broken_source_and_missing_accounts_are_reported_not_hidden() {
    let server = Server::start(&[]);
    let port = broken_pop3_source(|| Box::new(["1 same", "2 same", "3 other"].into_iter().map(str::to_owned)));
    let (ok, out) = import_from(&server, port);
    assert!(!ok && out.contains("no account new"), "an import into a missing account: {out}");
    server.add_account("new", "pw");
    let (ok, out) = import_from(&server, port);
    assert!(!ok, "a repeated UIDL went unreported: {out}");
    assert!(out.contains("gives UIDL \"same\" to more than one message"), "{out}");
    assert_eq!(messages_stored(&out), 2, "{out}");

    let endless = broken_pop3_source(|| Box::new((1..=1_200_000u64).map(|n| format!("{n} uidl-{n}"))));
    let (ok, out) = import_from(&server, endless);
    assert!(!ok && out.contains("the UIDL listing goes past 1000000 messages"), "{out}");
}

/// Peak resident memory of the children this test process waited for, in KiB.
fn children_peak_kib() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss as u64
}

/// Issue 22 item 17: an mbox message (and a line) is streamed into the spool, never held
/// whole: importing a 100 MB message, most of it one line, keeps the command under 64 MB.
#[test]
fn an_mbox_with_a_huge_message_is_imported_in_bounded_memory() {
    let server = Server::start(&[]);
    server.add_account("big", "pw");
    let file = server.dir.path().join("big.mbox");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        out.write_all(b"From someone Wed Dec  2 18:00:00 2026\nSubject: huge\n\n").unwrap();
        let chunk = vec![b'z'; 1024 * 1024];
        for _ in 0..60 {
            out.write_all(&chunk).unwrap();
        }
        out.write_all(b"\n").unwrap();
        for _ in 0..40 {
            out.write_all(&[&chunk[..1000], b"\n"].concat().repeat(1000)).unwrap();
        }
    }
    let args = ["import", "mbox", &format!("big={}", file.display())];
    let (ok, out, err) = cli_env(&server.data_dir(), &server.env, &args, b"");
    assert!(ok, "{out}{err}");
    assert_eq!(messages_stored(&out), 1, "{out}");
    let peak = children_peak_kib();
    assert!(peak < 64 * 1024, "importing a 100 MB message took {} MiB", peak / 1024);
}
