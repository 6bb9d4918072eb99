#!/usr/bin/env python3
"""Where a cloud-mode session's CPU goes: a CPU profile of the release server, as a flame graph.

Starts s3s-fs and redis-server on loopback (in a network namespace whose loopback acknowledges
at once, as bench/latency.py does), the release `cloudpop serve` in cloud mode, and one account
with 20 messages of about 11 KB. Then runs bench/latency.py's session (login, STAT, UIDL, RETR
1..20, QUIT; read-ahead on) in a loop for SECONDS and reports the server's CPU per session.
`--store fs` runs the same session from local files (still with Redis locks), the baseline
that shows what the S3 path adds.

With `--svg FILE` it records the server with Debian's `perf` (`perf record -g --call-graph
dwarf`) meanwhile and draws the flame graph with inferno (`cargo install --locked inferno
--version 0.12.8`, installed on first use). Profiling slows the server, so the CPU figure of a
profiled run is not the one to quote.

    cargo build --release && python3 bench/profile.py [--seconds 15] [--store s3|fs] [--svg docs/x.svg]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, cloud_env, cpu_seconds, enter_quickack_namespace, start_s3_and_redis, stop  # noqa: E402
from latency import reader_server, session  # noqa: E402

INFERNO_VERSION = "0.12.8"


def inferno(tool):
    """The path of an inferno tool, installing inferno with cargo when it is missing."""
    found = shutil.which(tool)
    if found:
        return found
    root = os.path.join(os.path.dirname(BIN), "..", "tools")
    path = os.path.join(root, "bin", tool)
    if not os.path.exists(path):
        subprocess.run(["cargo", "install", "--locked", "inferno", "--version", INFERNO_VERSION, "--root", root],
                       check=True)
    return path


def flame_graph(data, svg):
    script = subprocess.run(["perf", "script", "-i", data], check=True, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL).stdout
    folded = subprocess.run([inferno("inferno-collapse-perf")], input=script, check=True,
                            stdout=subprocess.PIPE).stdout
    with open(svg, "wb") as out:
        subprocess.run([inferno("inferno-flamegraph"), "--title", "cloudpop, cloud-mode sessions (20 x RETR)",
                        "--width", "1600", "--minwidth", "2"], input=folded, check=True, stdout=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--store", choices=["s3", "fs"], default="s3")
    parser.add_argument("--svg", help="record with perf and write the flame graph here")
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    svg = os.path.abspath(args.svg) if args.svg else None
    if svg:
        inferno("inferno-flamegraph")  # before the clock starts
    enter_quickack_namespace()
    work = tempfile.mkdtemp(prefix="cloudpop-profile-")
    helpers = []
    try:
        started, s3_port, redis_port = start_s3_and_redis(os.path.join(work, "s3"))
        helpers += started
        env = cloud_env(f"http://127.0.0.1:{s3_port}", redis_port, os.path.join(work, "data"), store=args.store)
        server, pop3 = reader_server(env)
        helpers.insert(0, server)
        session(pop3)  # warm: the account cache, the credential cache, connections
        perf = None
        data = os.path.join(work, "perf.data")
        if svg:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p",
                                     str(server.pid), "-o", data], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            # perf attaches while this session runs; it is not counted.
            session(pop3)
        cpu, began, sessions = cpu_seconds(server.pid), time.monotonic(), 0
        while time.monotonic() - began < args.seconds:
            session(pop3)
            sessions += 1
        cpu = cpu_seconds(server.pid) - cpu
        wall = time.monotonic() - began
        print(f"{args.store}: {sessions} sessions, server CPU {cpu * 1000 / sessions:.2f} ms per session, "
              f"{wall * 1000 / sessions:.1f} ms wall per session{' (profiled)' if perf else ''}")
        if perf:
            perf.send_signal(2)
            perf.wait()
            flame_graph(data, svg)
            print(f"flame graph: {svg}")
    finally:
        stop(helpers)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
