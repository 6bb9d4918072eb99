//! SCRAM-SHA-256 with Python's poplib and the scramp library, SCRAM-SHA-256-PLUS bound to the
//! TLS 1.3 exporter, and OAUTHBEARER/XOAUTH2 with curl and with JWTs signed by PyJWT against a
//! JWKS served over HTTPS: expired, wrong audience, wrong key, `alg: none`, and key rotation.

use crate::common::identity::{IdentityServices, Pki, auth_env};
use crate::common::{Client, Server, eventually};
use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::process::Command;

const SCRAM_LOGIN: &str = r#"
import base64, poplib, ssl, sys, scramp
port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = poplib.POP3_SSL("localhost", port, context=ssl.create_default_context(cafile=ca))
if "SCRAM-SHA-256" not in c.capa()["SASL"]:
    raise SystemExit(f"SCRAM-SHA-256 not offered: {c.capa()}")
scram = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
b64 = lambda text: base64.b64encode(text.encode()).decode()
try:
    reply = c._shortcmd("AUTH SCRAM-SHA-256 " + b64(scram.get_client_first()))
    scram.set_server_first(base64.b64decode(reply[2:]).decode())
    reply = c._shortcmd(b64(scram.get_client_final()))
    scram.set_server_final(base64.b64decode(reply[2:]).decode())  # checks the server's signature
    print(c._shortcmd("").decode(), c.stat()[0])
    c.quit()
except poplib.error_proto as e:
    print(e.args[0].decode())
"#;

fn poplib_scram(server: &Server, user: &str, password: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", SCRAM_LOGIN])
        .arg(server.pop3s.port().to_string())
        .arg(server.cert())
        .args([user, password])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn scram_sha256_with_poplib_and_scramp() {
    let server = Server::start(&[("CLOUDPOP_SCRAM", "true"), ("CLOUDPOP_SCRAM_ITERATIONS", "4096")]);
    server.add_account("alice", "correct horse");
    let message = b"Subject: s\r\n\r\nscram\r\n";
    server.deliver("alice", message);
    let record = std::fs::read_to_string(server.data_dir().join("accounts/alice.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert!(parsed["scram_sha256"].as_str().unwrap().starts_with("SCRAM-SHA-256$4096:"), "{record}");
    assert!(!record.contains("correct horse"));

    let expected = format!("+OK Logged in, maildrop has 1 messages ({} octets) 1", message.len());
    assert_eq!(poplib_scram(&server, "alice", "correct horse"), expected);
    assert_eq!(poplib_scram(&server, "alice", "wrong horse"), "-ERR [AUTH] Authentication failed");
    // An unknown user gets a challenge like anyone else's, then fails the same way.
    assert_eq!(poplib_scram(&server, "nobody", "x"), "-ERR [AUTH] Authentication failed");

    // An account made before SCRAM was turned on gets credentials at its next password login.
    let old = Server::start(&[]);
    old.add_account("bob", "pw-bob");
    drop(Client::login(old.pop3, "bob", "pw-bob"));
    old.signal("-TERM");
    let (_, dir) = old.wait();
    let server = Server::start_in(dir, &[("CLOUDPOP_SCRAM", "true"), ("CLOUDPOP_SCRAM_ITERATIONS", "4096")]);
    assert_eq!(poplib_scram(&server, "bob", "pw-bob"), "-ERR [AUTH] Authentication failed");
    Client::login(server.pop3, "bob", "pw-bob").cmd("QUIT");
    assert!(poplib_scram(&server, "bob", "pw-bob").starts_with("+OK Logged in"));
}

/// SCRAM-SHA-256-PLUS by hand (Python's ssl module cannot export keying material): the
/// client side of RFC 5802 with `p=tls-exporter` and the connection's exporter.
fn scram_plus(client: &mut Client, binding: &[u8], user: &str, password: &str) -> String {
    let gs2 = "p=tls-exporter,,";
    let first_bare = format!("n={user},r=clientnonce123");
    let reply = client.cmd(&format!("AUTH SCRAM-SHA-256-PLUS {}", STANDARD.encode(format!("{gs2}{first_bare}"))));
    let server_first = String::from_utf8(STANDARD.decode(reply.strip_prefix("+ ").unwrap()).unwrap()).unwrap();
    let fields: Vec<&str> = server_first.split(',').collect();
    let salt = STANDARD.decode(&fields[1][2..]).unwrap();
    let rounds = std::num::NonZeroU32::new(fields[2][2..].parse().unwrap()).unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let without_proof = format!("c={},{}", STANDARD.encode([gs2.as_bytes(), binding].concat()), fields[0]);
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()), auth_message.as_bytes());
    let proof: Vec<u8> = client_key.as_ref().iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect();
    let reply = client.cmd(&STANDARD.encode(format!("{without_proof},p={}", STANDARD.encode(proof))));
    match reply.strip_prefix("+ ") {
        Some(_) => client.cmd(""),
        None => reply,
    }
}

#[test]
fn scram_plus_binds_to_the_tls_connection_and_capa_lists_what_works() {
    let server = Server::start(&[("CLOUDPOP_SCRAM", "true"), ("CLOUDPOP_SCRAM_ITERATIONS", "4096")]);
    server.add_account("alice", "pw");
    let (mut c, binding) = Client::connect_tls_with_exporter(server.pop3s, &server.cert());
    let binding = binding.expect("TLS 1.3 exporter");
    let caps = c.lines("CAPA");
    assert!(caps.contains(&"SASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS".to_owned()), "{caps:?}");
    assert!(scram_plus(&mut c, &binding, "alice", "pw").starts_with("+OK Logged in"));
    // A relayed exchange carries another connection's binding: refused.
    let (mut c, _) = Client::connect_tls_with_exporter(server.pop3s, &server.cert());
    assert_eq!(
        scram_plus(&mut c, &[0u8; 32], "alice", "pw"),
        "-ERR Channel binding mismatch: use SCRAM-SHA-256-PLUS with tls-exporter over TLS 1.3"
    );

    // Where plaintext authentication is refused on an unencrypted connection, SCRAM is not
    // offered either (an eavesdropper could guess offline against the exchange)...
    let strict = Server::start(&[("CLOUDPOP_SCRAM", "true"), ("CLOUDPOP_PLAINTEXT_AUTH_LOOPBACK", "false")]);
    let mut c = Client::connect(strict.pop3);
    let caps = c.lines("CAPA");
    assert!(!caps.iter().any(|c| c.contains("SCRAM")) && caps.contains(&"STLS".to_owned()), "{caps:?}");
    drop(strict);
    // ... unless the operator says so; then only SCRAM is offered and accepted.
    let strict = Server::start(&[
        ("CLOUDPOP_SCRAM", "true"),
        ("CLOUDPOP_PLAINTEXT_AUTH_LOOPBACK", "false"),
        ("CLOUDPOP_SCRAM_CLEARTEXT", "true"),
    ]);
    let mut c = Client::connect(strict.pop3);
    let caps = c.lines("CAPA");
    assert!(caps.contains(&"SASL SCRAM-SHA-256".to_owned()) && !caps.contains(&"USER".to_owned()), "{caps:?}");
    assert_eq!(c.lines("AUTH"), ["SCRAM-SHA-256"]);
    assert!(c.cmd("AUTH PLAIN AGFsaWNlAHB3").starts_with("-ERR [AUTH] Plaintext"));
    assert_eq!(c.cmd("AUTH SCRAM-SHA-256"), "+ ");
}

fn oauth_env(pki: &Pki, services: &IdentityServices) -> Vec<(String, String)> {
    auth_env(vec![
        ("CLOUDPOP_OAUTH_JWKS_URL", services.url("/jwks.json")),
        ("CLOUDPOP_OAUTH_ISSUER", "https://idp.example.com".into()),
        ("CLOUDPOP_OAUTH_AUDIENCE", "cloudpop".into()),
        ("CLOUDPOP_OAUTH_USER_CLAIM", "email".into()),
        ("CLOUDPOP_OAUTH_CA_FILE", pki.path("ca.pem").display().to_string()),
        ("CLOUDPOP_OAUTH_SCOPE", "https://mail.example.com/pop".into()),
    ])
}

fn claims(email: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": "https://idp.example.com", "aud": "cloudpop", "email": email, "email_verified": true,
        "exp": "+300", "nbf": "-5"
    })
}

/// curl lists the mailbox with a bearer token (OAUTHBEARER unless `options` asks otherwise).
fn curl(server: &Server, token: &str, options: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(server.cert())
        .args(["-u", "alice@example.com:", "--oauth2-bearer", token])
        .args(options)
        .arg(format!("pop3s://localhost:{}/", server.pop3s.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A raw OAUTHBEARER login: the reply, and for a refusal the decoded error challenge.
fn oauthbearer(server: &Server, token: &str) -> (String, Option<String>) {
    let mut c = Client::connect_tls(server.pop3s, &server.cert());
    let response = STANDARD.encode(format!("n,a=alice@example.com,\x01auth=Bearer {token}\x01\x01"));
    let reply = c.cmd(&format!("AUTH OAUTHBEARER {response}"));
    match reply.strip_prefix("+ ") {
        Some(challenge) => {
            let error = String::from_utf8(STANDARD.decode(challenge).unwrap()).unwrap();
            (c.cmd("AQ=="), Some(error))
        }
        None => {
            c.cmd("QUIT");
            (reply, None)
        }
    }
}

#[test]
fn bearer_tokens_with_curl_jwks_checks_and_rotation() {
    let pki = Pki::new();
    let services = IdentityServices::start(&pki);
    services.new_key("rsa-1", "RS256");
    services.new_key("ec-1", "ES256");
    // The rotation check below polls a login every 10 ms: that many failures from alice's own
    // address would use up the budget of her known addresses.
    let mut env = oauth_env(&pki, &services);
    env.push(("CLOUDPOP_THROTTLE_KNOWN_ADDRESS_FAILURES".into(), "100000".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("alice@example.com", "unused-password");
    let message = b"Subject: t\r\n\r\ntoken\r\n";
    server.deliver("alice@example.com", message);
    let listing = format!("1 {}", message.len());

    // curl picks OAUTHBEARER from CAPA; XOAUTH2 when told to. Both RS256 and ES256 keys work.
    let rsa = services.mint("rsa-1", claims("alice@example.com"), None);
    let (ok, out) = curl(&server, &rsa, &[]);
    assert!(ok && out.trim() == listing, "{out}");
    let ec = services.mint("ec-1", claims("alice@example.com"), None);
    let (ok, out) = curl(&server, &ec, &["--login-options", "AUTH=XOAUTH2"]);
    assert!(ok && out.trim() == listing, "{out}");

    // Refused tokens get RFC 7628's error challenge, then -ERR [AUTH].
    let with = |field: &str, value: serde_json::Value| {
        let mut c = claims("alice@example.com");
        c[field] = value;
        services.mint("rsa-1", c, None)
    };
    let refused = [
        ("expired", with("exp", "-120".into())),
        ("not yet valid", with("nbf", "+600".into())),
        ("wrong audience", with("aud", "someone-else".into())),
        ("wrong issuer", with("iss", "https://evil.example.com".into())),
        ("another user", with("email", "bob@example.com".into())),
        ("an unverified address", with("email_verified", false.into())),
        ("alg none", services.mint("rsa-1", claims("alice@example.com"), Some("none"))),
    ];
    for (what, token) in refused {
        let (reply, error) = oauthbearer(&server, &token);
        assert_eq!(reply, "-ERR [AUTH] Authentication failed", "{what}");
        assert_eq!(
            error.as_deref(),
            Some(r#"{"scope":"https://mail.example.com/pop","status":"invalid_token"}"#),
            "{what}"
        );
    }
    // Signed by a key the provider never published (under a published kid, then its own).
    let stranger = tempfile::tempdir().unwrap();
    let forged = {
        let out = Command::new("python3")
            .args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/identity_services.py"), "newkey", "--state"])
            .arg(stranger.path())
            .args(["rsa-1", "RS256"])
            .status()
            .unwrap();
        assert!(out.success());
        crate::common::identity::mint(stranger.path(), "rsa-1", claims("alice@example.com"), None)
    };
    assert_eq!(oauthbearer(&server, &forged).0, "-ERR [AUTH] Authentication failed");

    // Rotation: a new key is found by fetching the set again (at most every 10 s).
    services.new_key("rsa-2", "RS256");
    let rotated = services.mint("rsa-2", claims("alice@example.com"), None);
    let (_, fetches) = services.calls(&pki);
    eventually("the rotated key is accepted", || oauthbearer(&server, &rotated).0.starts_with("+OK"));
    let (_, after) = services.calls(&pki);
    assert!(after > fetches && after <= fetches + 3, "key set fetched {fetches} -> {after} times");
}

/// Issue 22 item 5: with a mailbox format that drops the domain (`%n`), a token's user must be
/// in `oauth_domains`: alice at another domain of a shared provider does not open alice's
/// mailbox (before, any `alice@...` did). Without the list, such a configuration is refused.
#[test]
fn bearer_tokens_outside_the_accepted_domains_open_nothing() {
    let pki = Pki::new();
    let services = IdentityServices::start(&pki);
    services.new_key("rsa-1", "RS256");
    let mut env = oauth_env(&pki, &services);
    env.push(("CLOUDPOP_AUTH_MAILBOX_FORMAT".into(), "%n".into()));
    let refused = crate::common::cli_env(tempfile::tempdir().unwrap().path(), &env, &["serve"], b"");
    assert!(!refused.0 && refused.2.contains("oauth_domains"), "{}", refused.2);

    env.push(("CLOUDPOP_OAUTH_DOMAINS".into(), "example.com, example.net".into()));
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    server.add_account("alice", "unused-password");
    let ours = services.mint("rsa-1", claims("alice@example.com"), None);
    assert!(oauthbearer(&server, &ours).0.starts_with("+OK Logged in"));
    for stranger in ["alice@gmail.example", "alice@example.com.evil.example", "alice"] {
        let token = services.mint("rsa-1", claims(stranger), None);
        let mut c = Client::connect_tls(server.pop3s, &server.cert());
        let response = STANDARD.encode(format!("n,,\x01auth=Bearer {token}\x01\x01"));
        let reply = c.cmd(&format!("AUTH OAUTHBEARER {response}"));
        let reply = if reply.starts_with("+ ") { c.cmd("AQ==") } else { reply };
        assert_eq!(reply, "-ERR [AUTH] Authentication failed", "{stranger}");
    }
}

/// The salt the server challenges `user` with (a decoy's for an unknown user).
fn scram_salt(server: &Server, user: &str) -> String {
    let mut c = Client::connect_tls(server.pop3s, &server.cert());
    let reply = c.cmd(&format!("AUTH SCRAM-SHA-256 {}", STANDARD.encode(format!("n,,n={user},r=clientnonce"))));
    let first = String::from_utf8(STANDARD.decode(reply.strip_prefix("+ ").expect("a challenge")).unwrap()).unwrap();
    first.split(',').find_map(|f| f.strip_prefix("s=")).expect("a salt").to_owned()
}

/// Issue 22 item 6: an unknown user's decoy salt is the same after a restart (and on every
/// frontend of a pool: it comes from a secret kept in the store), as a real user's is; before,
/// it came from a per-process key, so asking twice across a restart told who exists.
#[test]
fn decoy_scram_salts_survive_a_restart() {
    let env = [("CLOUDPOP_SCRAM", "true"), ("CLOUDPOP_SCRAM_ITERATIONS", "4096")];
    let server = Server::start(&env);
    server.add_account("alice", "pw");
    let (alice, nobody) = (scram_salt(&server, "alice"), scram_salt(&server, "nobody"));
    assert_eq!(scram_salt(&server, "nobody"), nobody);
    server.signal("-TERM");
    let (_, dir) = server.wait();
    let again = Server::start_in(dir, &env);
    assert_eq!(scram_salt(&again, "alice"), alice);
    assert_eq!(scram_salt(&again, "nobody"), nobody, "a decoy salt changed across a restart");
    assert_ne!(scram_salt(&again, "somebody-else"), nobody);
}
