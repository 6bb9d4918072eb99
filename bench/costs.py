#!/usr/bin/env python3
"""What each POP3 operation costs in S3 requests and Redis commands, read from counters (issue 10).

Starts a real s3s-fs and redis-server and cloudpop in cloud mode on free loopback ports (the
release build), provisions a few mailboxes through the gRPC API, then repeats each operation
REPEAT times with Python's poplib and reads the difference of two counters around it:

  S3     cloudpop's own `cloudpop_s3_requests_total` (by S3 operation), from /metrics
  Redis  the server's `INFO commandstats` (calls per command)

and prints a table of requests per operation, and per 1M typical polls (log in, UIDL, RETR the
one new message, DELE it, QUIT). Background traffic while idle (the account change feed's
keepalive) is measured separately and subtracted. The first login of an account after a
frontend starts also reads the account record and verifies the password once; the table is the
steady state a polling client sees.

    cargo build --release && python3 bench/costs.py [REPEAT]
"""

import os
import poplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the servers and the corpus come from the comparison script)

REPEAT = int(sys.argv[1]) if len(sys.argv) > 1 else 20
SWEEP_SECS = 2


def s3_counts(server):
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ops}/metrics", timeout=10).read().decode()
    counts = Counter()
    for line in text.splitlines():
        if line.startswith("cloudpop_s3_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            operation = labels.split('operation="', 1)[1].split('"', 1)[0]
            counts[operation] += float(value)
    return counts


def redis_counts(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2 or len(data) < int(data[1:data.index(b"\r\n")]):
            data += s.recv(65536)
    counts = Counter()
    for line in data.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            calls = dict(f.split("=") for f in fields.split(","))["calls"]
            counts[name.upper()] += int(calls)
    # The INFO command of this very measurement is not cloudpop's.
    counts["INFO"] = 0
    return counts


class Meter:
    def __init__(self, server, redis_port):
        self.server, self.redis_port = server, redis_port
        self.idle_rate = (Counter(), Counter(), 0.0)

    def snapshot(self):
        return s3_counts(self.server), redis_counts(self.redis_port), time.monotonic()

    def measure(self, operation, repeat=REPEAT):
        """Average requests of one call of `operation`, with idle background traffic removed."""
        s3_before, redis_before, started = self.snapshot()
        for i in range(repeat):
            operation(i)
        s3_after, redis_after, ended = self.snapshot()
        idle_s3, idle_redis, _ = self.idle_rate
        seconds = ended - started
        s3 = {k: (s3_after[k] - s3_before[k] - idle_s3[k] * seconds) / repeat for k in s3_after}
        redis = {k: (redis_after[k] - redis_before[k] - idle_redis[k] * seconds) / repeat for k in redis_after}
        return ({k: v for k, v in s3.items() if v > 0.05}, {k: v for k, v in redis.items() if v > 0.05})

    def learn_idle(self, seconds=11):
        s3_before, redis_before, started = self.snapshot()
        time.sleep(seconds)
        s3_after, redis_after, ended = self.snapshot()
        elapsed = ended - started
        self.idle_rate = (Counter({k: (s3_after[k] - s3_before[k]) / elapsed for k in s3_after}),
                          Counter({k: (redis_after[k] - redis_before[k]) / elapsed for k in redis_after}), elapsed)
        return self.idle_rate


def pop(server, user):
    client = poplib.POP3("127.0.0.1", server.pop3, timeout=30)
    client.user(user)
    client.pass_("pw")
    return client


def deliver(server_env, api, name, i):
    subprocess.run([compare.BIN, "deliver", "--api", f"http://127.0.0.1:{api}", name,
                    "--idempotency-key", f"cost-{name}-{i}-{time.time_ns()}"],
                   input=b"Subject: cost\r\n\r\nbody\r\n", check=True, env=server_env, stdout=subprocess.DEVNULL)


def main():
    work = tempfile.mkdtemp(prefix="cloudpop-costs-")
    os.chmod(work, 0o755)
    cert, key = compare.certificate(work)
    servers = []
    users = REPEAT * 3
    try:
        settings = compare.start_dependencies(servers, work)
        corpus = ("--users", users, "--messages", 5, "--big", 0)
        cloud = compare.start_cloudpop(servers, "cloud", work, cert, key, corpus, **settings)
        redis_port = int(settings["redis_url"].rsplit(":", 1)[1])
        api = cloud.api
        token_file = os.path.join(work, "ingest-token")
        with open(token_file, "w") as f:
            f.write(compare.INGEST_TOKEN)
        cli_env = dict(cloud.env, CLOUDPOP_API_TOKEN_FILE=token_file)
        meter = Meter(cloud, redis_port)

        # Every account logs in once first: its password is verified and its record cached.
        for i in range(users):
            pop(cloud, f"u{i}").quit()
        idle = meter.learn_idle()
        rows = []

        def login(i):
            pop(cloud, f"u{i}").quit()

        def stat_list(i):
            client = pop(cloud, f"u{i}")
            client.stat()
            client.list()
            client.quit()

        def retr(i):
            client = pop(cloud, f"u{i}")
            for n in range(1, 6):
                client.retr(n)
            client.quit()

        def quit_deleting(i):
            client = pop(cloud, f"u{REPEAT + i}")
            client.dele(1)
            client.quit()

        def poll(i):
            # A typical poll: one new message, retrieved and deleted.
            deliver(cli_env, api, f"u{2 * REPEAT + i}", i)
            client = pop(cloud, f"u{2 * REPEAT + i}")
            count = len(client.uidl()[1])
            client.retr(count)
            client.dele(count)
            client.quit()

        base = meter.measure(login)
        rows.append(("login (USER, PASS, QUIT)", base))
        rows.append(("STAT and LIST", subtract(meter.measure(stat_list), base)))
        rows.append(("RETR (one message)", scale(subtract(meter.measure(retr), base), 1 / 5)))
        rows.append(("QUIT with deletions (one DELE)", subtract(meter.measure(quit_deleting), base)))
        delivery = meter.measure(lambda i: deliver(cli_env, api, f"u{i}", i))
        rows.append(("delivery (gRPC, one recipient)", delivery))
        typical = meter.measure(poll)
        rows.append(("poll: delivery, then login, UIDL, RETR, DELE, QUIT", typical))
        session = subtract(typical, delivery)
        rows.append(("the same poll without its delivery, per 1M", scale(session, 1_000_000)))

        # Sweep rounds: restart with a short interval and count rounds from the server's metric.
        cloud.stop()
        servers.remove(cloud)
        sweeping = compare.start_cloudpop(servers, "cloud", work, cert, key, None, **settings,
                                          sweep_interval_secs=SWEEP_SECS)
        meter = Meter(sweeping, redis_port)
        meter.idle_rate = idle
        rounds_before = sweep_rounds(sweeping)
        sweep = meter.measure(lambda i: time.sleep(SWEEP_SECS), repeat=5)
        rounds = max(sweep_rounds(sweeping) - rounds_before, 1)
        rows.append((f"sweep round ({users} mailboxes, nothing expired)", scale(sweep, 5 / rounds)))

        print(f"\nRequests per operation, cloud mode (average of {REPEAT}; background while idle: "
              f"{fmt(idle[0], 60)} S3 and {fmt(idle[1], 60)} Redis per minute)\n")
        print("| operation | S3 requests | Redis commands |")
        print("|---|---|---|")
        for title, (s3, redis) in rows:
            print(f"| {title} | {fmt(s3)} | {fmt(redis)} |")
    finally:
        for server in reversed(servers):
            server.stop()


def sweep_rounds(server):
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ops}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cloudpop_sweep_rounds_total"))


def subtract(a, b):
    return tuple({k: v - other.get(k, 0) for k, v in part.items() if v - other.get(k, 0) > 0.05}
                 for part, other in zip(a, b))


def scale(a, factor):
    return tuple({k: v * factor for k, v in part.items()} for part in a)


def fmt(counts, factor=1):
    items = sorted(((k, v * factor) for k, v in counts.items() if v * factor > 0.05), key=lambda kv: -kv[1])
    if not items:
        return "0"
    total = sum(v for _, v in items)
    detail = ", ".join(f"{v:,.0f} {k}" if v >= 100 else f"{v:.2g} {k}" for k, v in items)
    return f"{total:,.0f}: {detail}" if total >= 100 else f"{total:.2g}: {detail}"


if __name__ == "__main__":
    main()
