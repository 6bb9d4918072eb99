//! Where the authentication tests' users live: a real OpenLDAP `slapd` and the HTTPS identity
//! services of `tests/python/identity_services.py` (the HTTP directory and an identity
//! provider's key set), each on loopback, stopped by PID.
#![allow(dead_code)]

use super::cloud::free_port;
use super::eventually;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `CLOUDPOP_*` settings for a test, plus limits loose enough that a test's many deliberate
/// failures from one address are not throttled or cut off.
pub fn auth_env(settings: Vec<(&str, String)>) -> Vec<(String, String)> {
    let loose = [
        ("CLOUDPOP_THROTTLE_ACCOUNT_FAILURES", "1000"),
        ("CLOUDPOP_THROTTLE_ADDRESS_FAILURES", "1000"),
        ("CLOUDPOP_MAX_AUTH_FAILURES", "100"),
    ];
    let loose = loose.into_iter().map(|(k, v)| (k, v.to_owned()));
    settings.into_iter().chain(loose).map(|(k, v)| (k.to_owned(), v)).collect()
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/identity_services.py");

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("python3").arg(SCRIPT).arg("pki").arg(dir.path()).status().unwrap();
        assert!(ok.success(), "making the test PKI failed");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The base of the test directory.
pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// A user of the test directory: uid, password, mail, and extra LDIF lines.
pub struct LdapUser<'a> {
    pub uid: &'a str,
    pub password: &'a str,
    pub mail: &'a str,
    pub extra: &'a str,
}

/// A real `slapd` with an MDB database under `BASE`, listening on ldap:// and ldaps://, and
/// answering only over TLS (LDAPS, or ldap:// after StartTLS).
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
}

impl Slapd {
    pub fn start(pki: &Pki, users: &[LdapUser<'_>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {root}/slapd.pid\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             security tls=1\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {root}/db\n\
             access to attrs=userPassword by anonymous auth by self read by * none\n\
             access to * by * read\n",
            root = root.display(),
            ca = pki.path("ca.pem").display(),
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
        );
        std::fs::write(root.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for user in users {
            let hash = Command::new("/usr/sbin/slappasswd").args(["-s", user.password]).output().unwrap();
            let hash = String::from_utf8(hash.stdout).unwrap();
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
                 mail: {mail}\nuserPassword: {hash}\n{extra}\n",
                uid = user.uid,
                hash = hash.trim(),
                mail = user.mail,
                extra = user.extra,
            ));
        }
        std::fs::write(root.join("users.ldif"), ldif).unwrap();
        let loaded = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(root.join("slapd.conf"))
            .arg("-l")
            .arg(root.join("users.ldif"))
            .output()
            .expect("slapadd (run scripts/test, which installs slapd)");
        assert!(loaded.status.success(), "slapadd: {}", String::from_utf8_lossy(&loaded.stderr));
        let mut slapd = Self { child: None, dir, port: free_port(), tls_port: free_port() };
        slapd.run();
        slapd
    }

    fn run(&mut self) {
        let root = self.dir.path();
        let urls = format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.port, self.tls_port);
        let log = std::fs::File::create(root.join("slapd.log")).unwrap();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(root.join("slapd.conf"))
            // Level 256 ("stats"): every operation with its filter or DN, which tests read.
            .args(["-h", &urls, "-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("slapd (run scripts/test, which installs it)");
        self.child = Some(child);
        let (port, tls_port) = (self.port, self.tls_port);
        eventually("slapd listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const DIRECTORY_TOKEN: &str = "directory-bearer-token";

/// The HTTPS identity services: POST /auth (mutual TLS and [`DIRECTORY_TOKEN`]), GET /jwks.json.
pub struct IdentityServices {
    child: Child,
    pub state: tempfile::TempDir,
    pub port: u16,
}

impl IdentityServices {
    pub fn start(pki: &Pki) -> Self {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join("mode"), "ok").unwrap();
        std::fs::write(state.path().join("users.json"), "{}").unwrap();
        let port_file = state.path().join("port");
        let log = std::fs::File::create(state.path().join("server.log")).unwrap();
        let child = Command::new("python3")
            .arg(SCRIPT)
            .arg("serve")
            .arg("--state")
            .arg(state.path())
            .arg("--port-file")
            .arg(&port_file)
            .arg("--cert")
            .arg(pki.path("server.pem"))
            .arg("--key")
            .arg(pki.path("server.key"))
            .arg("--client-ca")
            .arg(pki.path("ca.pem"))
            .args(["--token", DIRECTORY_TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        eventually("identity services listening", || port_file.exists());
        let port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        Self { child, state, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn set_users(&self, users: serde_json::Value) {
        std::fs::write(self.state.path().join("users.json"), users.to_string()).unwrap();
    }

    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.state.path().join("mode"), mode).unwrap();
    }

    /// How often (/auth, /jwks.json) were called.
    pub fn calls(&self, pki: &Pki) -> (u64, u64) {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(pki.path("ca.pem"))
            .arg(self.url("/calls"))
            .output()
            .unwrap();
        let calls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (calls["auth"].as_u64().unwrap(), calls["jwks"].as_u64().unwrap())
    }

    pub fn new_key(&self, kid: &str, alg: &str) {
        let mut cmd = Command::new("python3");
        let ok = cmd.arg(SCRIPT).arg("newkey").arg("--state").arg(self.state.path()).args([kid, alg]).status().unwrap();
        assert!(ok.success());
    }

    pub fn remove_key(&self, kid: &str) {
        std::fs::remove_file(self.state.path().join("keys").join(format!("{kid}.pem"))).unwrap();
    }

    /// A token signed with `kid` (`alg` "none": unsigned), `claims` with relative `exp` as "+300".
    pub fn mint(&self, kid: &str, claims: serde_json::Value, alg: Option<&str>) -> String {
        mint(self.state.path(), kid, claims, alg)
    }
}

pub fn mint(state: &Path, kid: &str, claims: serde_json::Value, alg: Option<&str>) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).arg("mint").arg("--state").arg(state).args([kid, &claims.to_string()]);
    if let Some(alg) = alg {
        cmd.arg(alg);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "mint: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Drop for IdentityServices {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
