#!/usr/bin/env python3
"""Benchmark: how long a POP3 download takes when the object store is far away.

Starts s3s-fs and redis-server on loopback, `bench/s3_latency.py` in front of s3s-fs adding
DELAY ms to every S3 request, and the release `cloudpop serve` in cloud mode against the relay.
One account gets 20 messages of about 11 KB. A client (Python's poplib, one at a time, as a
mail client polls) then runs the common session: login, STAT, UIDL, RETR 1..20, QUIT
without deleting. It reports the median wall time of the sessions for each delay, and what that
is in round trips of the store: (time - time at 0 ms) / delay.

It runs in a network namespace of its own whose loopback acknowledges at once (as
`bench/compare.py --quickack` does; `--no-quickack` to skip): s3s-fs does not set TCP_NODELAY,
and delayed ACKs would add about 40 ms to every GET over a reused connection.

Each configuration runs with read-ahead on (the default, `retr_read_ahead_kib = 1024`) and off
(0), so the difference is what read-ahead saves. The account record cache is on (the default)
and warm after the first session, as it is for a polling client; the first session of each
configuration is a warm-up and not counted.

    cargo build --release && python3 bench/latency.py [--delays 0,10,30] [--sessions 15]
"""

import argparse
import os
import poplib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, ROOT, cloud_env, enter_quickack_namespace, free_port, start_s3_and_redis, stop  # noqa: E402

MESSAGES = 20


def wait_line(process, prefix):
    while True:
        line = process.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"process exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


def message(n):
    body = b"".join(b"line %d of message %d, some text to fill a typical mail\r\n" % (i, n) for i in range(190))
    return b"From: bench@example.com\r\nSubject: message %d\r\n\r\n" % n + body


def session(port):
    pop = poplib.POP3("127.0.0.1", port)
    pop.user("reader")
    pop.pass_("pw")
    count, _ = pop.stat()
    pop.uidl()
    for n in range(1, count + 1):
        pop.retr(n)
    pop.quit()
    return count


def reader_server(env):
    """Account `reader` with MESSAGES messages, and `cloudpop serve` on a free port once it
    listens; returns (process, port)."""
    subprocess.run([BIN, "account", "add", "reader", "--password-stdin"], input=b"pw\n", env=env, check=True,
                   stdout=subprocess.DEVNULL)
    for n in range(1, MESSAGES + 1):
        subprocess.run([BIN, "deliver", "reader"], input=message(n), env=env, check=True, stdout=subprocess.DEVNULL)
    pop3 = free_port()
    server = subprocess.Popen([BIN, "serve", "--pop3", f"127.0.0.1:{pop3}", "--pop3s", ""], env=env,
                              stdout=subprocess.PIPE)
    try:
        wait_line(server, "cloudpop: pop3 listening")
    except BaseException:
        server.kill()
        raise
    return server, pop3


def run(delay_ms, read_ahead_kib, sessions, work):
    helpers = []
    try:
        started, s3_port, redis_port = start_s3_and_redis(os.path.join(work, f"s3-{delay_ms}-{read_ahead_kib}"))
        helpers += started
        relay_port = free_port()
        relay = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "s3_latency.py"), "--listen",
                                  f"127.0.0.1:{relay_port}", "--upstream", f"127.0.0.1:{s3_port}", "--delay-ms",
                                  str(delay_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        helpers.append(relay)
        wait_line(relay, "s3-latency listening")
        env = cloud_env(f"http://127.0.0.1:{relay_port}", redis_port, os.path.join(work, "data"),
                        retr_read_ahead_kib=read_ahead_kib)
        server, pop3 = reader_server(env)
        helpers.insert(0, server)  # stopped first, before what it uses
        session(pop3)  # warm-up: the account cache, connections to the store and Redis
        times = []
        for _ in range(sessions):
            started = time.perf_counter()
            assert_count = session(pop3)
            times.append(time.perf_counter() - started)
            if assert_count != MESSAGES:
                raise SystemExit(f"the session saw {assert_count} messages, not {MESSAGES}")
        return statistics.median(times)
    finally:
        stop(helpers)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", default="0,10,30")
    parser.add_argument("--sessions", type=int, default=15)
    parser.add_argument("--no-quickack", action="store_true",
                        help="keep delayed ACKs on loopback: s3s-fs does not set TCP_NODELAY, so every GET "
                             "over a reused connection then stalls about 40 ms, which says nothing about cloudpop")
    args = parser.parse_args()
    if not args.no_quickack:
        enter_quickack_namespace()
    for tool in ("s3s-fs", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: scripts/test installs it")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    delays = [int(d) for d in args.delays.split(",")]
    work = tempfile.mkdtemp(prefix="cloudpop-latency-")
    try:
        results = {}
        for delay in delays:
            for read_ahead in (1024, 0):
                results[delay, read_ahead] = run(delay, read_ahead, args.sessions, work)
                print(f"delay {delay} ms, read-ahead {'on' if read_ahead else 'off'}: "
                      f"median session {results[delay, read_ahead] * 1000:.0f} ms", flush=True)
        print()
        print("| S3 delay per request | session, read-ahead on | round trips | session, read-ahead off | round trips |")
        print("|---|---|---|---|---|")
        for delay in delays:
            row = [f"{delay} ms"]
            for read_ahead in (1024, 0):
                t = results[delay, read_ahead]
                base = results.get((0, read_ahead))
                trips = f"{(t - base) * 1000 / delay:.1f}" if delay and base is not None else ""
                row += [f"{t * 1000:.0f} ms", trips]
            print("| " + " | ".join(row) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
