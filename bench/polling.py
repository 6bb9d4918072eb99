#!/usr/bin/env python3
"""Benchmark: what a login costs when clients poll as real ones do.

Real clients poll every 5 to 30 minutes (Thunderbird 10, phones 15, Outlook 30), and a balancer
spreads their polls over the pool. A frontend's own verified-credential cache (60 s) then
almost never sees the same client twice, and nearly every login pays a full argon2id check.
This runs a pool of three `cloudpop serve` (release build) on s3s-fs and Redis, in a network
namespace whose loopback acknowledges at once (see bench/latency.py), with USERS users who each
log in (USER, PASS, STAT, QUIT) every P seconds, each login going to the next frontend in turn
as a round-robin balancer would. It reports argon2id checks per login and server CPU per login
(the three frontends' user and system time over the measured rounds), with the pool-wide cache
(`credential_cache_shared_secs = 3600`, above the longest interval: with a TTL equal to the
interval, entries end just as the next poll comes and about half the logins miss) on and off.

Time is compressed by SCALE (default 60): a poll every 600 s runs as one every 10 s, and every
TTL is divided alike (the frontends' own 60 s cache becomes 1 s, the pool-wide 3600 s 60 s), so
the ratios that decide hits and misses are those of real polling. One round of polls warms up;
the next two are measured.

    cargo build --release && python3 bench/polling.py [--users 40] [--intervals 60,600,1800]
"""

import argparse
import os
import poplib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, cloud_env, cpu_seconds, enter_quickack_namespace, free_port, start_s3_and_redis, stop  # noqa: E402

FRONTENDS = 3
POOL_KEY = "benchmark pool key: at least thirty-two characters"


def hash_checks(ops_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("cloudpop_password_hash_duration_seconds_count"):
            return float(line.split()[-1])
    raise RuntimeError("no password_hash_duration_seconds_count in /metrics")


def start_pool(work, shared_secs, local_secs, users):
    """s3s-fs, Redis and three frontends; returns (processes, [(pop3, ops, pid)])."""
    procs, s3_port, redis_port = start_s3_and_redis(os.path.join(work, f"s3-{shared_secs}"))
    key_file = os.path.join(work, "pool-key")
    with open(key_file, "w") as f:
        f.write(POOL_KEY)
    env = cloud_env(f"http://127.0.0.1:{s3_port}", redis_port, os.path.join(work, "data"),
                    credential_cache_secs=local_secs, credential_cache_shared_secs=shared_secs,
                    credential_cache_shared_key_file=key_file, auth_failure_delay_ms=0)
    for u in range(users):
        subprocess.run([BIN, "account", "add", f"u{u}", "--password-stdin"], input=b"pw\n", env=env, check=True,
                       stdout=subprocess.DEVNULL)
    frontends = []
    for _ in range(FRONTENDS):
        pop3, ops = free_port(), free_port()
        server = subprocess.Popen([BIN, "serve", "--pop3", f"127.0.0.1:{pop3}", "--pop3s", "", "--ops",
                                   f"127.0.0.1:{ops}"], env=env, stdout=subprocess.PIPE)
        procs.insert(0, server)
        while not server.stdout.readline().decode().startswith("cloudpop: ops listening"):
            pass
        frontends.append((pop3, ops, server.pid))
    return procs, frontends


def poll_rounds(frontends, users, period, rounds):
    """Each user logs in every `period` seconds for `rounds` rounds, phases spread evenly; the
    logins go round-robin over the frontends. Returns the number of logins."""
    turn = [0]
    lock = threading.Lock()
    errors = []
    start = time.monotonic() + 0.2

    def user(u):
        for r in range(rounds):
            at = start + (r + u / users) * period
            time.sleep(max(0.0, at - time.monotonic()))
            with lock:
                port = frontends[turn[0] % len(frontends)][0]
                turn[0] += 1
            try:
                pop = poplib.POP3("127.0.0.1", port, timeout=30)
                pop.user(f"u{u}")
                pop.pass_("pw")
                pop.stat()
                pop.quit()
            except Exception as e:  # reported, and the run fails
                errors.append(repr(e))

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} logins failed, first: {errors[0]}")
    return users * rounds


def measure(work, users, interval, scale, shared):
    period = interval / scale
    local_secs = max(1, round(60 / scale))
    shared_secs = max(1, round(3600 / scale)) if shared else 0
    procs, frontends = start_pool(os.path.join(work, f"{interval}-{shared}"), shared_secs, local_secs, users)
    try:
        poll_rounds(frontends, users, period, 1)  # warm-up: the first check of every user
        checks = sum(hash_checks(ops) for _, ops, _ in frontends)
        cpu = sum(cpu_seconds(pid) for _, _, pid in frontends)
        logins = poll_rounds(frontends, users, period, 2)
        checks = sum(hash_checks(ops) for _, ops, _ in frontends) - checks
        cpu = sum(cpu_seconds(pid) for _, _, pid in frontends) - cpu
        return checks / logins, cpu * 1000 / logins
    finally:
        stop(procs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--intervals", default="60,600,1800")
    parser.add_argument("--scale", type=float, default=60)
    args = parser.parse_args()
    for tool in ("s3s-fs", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: scripts/test installs it")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    enter_quickack_namespace()
    work = tempfile.mkdtemp(prefix="cloudpop-polling-")
    try:
        rows = []
        for interval in [int(i) for i in args.intervals.split(",")]:
            row = [f"every {interval} s"]
            for shared in (True, False):
                checks, cpu = measure(work, args.users, interval, args.scale, shared)
                print(f"poll every {interval} s, pool-wide cache {'on' if shared else 'off'}: "
                      f"{checks:.2f} argon2id checks and {cpu:.1f} ms of server CPU per login", flush=True)
                row += [f"{checks:.2f}", f"{cpu:.1f} ms"]
            rows.append(row)
        print()
        print("| polling | checks per login, pool-wide cache on | CPU per login | checks per login, off | CPU per login |")
        print("|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
