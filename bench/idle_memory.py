#!/usr/bin/env python3
"""Memory per idle POP3 connection, before and after login (issue 9, item 5).

Starts `cloudpop serve` (release build) on the embedded store with N accounts of one message
each, warms it up (a burst of parallel logins, so password-hashing threads and allocator arenas
exist before measuring), then:

  1. opens N connections and reads their greetings (idle in AUTHORIZATION),
  2. logs every one of them in (idle in TRANSACTION, maildrop locked, snapshot taken),

and prints the server's resident memory (VmRSS) growth per connection after each step.

    cargo build --release && python3 bench/idle_memory.py [N]
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CLOUDPOP_BIN", os.path.join(ROOT, "target", "release", "cloudpop"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line(sock_file):
    text = sock_file.readline()
    if not text:
        raise RuntimeError("connection closed")
    return text


def main():
    data = tempfile.mkdtemp(prefix="cloudpop-idle-")
    env = dict(os.environ, CLOUDPOP_DATA_DIR=data, CLOUDPOP_MAX_CONNECTIONS=str(N + 100),
               CLOUDPOP_MAX_CONNECTIONS_PER_ADDRESS=str(N + 100), CLOUDPOP_MAX_PENDING_LOGINS=str(N + 100),
               CLOUDPOP_API_LISTEN="", CLOUDPOP_OPS_LISTEN="", CLOUDPOP_LOG="warn",
               CLOUDPOP_AUTH_FAILURE_DELAY_MS="0", CLOUDPOP_THROTTLE_ADDRESS_FAILURES="100000")
    print(f"creating {N} accounts...", flush=True)

    def add(i):
        subprocess.run([BIN, "account", "add", f"u{i}", "--password-stdin"], input=b"pw\n", env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([BIN, "deliver", f"u{i}"], input=b"Subject: x\n\nhello\n", env=env, check=True,
                       stdout=subprocess.DEVNULL)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(N)))
    port = free_port()
    server = subprocess.Popen([BIN, "serve", "--pop3", f"127.0.0.1:{port}", "--pop3s", ""], env=env,
                              stdout=subprocess.PIPE)
    server.stdout.readline()  # "listening": ready
    try:
        def session(i, quit_after=True):
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
            line(f)
            s.sendall(f"USER u{i}\r\nPASS pw\r\n".encode())
            line(f)
            reply = line(f)
            assert reply.startswith(b"+OK"), reply
            if quit_after:
                s.sendall(b"QUIT\r\n")
                line(f)
                s.close()
            return s, f

        with ThreadPoolExecutor(32) as pool:  # warm-up
            list(pool.map(session, range(min(N, 256))))
        time.sleep(1)
        base = rss_kib(server.pid)
        conns = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
            line(f)
            conns.append((s, f))
        time.sleep(1)
        before = rss_kib(server.pid)
        for i, (s, f) in enumerate(conns):
            s.sendall(f"USER u{i}\r\nPASS pw\r\n".encode())
            line(f)
            assert line(f).startswith(b"+OK")
        time.sleep(1)
        after = rss_kib(server.pid)
        print(f"server RSS after warm-up: {base} KiB")
        print(f"{N} idle connections before login: +{before - base} KiB, {(before - base) / N:.1f} KiB each")
        print(f"the same {N} logged in (one message each): +{after - before} KiB more, "
              f"{(after - base) / N:.1f} KiB each in all")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
