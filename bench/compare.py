#!/usr/bin/env python3
"""cloudpop against Dovecot on the same machine, the same corpus, in the same run (issue 10).

Installs Debian's dovecot-pop3d when it is missing, builds the release binary and the load
generator (bench/loadgen.rs), then starts on free loopback ports:

  dovecot      a private Dovecot instance (its own config, base dir and maildirs), in its
               performance login mode; users p0.. have {PLAIN} passwords, a0.. argon2id hashes
               at cloudpop's own cost, both with the same messages
  embedded     cloudpop on its embedded default (filesystem store, in-process locks)
  cloud        cloudpop on S3 and Redis (a real redis-server): a single-node Garage, installed
               with cargo on first use (pinned), or s3s-fs with --s3 s3s-fs; --quickack runs
               everything in a network namespace whose loopback ACKs at once (neither S3
               server sets TCP_NODELAY); skipped with --no-cloud

Every server gets the same corpus (USERS x 20 messages, median 11 KB, plus 16 mailboxes of four
1 MiB messages) and the same ECDSA P-256 certificate. A warm-up session per user comes first
(Dovecot builds its indexes, cloudpop fills its credential cache), then ROUNDS rounds of every
workload against every server, interleaved, SECONDS each; the table shows the median of the
rounds and the ratios the issue sets as targets. Then 1000 idle logged-in sessions per server,
and as many idle connections as the file limit allows on cloudpop (server memory as PSS).

    python3 bench/compare.py [--seconds 10] [--rounds 2] [--users 1000] [--no-cloud]
                             [--s3 garage|s3s-fs] [--quickack]

Workloads (64 clients unless noted): sessions = USER, PASS, STAT, UIDL, RETR of every message,
QUIT; logins = USER, PASS, QUIT; tls = implicit TLS with a full handshake each (no resumption),
USER, PASS, STAT, QUIT; retr = 16 clients each retrieving 1 MiB messages in one session.
Clients connect from 64 loopback source addresses (127.0.1.2 upwards), as 64 machines would.
Server CPU is the CPU time of the server's whole process tree during the workload.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import enter_quickack_namespace  # noqa: E402

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


def s3_requests(ops):
    """Total S3 requests the server has made, from its own /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cloudpop_s3_requests_total"))


WORKLOADS = [
    ("sessions", "full sessions/s", 64, "rate"),
    ("logins", "logins/s", 64, "rate"),
    ("tls", "TLS sessions/s (full handshake)", 64, "rate"),
    ("retr", "RETR of 1 MiB messages, MB/s", 16, "mb_per_s"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--no-cloud", action="store_true")
    parser.add_argument("--s3", choices=["s3s-fs", "garage"], default="garage",
                        help="the S3 server of the cloud mode (s3s-fs lists a prefix by walking the whole "
                             "bucket, so it is slow past a few thousand objects)")
    parser.add_argument("--quickack", action="store_true",
                        help="run in a network namespace whose loopback ACKs at once (needs root)")
    args = parser.parse_args()
    prepare(garage=not args.no_cloud and args.s3 == "garage")
    if args.quickack:
        enter_quickack_namespace()
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="cloudpop-compare-")
    os.chmod(work, 0o755)
    cert, key = certificate(work)
    servers = []
    try:
        dovecot = start_dovecot(servers, work, cert, key, args.users)
        targets = [dovecot, Server("dovecot-argon2id", dovecot.process, dovecot.pop3, dovecot.pop3s, "a")]
        corpus = ("--users", args.users)
        embedded = start_cloudpop(servers, "embedded", work, cert, key, corpus)
        targets.append(embedded)
        if not args.no_cloud:
            settings = start_dependencies(servers, work, args.s3)
            cloud = start_cloudpop(servers, "cloud", work, cert, key, corpus, **settings)
            targets.append(cloud)

        def run(target, workload, clients, seconds, *more):
            port = target.pop3s if workload == "tls" else target.pop3
            return loadgen("run", "--workload", workload, "--addr", f"127.0.0.1:{port}", "--prefix", target.prefix,
                           "--users", args.users, "--clients", clients, "--seconds", seconds,
                           "--pid", target.process.pid, *more)

        def warm(target, workload="logins"):
            # cloudpop's credential cache is kept warm, as steady polling keeps it: a login per
            # user right before each of its runs re-verifies the entries that expired while the
            # other servers ran (entries live 30-60 s; some still expire during the run).
            result = run(target, workload, 64, 600, "--max-ops", args.users)
            if result["errors"]:
                sys.exit(f"warm-up of {target.name} had {result['errors']} errors")

        log("warm-up: one session per user on every server")
        for target in targets:
            warm(target, "sessions")

        results = {}
        for round_ in range(args.rounds):
            for workload, _, clients, _ in WORKLOADS:
                # Rotate the order each round, so no server always runs first or last.
                order = targets[round_ % len(targets):] + targets[:round_ % len(targets)]
                for target in order:
                    if target.process is not dovecot.process:
                        warm(target)
                    s3_before = s3_requests(target.ops) if target.name == "cloud" else 0
                    result = run(target, workload, clients, args.seconds)
                    if target.name == "cloud":
                        result["s3_per_op"] = (s3_requests(target.ops) - s3_before) / max(result["ops"], 1)
                    log(f"round {round_ + 1} {workload:8} {target.name:17} {json.dumps(result)}")
                    results.setdefault((workload, target.name), []).append(result)

        idle = {}
        for target in targets:
            if target.name == "dovecot-argon2id":
                continue
            if target.process is not dovecot.process:
                warm(target)
            idle[target.name] = loadgen("idle", "--addr", f"127.0.0.1:{target.pop3}", "--sessions", args.users,
                                        "--login", "--prefix", target.prefix, "--users", args.users,
                                        "--pid", target.process.pid)
            log(f"idle {target.name}: {json.dumps(idle[target.name])}")
        # The file limit here is 20,000 per process, on both ends.
        many = loadgen("idle", "--addr", f"127.0.0.1:{embedded.pop3}", "--sessions", 18000,
                       "--pid", embedded.process.pid)
        log(f"idle connections, embedded: {json.dumps(many)}")
        report(results, idle, many, [t.name for t in targets], args, time.monotonic() - started)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def median(results, key):
    return statistics.median(r[key] for r in results)


def report(results, idle, many, names, args, elapsed):
    def cell(workload, name, key):
        rows = results.get((workload, name))
        return median(rows, key) if rows else None

    print(f"\n{os.cpu_count()} cores, {args.users} users x 20 messages (median 11 KB), {args.rounds} rounds of "
          f"{args.seconds} s, median shown; {elapsed / 60:.1f} min in all\n")
    header = ["workload", *names, "embedded / dovecot-argon2id", "embedded / dovecot PLAIN"]
    if "cloud" in names:
        header.append("cloud / dovecot PLAIN")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for workload, title, _, key in WORKLOADS:
        values = {name: cell(workload, name, key) for name in names}
        row = [title, *(f"{values[n]:.0f}" for n in names)]
        row.append(f"{values['embedded'] / values['dovecot-argon2id']:.1f}x")
        row.append(f"{values['embedded'] / values['dovecot']:.1f}x")
        if "cloud" in names:
            row.append(f"{values['cloud'] / values['dovecot']:.2f}x")
        print("| " + " | ".join(row) + " |")
    retr_cpu = {name: cell("retr", name, "cpu_ms_per_mb") for name in names}
    print("| server CPU per MB of RETR, ms | " + " | ".join(f"{retr_cpu[n]:.2f}" for n in names) + " |")
    session_cpu = {name: cell("sessions", name, "cpu_ms_per_op") for name in names}
    print("| server CPU per full session, ms | " + " | ".join(f"{session_cpu[n]:.2f}" for n in names) + " |")
    if "cloud" in names:
        s3 = {w: cell(w, "cloud", "s3_per_op") for w, *_ in WORKLOADS}
        print("\nS3 requests per operation in cloud mode: " + ", ".join(f"{w} {v:.2f}" for w, v in s3.items()))
    print("\nIdle logged-in sessions (server PSS growth per session): " +
          ", ".join(f"{n} {r['kib_per_session']:.1f} KiB" for n, r in idle.items()))
    print(f"Idle connections before login on cloudpop (embedded): {many['sessions']} connections, "
          f"{many['kib_per_session']:.1f} KiB each, server PSS {many['server_pss_after_kib'] / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
