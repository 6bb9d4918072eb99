#!/usr/bin/env python3
"""cloudpop against Dovecot on the same machine, the same corpus, in the same run (issues 10, 24).

Installs Debian's dovecot-pop3d when it is missing, builds the release binary and the load
generator (bench/loadgen.rs), then starts on free loopback ports (bench/servers.py):

  dovecot      a private Dovecot instance (its own config, base dir and maildirs), in its
               performance login mode; users p0.. have {PLAIN} passwords, a0.. argon2id hashes
               at cloudpop's own cost, both with the same messages
  embedded     cloudpop on its embedded default (filesystem store, in-process locks)
  cloud        cloudpop on S3 and Redis (a real redis-server): a single-node Garage, installed
               with cargo on first use (pinned), or s3s-fs with --s3 s3s-fs; --quickack runs
               everything in a network namespace whose loopback ACKs at once (neither S3
               server sets TCP_NODELAY); skipped with --no-cloud
  cloud-20ms   a second frontend of the same pool whose S3 requests pass bench/s3_latency.py,
               which adds --delay-ms (20) to each, as a store across a network would

Every server gets the same corpus (USERS x 20 messages, median 11 KB, plus 16 mailboxes of four
1 MiB messages) and the same ECDSA P-256 certificate. A warm-up session per user comes first
(Dovecot builds its indexes, cloudpop fills its credential cache), then ROUNDS rounds of every
workload against every server, interleaved, SECONDS each; the table shows the median of the
rounds and the ratios the issues set as targets. Then real polling: POLL_USERS users who each
run a full session every POLL_INTERVAL seconds, over a pool of three cloud frontends taken in
turn (round-robin), with the pool-wide verified-credential cache on and off, and against
Dovecot; time is compressed by POLL_SCALE (a 600 s interval runs as 10 s, and every cache
lifetime is divided alike, so hits and misses are those of real polling). Then 1000 idle
logged-in sessions per server, and as many idle connections as the file limit allows on
cloudpop (server memory as PSS).

    python3 bench/compare.py [--seconds 10] [--rounds 2] [--users 1000] [--no-cloud]
                             [--s3 garage|s3s-fs] [--quickack] [--delay-ms 20]
                             [--poll-users 100] [--poll-interval 600] [--poll-scale 60]

Workloads (64 clients unless noted): sessions = USER, PASS, STAT, UIDL, RETR of every message,
QUIT; logins = USER, PASS, QUIT; tls = implicit TLS with a full handshake each (no resumption),
USER, PASS, STAT, QUIT; retr = 16 clients each retrieving 1 MiB messages in one session;
latency = one client running full sessions one after another (the median session time).
Clients connect from 64 loopback source addresses (127.0.1.2 upwards), as 64 machines would.
Server CPU is the CPU time of the server's whole process tree during the workload (of the three
frontends' for the pool).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import enter_quickack_namespace  # noqa: E402
from servers import (Server, certificate, hash_checks, loadgen, log, prepare, s3_requests,  # noqa: E402
                     start_cloudpop, start_dependencies, start_dovecot, start_latency_relay)

WORKLOADS = [
    ("sessions", "full sessions/s", 64, "rate"),
    ("logins", "logins/s", 64, "rate"),
    ("tls", "TLS sessions/s (full handshake)", 64, "rate"),
    ("retr", "RETR of 1 MiB messages, MB/s", 16, "mb_per_s"),
    ("latency", "one client's full session, median ms", 1, "session_ms_median"),
]
POOL_KEY = "benchmark pool key: at least thirty-two characters"


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
    parser.add_argument("--delay-ms", type=int, default=20, help="what the latency relay adds per S3 request")
    parser.add_argument("--poll-users", type=int, default=100,
                        help="users polling (keep their sessions well within one period on this machine: "
                             "a user whose previous session still runs is refused with [IN-USE])")
    parser.add_argument("--poll-interval", type=int, default=600, help="seconds between a user's polls")
    parser.add_argument("--poll-scale", type=float, default=60, help="how much faster than real time polls run")
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
        far = []
        if not args.no_cloud:
            settings = start_dependencies(servers, work, args.s3)
            targets.append(start_cloudpop(servers, "cloud", work, cert, key, corpus, **settings))
            relay = start_latency_relay(servers, settings["s3_endpoint"], args.delay_ms)
            far.append(start_cloudpop(servers, f"cloud-{args.delay_ms}ms", work, cert, key,
                                      **dict(settings, s3_endpoint=relay)))

        def run(target, workload, clients, seconds, *more):
            port = target.pop3s if workload == "tls" else target.pop3
            return loadgen("run", "--workload", "sessions" if workload == "latency" else workload,
                           "--addr", f"127.0.0.1:{port}", "--prefix", target.prefix, "--users", args.users,
                           "--clients", clients, "--seconds", seconds, "--pid", target.process.pid, *more)

        def warm(target, workload="logins"):
            # cloudpop's credential cache is kept warm, as steady polling keeps it: a login per
            # user right before each of its runs re-verifies the entries that expired while the
            # other servers ran (entries live 30-60 s; some still expire during the run).
            result = run(target, workload, 64, 600, "--max-ops", args.users)
            if result["errors"]:
                sys.exit(f"warm-up of {target.name} had {result['errors']} errors")

        log("warm-up: one session per user on every server")
        for target in targets + far:
            warm(target, "sessions")

        results = {}
        for round_ in range(args.rounds):
            for workload, _, clients, _ in WORKLOADS:
                # The far frontend only shows the latency: its relay could not carry 64 clients.
                those = targets + far if workload == "latency" else targets
                # Rotate the order each round, so no server always runs first or last.
                order = those[round_ % len(those):] + those[:round_ % len(those)]
                for target in order:
                    if target.process is not dovecot.process:
                        warm(target)
                    s3_before = s3_requests(target.ops) if target.name.startswith("cloud") else 0
                    result = run(target, workload, clients, args.seconds)
                    if target.name.startswith("cloud"):
                        result["s3_per_op"] = (s3_requests(target.ops) - s3_before) / max(result["ops"], 1)
                    log(f"round {round_ + 1} {workload:8} {target.name:17} {json.dumps(result)}")
                    results.setdefault((workload, target.name), []).append(result)

        polls = {}
        if not args.no_cloud:
            polls = polling(servers, work, cert, key, settings, dovecot, args)

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
        names = [t.name for t in targets]
        report(results, idle, many, names, [t.name for t in far], polls, args, time.monotonic() - started)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def polling(servers, work, cert, key, settings, dovecot, args):
    """Real polling (see the module documentation): returns {name: (cpu ms per session,
    argon2id checks per login or None, failed sessions)} for the pool with the pool-wide cache on and off, and
    for Dovecot with PLAIN and argon2id passwords."""
    period_ms = round(args.poll_interval * 1000 / args.poll_scale)
    key_file = os.path.join(work, "pool-key")
    with open(key_file, "w") as f:
        f.write(POOL_KEY)

    def poll(addrs, pids, prefix, rounds):
        result = loadgen("run", "--workload", "sessions", "--addr", ",".join(f"127.0.0.1:{a}" for a in addrs),
                         "--pid", ",".join(str(p) for p in pids), "--prefix", prefix, "--users", args.poll_users,
                         "--period-ms", period_ms, "--rounds", rounds)
        if result["errors"]:
            # Reported, not fatal: a poll refused because the user's previous one still runs
            # ([IN-USE]) is what an overloaded pool does; the table shows the count.
            log(f"polling had {result['errors']} failed sessions (see above)")
        return result

    out = {}
    for shared in (True, False):
        name = f"pool, shared cache {'on' if shared else 'off'}"
        pool = [start_cloudpop(servers, f"pool{i}-{int(shared)}", work, cert, key, **dict(
            settings, credential_cache_secs=max(1, round(60 / args.poll_scale)),
            credential_cache_shared_secs=max(1, round(3600 / args.poll_scale)) if shared else 0,
            credential_cache_shared_key_file=key_file)) for i in range(3)]
        addrs, pids = [s.pop3 for s in pool], [s.process.pid for s in pool]
        poll(addrs, pids, "u", 1)  # the first poll of every user warms whatever the pool keeps
        checks = sum(hash_checks(s.ops) for s in pool)
        result = poll(addrs, pids, "u", 2)
        checks = sum(hash_checks(s.ops) for s in pool) - checks
        out[name] = (result["cpu_ms_per_op"], checks / max(result["ops"] + result["errors"], 1), result["errors"])
        log(f"polling {name}: {json.dumps(result)}, {out[name][1]:.2f} checks per login")
        for server in pool:
            server.stop()
            servers.remove(server)
    for prefix, name in (("p", "dovecot PLAIN"), ("a", "dovecot argon2id")):
        poll([dovecot.pop3], [dovecot.process.pid], prefix, 1)
        result = poll([dovecot.pop3], [dovecot.process.pid], prefix, 2)
        out[name] = (result["cpu_ms_per_op"], None, result["errors"])
        log(f"polling {name}: {json.dumps(result)}")
    return out


def median(results, key):
    return statistics.median(r[key] for r in results)


def report(results, idle, many, names, far, polls, args, elapsed):
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
    for workload, title, _, key in WORKLOADS[:-1]:
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
    latency = {name: cell("latency", name, "session_ms_median") for name in names + far}
    print("| one client's full session, median ms | " + " | ".join(f"{latency[n]:.1f}" for n in names) + " |")
    if "cloud" in names:
        s3 = {w: cell(w, "cloud", "s3_per_op") for w, *_ in WORKLOADS}
        print("\nS3 requests per operation in cloud mode: " + ", ".join(f"{w} {v:.2f}" for w, v in s3.items()))
        targets(session_cpu, s3["sessions"], latency, far[0], polls, args)
    print("\nIdle logged-in sessions (server PSS growth per session): " +
          ", ".join(f"{n} {r['kib_per_session']:.1f} KiB" for n, r in idle.items()))
    print(f"Idle connections before login on cloudpop (embedded): {many['sessions']} connections, "
          f"{many['kib_per_session']:.1f} KiB each, server PSS {many['server_pss_after_kib'] / 1024:.0f} MiB")


def targets(session_cpu, s3_per_session, latency, far, polls, args):
    """The figures issue 24 sets targets for, as ratios against Dovecot from this same run."""
    dovecot = session_cpu["dovecot"]
    per_request = (session_cpu["cloud"] - session_cpu["embedded"]) / s3_per_session
    trips = (latency[far] - latency["cloud"]) / args.delay_ms
    on, off = polls["pool, shared cache on"], polls["pool, shared cache off"]
    plain, argon = polls["dovecot PLAIN"][0], polls["dovecot argon2id"][0]
    print("\n| figure (issue 24) | this run | target |\n|---|---|---|")
    print(f"| polling every {args.poll_interval} s over 3 frontends ({args.poll_users} users), pool-wide cache on: "
          f"server CPU per full session | {on[0]:.2f} ms = {on[0] / plain:.2f}x Dovecot PLAIN ({plain:.2f} ms) | "
          f"at most 1x |")
    print(f"| the same, argon2id checks per login | {on[1]:.2f} | at most 0.1 |")
    failed = {name: result[2] for name, result in polls.items() if result[2]}
    if failed:
        print(f"| polls that failed (counted in no figure) | {failed} | none |")
    print(f"| the same with the pool-wide cache off | {off[0]:.2f} ms = {off[0] / plain:.2f}x, {off[1]:.2f} checks "
          f"per login (Dovecot argon2id: {argon:.2f} ms) | stated |")
    print(f"| cloud, cache warm: server CPU per full session | {session_cpu['cloud']:.2f} ms = "
          f"{session_cpu['cloud'] / dovecot:.2f}x Dovecot PLAIN ({dovecot:.2f} ms) | at most 0.6x |")
    print(f"| server CPU per S3 request ((cloud - embedded) / {s3_per_session:.1f} requests) | {per_request:.3f} ms | "
          f"at most 0.15 ms |")
    print(f"| {args.delay_ms} ms per S3 request: one client's full session (20 RETR) | {latency[far]:.0f} ms, "
          f"{trips:.1f} round trips more than at 0 ms ({latency['cloud']:.0f} ms) | at most 6 |")


if __name__ == "__main__":
    main()
