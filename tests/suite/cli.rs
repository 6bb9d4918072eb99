//! The command line: account management, delivery, configuration errors.

use crate::common;
use common::{BIN, Client, Server, cli, cli_result, serve_until_exit};
use std::process::Command;

#[test]
fn account_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert_eq!(
        cli(data, &["account", "add", "Bob@Example.com", "--password-stdin"], b"pw one\n").trim(),
        "created account bob@example.com"
    );
    let (ok, _, err) = cli_result(data, &["account", "add", "bob@example.com", "--password-stdin"], b"x\n");
    assert!(!ok && err.contains("already exists"), "{err}");
    cli(data, &["account", "add", "carol", "--password-stdin"], b"pw\r\n");
    assert_eq!(cli(data, &["account", "list"], b""), "bob@example.com\ncarol\n");
    let record = std::fs::read_to_string(data.join("accounts/carol.json")).unwrap();
    assert!(record.contains("$argon2id$") && !record.contains("\"pw\""), "{record}");
    cli(data, &["account", "passwd", "carol", "--password-stdin"], b"new pw\n");
    let (ok, _, err) = cli_result(data, &["account", "passwd", "nobody", "--password-stdin"], b"x\n");
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) = cli_result(data, &["account", "add", "dave", "--password-stdin"], b"");
    assert!(!ok && err.contains("no password"), "{err}");
    cli(data, &["deliver", "carol"], b"Subject: x\n\nbody\n");
    cli(data, &["account", "del", "carol"], b"");
    assert_eq!(cli(data, &["account", "list"], b""), "bob@example.com\n");
    assert!(!data.join("maildrops/carol").exists(), "maildrop left behind");
    let (ok, _, _) = cli_result(data, &["account", "del", "carol"], b"");
    assert!(!ok);
}

#[test]
fn password_change_takes_effect_for_the_running_server() {
    let server = Server::start(&[]);
    server.add_account("alice", "old");
    cli(&server.data_dir(), &["account", "passwd", "alice", "--password-stdin"], b"new\n");
    let mut c = Client::connect(server.pop3);
    c.cmd("USER alice");
    assert!(c.cmd("PASS old").starts_with("-ERR [AUTH]"));
    c.cmd("USER alice");
    assert!(c.cmd("PASS new").starts_with("+OK"));
}

#[test]
fn deliver_files_stdin_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    cli(&data, &["account", "add", "alice", "--password-stdin"], b"pw\n");
    let f1 = dir.path().join("one.eml");
    let f2 = dir.path().join("two.eml");
    std::fs::write(&f1, b"Subject: one\n\nbody\n").unwrap();
    std::fs::write(&f2, b"Subject: two\r\n\r\nbody\r\n").unwrap();
    let out = cli(&data, &["deliver", "alice", f1.to_str().unwrap(), f2.to_str().unwrap()], b"");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (ok, _, err) = cli_result(&data, &["deliver", "nobody"], b"Subject: x\n\nx\n");
    assert!(!ok && err.contains("unknown mailbox"), "{err}");
    let (ok, _, err) = cli_result(&data, &["deliver", "alice"], b"");
    assert!(!ok && err.contains("empty"), "{err}");
    let (ok, _, err) = cli_result(&data, &["deliver", "alice", "/nonexistent/file"], b"");
    assert!(!ok && err.contains("/nonexistent/file"), "{err}");
    // Oversize: refused, and nothing half-written is left visible or behind.
    let big = vec![b'x'; 4096];
    let out = Command::new(BIN)
        .args(["deliver", "alice", "--data-dir"])
        .arg(&data)
        .env("CLOUDPOP_MAX_MESSAGE_SIZE", "2048")
        .stdin(
            std::fs::File::open({
                let p = dir.path().join("big");
                std::fs::write(&p, &big).unwrap();
                p
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("maximum size"));
    assert_eq!(std::fs::read_dir(data.join("maildrops/alice/cur")).unwrap().count(), 2);
    assert_eq!(std::fs::read_dir(data.join("maildrops/alice/tmp")).unwrap().count(), 0, "temporary file left behind");
}

#[test]
fn bad_configuration_is_refused_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("CLOUDPOP_IDLE_TIMEOUT_SECS", "30")], "idle_timeout_secs"),
        (&[("CLOUDPOP_POP3_LISTEN", "not-an-address")], "pop3_listen"),
        (&[("CLOUDPOP_MAX_CONNECTIONS", "many")], "CLOUDPOP_MAX_CONNECTIONS"),
        (&[("CLOUDPOP_TLS_CERT", "/nonexistent.pem")], "tls_cert"),
    ];
    for (env, expect) in cases {
        let out =
            Command::new(BIN).args(["serve", "--data-dir"]).arg(dir.path()).envs(env.iter().copied()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expect), "{env:?}: {err}");
    }
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "max_connections = \"many\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml") && err.contains("max_connections"), "{err}");
    // A key the file names but no setting has is a mistake its author made: it stops startup.
    std::fs::write(&conf, "max_conections = 7\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_conections"), "{err}");
}

#[test]
fn config_file_sets_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("cloudpop.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\npop3_listen = \"127.0.0.1:0\"\npop3s_listen = \"\"\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&conf)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("cloudpop: pop3 listening on 127.0.0.1:"), "{line}");
    assert!(dir.path().join("data/tls/selfsigned-cert.pem").exists());
}

#[test]
fn the_command_line_as_a_client_of_the_api() {
    use common::api::{ADMIN_TOKEN, INGEST_TOKEN, token_env};
    let server = Server::start(&token_env());
    let url = format!("http://{}", server.api.unwrap());
    let with = |token: &str| {
        vec![("CLOUDPOP_API_URL".to_string(), url.clone()), ("CLOUDPOP_API_TOKEN".to_string(), token.to_string())]
    };
    // A data directory the commands must NOT touch: everything goes through the API.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |token: &str, args: &[&str], stdin: &[u8]| common::cli_env(elsewhere.path(), &with(token), args, stdin);

    let (ok, out, err) = run(ADMIN_TOKEN, &["account", "add", "Bob", "--password-stdin"], b"pw\n");
    assert!(ok && out.contains("created account bob"), "{err}");
    let (ok, out, err) =
        run(INGEST_TOKEN, &["deliver", "bob", "--idempotency-key", "cli-1"], b"Subject: cli\n\nhello\n");
    assert!(ok, "{err}");
    let (ok, again, _) =
        run(INGEST_TOKEN, &["deliver", "bob", "--idempotency-key", "cli-1"], b"Subject: cli\n\nhello\n");
    assert!(ok && again.split_whitespace().nth(1) == out.split_whitespace().nth(1), "{out} / {again}");
    let (ok, out, _) = run(ADMIN_TOKEN, &["admin", "stats", "bob"], b"");
    assert!(ok && out.trim() == "messages=1 bytes=23", "{out}");
    let (ok, out, _) = run(ADMIN_TOKEN, &["account", "list"], b"");
    assert!(ok && out == "bob\n", "{out}");
    let (ok, out, _) = run(ADMIN_TOKEN, &["admin", "info"], b"");
    assert!(ok && out.contains("store=fs locks=memory"), "{out}");
    // Issue 23 item 13: each command changes what it was given and nothing else.
    // (command, then max_bytes max_messages login_delay expire_days as shown afterwards)
    let changes = [
        ("quota bob --max-bytes 5000", "5000 0 0 never"),
        ("quota bob --max-messages 7", "5000 7 0 never"),
        ("policy bob --expire-days 30", "5000 7 0 30"),
        ("policy bob --login-delay 60", "5000 7 60 30"),
        ("policy bob --expire-days 7", "5000 7 60 7"),
        ("policy bob --expire-days never", "5000 7 60 never"),
        ("quota bob --max-bytes 0 --max-messages 0", "0 0 60 never"),
    ];
    for (command, after) in changes {
        let args: Vec<&str> = ["admin"].into_iter().chain(command.split(' ')).collect();
        let fields = ["max_bytes", "max_messages", "login_delay", "expire_days"];
        let want: Vec<String> = fields.iter().zip(after.split(' ')).map(|(f, v)| format!("{f}={v}")).collect();
        let (ok, out, err) = run(ADMIN_TOKEN, &args, b"");
        assert!(ok && out.trim_end().ends_with(&want.join(" ")), "{command}: {out}{err}");
    }
    let (ok, _, err) = run(ADMIN_TOKEN, &["admin", "quota", "bob"], b"");
    assert!(!ok && err.contains("required"), "a quota command that changes nothing: {err}");
    let (ok, _, err) = run(INGEST_TOKEN, &["admin", "info"], b"");
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, _, err) = run("wrong", &["account", "list"], b"");
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    assert!(!elsewhere.path().join("accounts").exists(), "the command used the local store");
    let mut c = Client::login(server.pop3, "bob", "pw");
    assert_eq!(c.multi("RETR 1").1, b"Subject: cli\r\n\r\nhello\r\n");
}

#[test]
fn deliver_stores_any_text_as_given() {
    // The operator's tool does not judge content (the API does): an mbox-style "From " line or
    // a body without headers is stored, CRLF-normalised, byte for byte.
    let server = Server::start(&[]);
    server.add_account("alice", "secret");
    server.deliver("alice", b"From sender@example.com Sat Jan  3 01:05:34 1996\nSubject: mbox\n\nx\n");
    server.deliver("alice", b"no headers at all\n");
    let mut c = Client::login(server.pop3, "alice", "secret");
    assert_eq!(c.multi("RETR 1").1, b"From sender@example.com Sat Jan  3 01:05:34 1996\r\nSubject: mbox\r\n\r\nx\r\n");
    assert_eq!(c.multi("RETR 2").1, b"no headers at all\r\n");
}

#[test]
fn a_bad_api_client_ca_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca, "this is not a certificate\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .envs([
            ("CLOUDPOP_API_TLS", "true"),
            ("CLOUDPOP_API_CLIENT_CA", ca.to_str().unwrap()),
            ("CLOUDPOP_API_ADMIN_TOKENS", "t"),
            ("CLOUDPOP_API_LISTEN", "127.0.0.1:0"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("api_client_ca"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "readiness printed before failing");
}

#[test]
fn kubernetes_service_variables_do_not_stop_the_server_and_typos_are_named() {
    // What Kubernetes sets in every pod of a namespace with a Service named `cloudpop`.
    let server = Server::start(&[
        ("CLOUDPOP_PORT", "tcp://10.96.0.12:110"),
        ("CLOUDPOP_PORT_110_TCP", "tcp://10.96.0.12:110"),
        ("CLOUDPOP_PORT_110_TCP_ADDR", "10.96.0.12"),
        ("CLOUDPOP_SERVICE_HOST", "10.96.0.12"),
        ("CLOUDPOP_SERVICE_PORT", "110"),
        ("CLOUDPOP_MAX_CONECTIONS", "7"),
    ]);
    let c = Client::connect(server.pop3);
    assert!(c.greeting.starts_with("+OK"));
    let log = server.log();
    assert!(log.contains("did you mean CLOUDPOP_MAX_CONNECTIONS?"), "{log}");
    assert!(!log.contains("CLOUDPOP_SERVICE_HOST"), "Kubernetes' own variables are not worth a warning: {log}");
}

#[test]
fn a_configuration_error_is_one_clear_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("CLOUDPOP_MAX_CONNECTIONS", "lots")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cloudpop: environment variable CLOUDPOP_MAX_CONNECTIONS"), "{err}");
}

#[test]
fn check_reports_what_a_client_sees_and_fails_with_one_line() {
    use common::api::token_env;
    let server = Server::start(&token_env());
    let api = format!("http://{}", server.api.unwrap());
    let pop3 = server.pop3.to_string();
    let check = |args: &[&str]| {
        let out = Command::new(BIN).arg("check").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = check(&["--pop3", &pop3, "--api", &api]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("ok: POP3 at {pop3} greets and lists")) && out.contains("STLS"), "{out}");
    assert!(out.contains(&format!("ok: the API at {api} is SERVING")), "{out}");

    // Nothing listening: a failure, said in one line.
    let closed = format!("127.0.0.1:{}", common::cloud::free_port());
    let (ok, _, err) = check(&["--pop3", &closed, "--timeout-secs", "2"]);
    assert!(
        !ok && err.starts_with(&format!("cloudpop: POP3 at {closed}: cannot connect")) && err.lines().count() == 1,
        "{err}"
    );
    // Something that is not POP3: the ops listener speaks HTTP and never greets.
    let ops = server.ops.unwrap().to_string();
    let (ok, _, err) = check(&["--pop3", &ops, "--timeout-secs", "1"]);
    assert!(!ok && err.contains("no complete answer within 1 s"), "{err}");
    // Neither target: a usage error.
    let (ok, _, err) = check(&[]);
    assert!(!ok && err.contains("--pop3") && err.contains("--api"), "{err}");
}

/// Issue 23 items 14 and 15: a refused setting or a port in use stops the server before it
/// announces anything, and the message names the setting.
#[test]
fn nothing_is_announced_until_every_setting_is_accepted_and_every_port_is_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &["--pop3", "127.0.0.1:0", "--pop3s", &busy, "--ops", "127.0.0.1:0"],
            &[],
            "(pop3s_listen): Address already in use",
        ),
        (
            &["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--ops", &busy],
            &[],
            "(ops_listen): Address already in use",
        ),
        (
            &["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--api-listen", "0.0.0.0:0"],
            &[("CLOUDPOP_API_ADMIN_TOKENS", "t")],
            "api_listen = \"0.0.0.0:0\" is reachable from the network without TLS",
        ),
    ];
    for (args, env, why) in cases {
        let (code, out, err) = serve_until_exit(args, env);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?} announced listeners before failing");
        assert!(err.contains(why), "{args:?}: {err}");
        let said: Vec<&str> = err.lines().filter(|l| l.starts_with("cloudpop: ")).collect();
        assert_eq!(said.len(), 1, "{args:?}: one line, no backtrace: {err}");
        assert_eq!(said[0].matches("Address already in use").count().max(1), 1, "said twice: {err}");
    }
    let (_, _, err) = serve_until_exit(&["--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--ops", &busy], &[]);
    assert!(err.contains("another cloudpop on this host?") && err.contains("its own ops_listen"), "{err}");
}

/// Issue 23 item 18: a wrong key or value in the file is one line naming it (the closest key
/// for a misspelling, not all of them).
#[test]
fn a_bad_config_file_is_one_line_that_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("max_conections = 5\n", "unknown key `max_conections`; did you mean `max_connections`?"),
        ("frobnicate = 5\n", "unknown key `frobnicate`; docs/configuration.md lists every key"),
        ("max_connections = \"lots\"\n", "invalid type: string \"lots\", expected usize in `max_connections`"),
        ("pop3_listen = \"x\"\nmax_connections = lots\n", "line 2: string values must be quoted"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let (code, out, err) = serve_until_exit(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{text}: {err}");
        let want = format!("cloudpop: config file {}: {want}", file.display());
        assert!(err.starts_with(&want) && err.ends_with('\n') && err.lines().count() == 1, "{text}: {err:?}");
    }
}
