"""The servers bench/compare.py runs side by side: a private Dovecot, cloudpop (embedded or in
cloud mode), and what cloud mode needs (Garage or s3s-fs, redis-server, and the latency relay
of bench/s3_latency.py), each on free loopback ports; and the load generator that drives them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
BIN = os.path.join(RELEASE, "cloudpop")
LOADGEN = os.path.join(RELEASE, "examples", "loadgen")
TOKEN, INGEST_TOKEN = "bench-admin", "bench-ingest"


def log(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on port {port} within {timeout} s")


def loadgen(*args):
    out = subprocess.run([LOADGEN, *map(str, args)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def prepare(garage=False):
    if shutil.which("dovecot") is None:
        log("installing dovecot-pop3d (Debian)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "dovecot-pop3d"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    log("building cloudpop and the load generator (release)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "cloudpop", "--example", "loadgen"],
                   check=True, cwd=ROOT)
    if garage and not os.path.exists(GARAGE):
        log(f"installing garage {GARAGE_VERSION} (cargo install, pinned; a long build)")
        subprocess.run(["cargo", "install", "--locked", "garage", "--version", GARAGE_VERSION, "--no-default-features",
                        "--features", "bundled-libs,sqlite", "--root", os.path.dirname(os.path.dirname(GARAGE))],
                       check=True)


def certificate(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=localhost", "-days", "7", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o644)  # Dovecot reads it after dropping privileges
    return cert, key


class Server:
    def __init__(self, name, process, pop3, pop3s, prefix, extra=None):
        self.name, self.process, self.pop3, self.pop3s, self.prefix = name, process, pop3, pop3s, prefix
        self.extra = extra or []

    def stop(self):
        for p in [self.process, *self.extra]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.process, *self.extra]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


DOVECOT_CONF = """\
base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{work}/mail/%u
default_internal_user = dovecot
default_login_user = dovenull
default_process_limit = 5000
default_client_limit = 20000
mail_max_userip_connections = 100
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = {work}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={work}/mail/%u
}}
# Dovecot's high-performance login mode: long-lived login processes, one per core.
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cores}
  vsz_limit = 1G
}}
"""


def start_dovecot(servers, work, cert, key, users):
    home = os.path.join(work, "dovecot")
    for sub in ("run", "state"):
        os.makedirs(os.path.join(home, sub))
    log(f"dovecot: provisioning {users} PLAIN and {users} argon2id users with the same corpus")
    loadgen("corpus-dovecot", "--dir", home, "--scheme", "plain", "--prefix", "p", "--users", users)
    loadgen("corpus-dovecot", "--dir", home, "--scheme", "argon2id", "--prefix", "a", "--users", users, "--big", 0)
    subprocess.run(["chown", "-R", "dovecot:dovecot", os.path.join(home, "mail")], check=True)
    pop3, pop3s = free_port(), free_port()
    conf = os.path.join(home, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(DOVECOT_CONF.format(work=home, cert=cert, key=key, pop3=pop3, pop3s=pop3s, cores=os.cpu_count()))
    process = subprocess.Popen(["dovecot", "-F", "-c", conf])
    server = Server("dovecot", process, pop3, pop3s, "p")
    servers.append(server)
    wait_port(pop3, process, "dovecot")
    return server


def cloudpop_env(data, cert, key, pop3, pop3s, api, ops, **extra):
    env = dict(os.environ, CLOUDPOP_DATA_DIR=data, CLOUDPOP_POP3_LISTEN=f"127.0.0.1:{pop3}",
               CLOUDPOP_POP3S_LISTEN=f"127.0.0.1:{pop3s}", CLOUDPOP_API_LISTEN=f"127.0.0.1:{api}",
               CLOUDPOP_OPS_LISTEN=f"127.0.0.1:{ops}", CLOUDPOP_API_ADMIN_TOKENS=TOKEN,
               CLOUDPOP_API_INGEST_TOKENS=INGEST_TOKEN, CLOUDPOP_TLS_CERT=cert,
               CLOUDPOP_TLS_KEY=key, CLOUDPOP_LOG="warn",
               # The idle run holds 18,000 connections from 64 addresses.
               CLOUDPOP_MAX_CONNECTIONS_PER_ADDRESS="20000", CLOUDPOP_MAX_CONNECTIONS="19500")
    env.update({f"CLOUDPOP_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def start_cloudpop(servers, name, work, cert, key, corpus=None, **settings):
    """cloudpop with `settings` (config names) on free ports; `corpus` is the load generator's
    corpus options, provisioned through the gRPC API once it listens."""
    data = os.path.join(work, name)
    pop3, pop3s, api, ops = free_port(), free_port(), free_port(), free_port()
    env = cloudpop_env(data, cert, key, pop3, pop3s, api, ops, **settings)
    process = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL)
    server = Server(name, process, pop3, pop3s, "u")
    server.ops, server.api, server.env = ops, api, env
    servers.append(server)
    wait_port(api, process, f"cloudpop ({name})")
    if corpus is not None:
        log(f"{name}: provisioning {corpus[1]} users through the gRPC API")
        loadgen("corpus-cloudpop", "--api", f"http://127.0.0.1:{api}", "--token", TOKEN,
                "--ingest-token", INGEST_TOKEN, "--prefix", "u", *corpus)
    return server


GARAGE = os.path.join(ROOT, "target", "tools", "bin", "garage")
GARAGE_VERSION = "2.5.0"
# Garage's key import wants its own formats: "GK" and 24 hex digits, and 64 hex digits.
GARAGE_KEY, GARAGE_SECRET = "GK" + "be4c4" * 4 + "c0ffee00", "5ec7e7" * 10 + "beef"

GARAGE_CONF = """\
metadata_dir = "{work}/meta"
data_dir = "{work}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"""


def start_s3s_fs(servers, work):
    if shutil.which("s3s-fs") is None:
        sys.exit("s3s-fs is missing: `bash scripts/test` installs it, or pass --no-cloud")
    s3_dir = os.path.join(work, "s3")
    os.makedirs(os.path.join(s3_dir, "mail"))
    port = free_port()
    s3 = subprocess.Popen(["s3s-fs", "--host", "127.0.0.1", "--port", str(port), "--access-key", "bench",
                           "--secret-key", "bench-secret", s3_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.append(Server("s3s-fs", s3, 0, 0, ""))
    wait_port(port, s3, "s3s-fs")
    return dict(s3_endpoint=f"http://127.0.0.1:{port}", s3_access_key_id="bench", s3_secret_access_key="bench-secret")


def start_garage(servers, work):
    """A single-node Garage (installed by prepare())."""
    home = os.path.join(work, "garage")
    os.makedirs(home)
    rpc, port = free_port(), free_port()
    conf = os.path.join(home, "garage.toml")
    with open(conf, "w") as f:
        f.write(GARAGE_CONF.format(work=home, rpc=rpc, s3=port, secret="ab" * 32))
    os.chmod(conf, 0o600)
    garage = subprocess.Popen([GARAGE, "-c", conf, "server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.append(Server("garage", garage, 0, 0, ""))
    wait_port(port, garage, "garage")

    def cli(*args):
        return subprocess.run([GARAGE, "-c", conf, *args], check=True, stdout=subprocess.PIPE, text=True).stdout

    node = cli("node", "id", "-q").strip().split("@")[0]
    cli("layout", "assign", "-z", "dc1", "-c", "10G", node[:16])
    cli("layout", "apply", "--version", "1")
    cli("bucket", "create", "mail")
    cli("key", "import", "--yes", "-n", "bench", GARAGE_KEY, GARAGE_SECRET)
    cli("bucket", "allow", "--read", "--write", "--owner", "mail", "--key", GARAGE_KEY)
    return dict(s3_endpoint=f"http://127.0.0.1:{port}", s3_region="garage", s3_access_key_id=GARAGE_KEY,
                s3_secret_access_key=GARAGE_SECRET)


def start_dependencies(servers, work, s3="s3s-fs"):
    """A real S3 server (s3s-fs or Garage) and redis-server on free ports; returns cloudpop's
    settings for them."""
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is missing: `bash scripts/test` installs it, or pass --no-cloud")
    settings = start_garage(servers, work) if s3 == "garage" else start_s3s_fs(servers, work)
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    servers.append(Server("redis", redis, 0, 0, ""))
    wait_port(redis_port, redis, "redis-server")
    return dict(settings, store="s3", locks="redis", s3_bucket="mail", s3_path_style="true",
                redis_url=f"redis://127.0.0.1:{redis_port}")


def start_latency_relay(servers, endpoint, delay_ms):
    """bench/s3_latency.py in front of the S3 `endpoint`, adding `delay_ms` to every request;
    returns the relay's endpoint."""
    port = free_port()
    relay = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "s3_latency.py"), "--listen",
                              f"127.0.0.1:{port}", "--upstream", endpoint.removeprefix("http://"), "--delay-ms",
                              str(delay_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.append(Server(f"relay-{delay_ms}ms", relay, 0, 0, ""))
    wait_port(port, relay, "the latency relay")
    return f"http://127.0.0.1:{port}"


def counter(ops, name):
    """The sum of a metric's series in a cloudpop's /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def s3_requests(ops):
    """Total S3 requests the server has made, from its own /metrics."""
    return counter(ops, "cloudpop_s3_requests_total")


def hash_checks(ops):
    """Password hash checks (argon2id) the server has made."""
    return counter(ops, "cloudpop_password_hash_duration_seconds_count")
