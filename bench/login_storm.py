#!/usr/bin/env python3
"""Logins per second and server memory under a login storm (issue 10).

Starts `cloudpop serve` (the release build, or CLOUDPOP_BIN) on the embedded store with USERS
accounts of one small message each, then runs CLIENTS concurrent POP3 clients (processes x
threads, so the Python client is not the bottleneck) for SECONDS each workload:

  logins    USER, PASS, QUIT on a fresh connection, round-robin over the accounts
  sessions  USER, PASS, STAT, UIDL, RETR of every message, QUIT

and prints the rate of each, the server's resident memory and threads before, at the end of
the storm, and after 5 s idle (threads bounded by `blocking_threads`; compare, for example,
with CLOUDPOP_BLOCKING_THREADS=512, tokio's own default). Run it twice to compare, for example with CLOUDPOP_CREDENTIAL_CACHE_SECS=0
(every login pays the argon2id verification) and without (repeated logins hit the cache).

    cargo build --release && python3 bench/login_storm.py [SECONDS] [CLIENTS] [USERS]
"""

import multiprocessing
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import BIN, provision, rss_kib, serve

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 15
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 64
USERS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
PROCESSES = 4


def rss_mib(pid):
    return rss_kib(pid) / 1024


def threads_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


class Pop3:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.line()

    def line(self):
        text = self.file.readline()
        if not text:
            raise RuntimeError("connection closed")
        return text

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def multi(self, text):
        self.cmd(text)
        lines = []
        while (line := self.line()) != b".\r\n":
            lines.append(line)
        return lines

    def close(self):
        self.sock.close()


def one(port, user, full):
    c = Pop3(port)
    try:
        c.cmd(f"USER {user}")
        c.cmd("PASS pw")
        if full:
            count = int(c.cmd("STAT").split()[1])
            c.multi("UIDL")
            for n in range(1, count + 1):
                c.multi(f"RETR {n}")
        c.cmd("QUIT")
    finally:
        c.close()


def worker(args):
    port, first, threads, users, seconds, full = args
    done, errors = [0], [0]
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def loop(index):
        # Each thread keeps to its own accounts, so no two clients want one maildrop at once.
        mine = [u for u in range(users) if u % (threads * PROCESSES) == index]
        i = 0
        while time.monotonic() < deadline:
            try:
                one(port, f"u{mine[i % len(mine)]}", full)
                with lock:
                    done[0] += 1
            except (RuntimeError, OSError):
                with lock:
                    errors[0] += 1
            i += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(first, first + threads)))
    return done[0], errors[0]


def storm(port, full, server_pid):
    threads = max(1, CLIENTS // PROCESSES)
    args = [(port, p * threads, threads, USERS, SECONDS, full) for p in range(PROCESSES)]
    started = time.monotonic()
    with multiprocessing.Pool(PROCESSES) as pool:
        results = pool.map(worker, args)
    took = time.monotonic() - started
    done = sum(d for d, _ in results)
    errors = sum(e for _, e in results)
    return done / took, errors, rss_mib(server_pid), threads_of(server_pid)


def main():
    if USERS < CLIENTS:
        sys.exit("USERS must be at least CLIENTS (each client keeps to its own accounts)")
    env = provision(USERS, b"Subject: x\n\n" + b"hello world\n" * 800, max_connections=CLIENTS * 4,
                    max_connections_per_address=CLIENTS * 4, throttle_address_failures=1000000)
    server, port = serve(env)
    try:
        print(f"{CLIENTS} clients, {USERS} accounts, {SECONDS:.0f} s per workload, {BIN}")
        print(f"server RSS at start: {rss_mib(server.pid):.0f} MiB, {threads_of(server.pid)} threads")
        for name, full in [("logins", False), ("sessions", True)]:
            rate, errors, rss, threads = storm(port, full, server.pid)
            print(f"{name:9} {rate:8.1f}/s  errors {errors}  server at the end: RSS {rss:.0f} MiB, {threads} threads",
                  flush=True)
        time.sleep(5)
        print(f"server after 5 s idle: RSS {rss_mib(server.pid):.0f} MiB, {threads_of(server.pid)} threads")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
