#!/usr/bin/env python3
"""Logins checked by an LDAP directory, with and without the verified-credential cache, next to
cloudpop's own accounts (issue 12).

Starts a private OpenLDAP slapd (Debian's slapd package; its own slapd.conf and MDB database on
a free loopback port) holding users u0..u{N-1} with password `pw`, and the release binary three
times on the embedded store:

  local        auth_backend = "local", accounts u0.. with argon2id hashes (the reference)
  ldap-cached  auth_backend = "ldap", search-then-bind, credential_cache_secs = 60 (the default)
  ldap-nocache the same with credential_cache_secs = 0: one search and one bind per login

Each gets a warm-up pass (every user logs in once: local fills its cache, the directory makes
the mailboxes), then the load generator's `logins` workload (USER, PASS, QUIT) for SECONDS.
The table shows logins per second, server CPU per login (cloudpop's process only; slapd's CPU
is shown apart) and how many directory checks the server made (its own metric).

    python3 bench/directory_logins.py [--users 200] [--clients 16] [--seconds 10]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "target", "release", "examples", "loadgen")
BASE = "dc=bench,dc=example"


def log(text):
    print(text, file=sys.stderr, flush=True)


def loadgen(*args):
    import json
    out = subprocess.run([LOADGEN, *map(str, args)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def slapd(users):
    root = tempfile.mkdtemp(prefix="cloudpop-bench-ldap-")
    os.mkdir(os.path.join(root, "db"))
    with open(os.path.join(root, "slapd.conf"), "w") as f:
        f.write(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
database mdb
maxsize 1073741824
suffix "{BASE}"
rootdn "cn=admin,{BASE}"
rootpw admin-pw
directory {root}/db
index uid eq
access to attrs=userPassword by anonymous auth by self read by * none
access to * by * read
""")
    hashed = subprocess.run(["/usr/sbin/slappasswd", "-s", "pw"], check=True, stdout=subprocess.PIPE,
                            text=True).stdout.strip()
    entries = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: bench\no: bench\n"]
    entries += [f"dn: uid=u{i},{BASE}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: u{i}\nsn: u{i}\n"
                f"userPassword: {hashed}\n" for i in range(users)]
    with open(os.path.join(root, "users.ldif"), "w") as f:
        f.write("\n".join(entries))
    subprocess.run(["/usr/sbin/slapadd", "-f", f"{root}/slapd.conf", "-l", f"{root}/users.ldif"], check=True,
                   stderr=subprocess.DEVNULL)
    port = free_port()
    process = subprocess.Popen(["/usr/sbin/slapd", "-f", f"{root}/slapd.conf", "-h", f"ldap://127.0.0.1:{port}/",
                                "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, port, root


def cloudpop(settings, users, local):
    data = tempfile.mkdtemp(prefix="cloudpop-bench-")
    ops = free_port()
    env = dict(os.environ, CLOUDPOP_DATA_DIR=data, CLOUDPOP_API_LISTEN="", CLOUDPOP_OPS_LISTEN=f"127.0.0.1:{ops}",
               CLOUDPOP_LOG="warn", CLOUDPOP_THROTTLE_ADDRESS_FAILURES="1000000",
               **{f"CLOUDPOP_{k.upper()}": str(v) for k, v in settings.items()})
    if local:
        log(f"creating {users} local accounts...")
        for i in range(users):
            subprocess.run([BIN, "account", "add", f"u{i}", "--password-stdin"], input=b"pw\n", env=env, check=True,
                           stdout=subprocess.DEVNULL)
    port = free_port()
    server = subprocess.Popen([BIN, "serve", "--pop3", f"127.0.0.1:{port}", "--pop3s", ""], env=env,
                              stdout=subprocess.PIPE)
    server.stdout.readline()
    return server, port, ops, data


def directory_checks(ops):
    text = urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("cloudpop_directory_check_duration_seconds_count"):
            return int(float(line.split()[-1]))
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    for path in (BIN, LOADGEN):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release --locked --bin cloudpop --example loadgen")
    ldap, ldap_port, ldap_root = slapd(args.users)
    ldap_settings = dict(auth_backend="ldap", ldap_url=f"ldap://127.0.0.1:{ldap_port}", ldap_base_dn=BASE,
                         ldap_user_filter="(&(objectClass=inetOrgPerson)(uid=%u))")
    runs = [("local", {}, True),
            ("ldap-cached", dict(ldap_settings, credential_cache_secs=60), False),
            ("ldap-nocache", dict(ldap_settings, credential_cache_secs=0), False)]
    rows = []
    try:
        for name, settings, local in runs:
            server, port, ops, data = cloudpop(settings, args.users, local)
            try:
                common = ["--addr", f"127.0.0.1:{port}", "--prefix", "u", "--users", args.users, "--password", "pw"]
                loadgen("run", "--workload", "logins", "--clients", args.clients, "--seconds", 60,
                        "--max-ops", args.users, *common)
                checks_before, slapd_before = directory_checks(ops), cpu_ms(ldap.pid)
                result = loadgen("run", "--workload", "logins", "--clients", args.clients, "--seconds", args.seconds,
                                 "--pid", server.pid, *common)
                checks = directory_checks(ops) - checks_before
                slapd_cpu = cpu_ms(ldap.pid) - slapd_before
                rows.append((name, result, checks, slapd_cpu))
                log(f"{name}: {result}")
            finally:
                server.terminate()
                server.wait()
                shutil.rmtree(data, ignore_errors=True)
    finally:
        ldap.terminate()
        ldap.wait()
        shutil.rmtree(ldap_root, ignore_errors=True)
    print(f"\n{args.users} users, {args.clients} clients, {args.seconds} s, USER/PASS/QUIT on loopback\n")
    print("| backend | logins/s | cloudpop CPU ms/login | directory checks | slapd CPU ms/login | errors |")
    print("|---|---|---|---|---|---|")
    for name, r, checks, slapd_cpu in rows:
        per = slapd_cpu / max(r["ops"], 1)
        print(f"| {name} | {r['rate']:.0f} | {r['cpu_ms_per_op']:.2f} | {checks} | {per:.2f} | {r['errors']} |")


if __name__ == "__main__":
    main()
