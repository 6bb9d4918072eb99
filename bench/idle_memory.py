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

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import provision, rss_kib, serve

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def line(sock_file):
    text = sock_file.readline()
    if not text:
        raise RuntimeError("connection closed")
    return text


def main():
    env = provision(N, b"Subject: x\n\nhello\n", max_connections=N + 100, max_connections_per_address=N + 100,
                    max_pending_logins=N + 100, auth_failure_delay_ms=0, throttle_address_failures=100000)
    server, port = serve(env)
    try:
        def session(i, quit_after=True):
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
            line(f)
            s.sendall(f"USER u{i}\r\nPASS pw\r\n".encode())
            line(f)
            reply = line(f)
            if not reply.startswith(b"+OK"):
                raise SystemExit(f"login refused: {reply!r}")
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
            if not (status := line(f)).startswith(b"+OK"):
                raise SystemExit(f"refused: {status!r}")
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
