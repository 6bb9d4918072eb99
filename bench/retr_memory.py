#!/usr/bin/env python3
"""Benchmark: resident memory of `cloudpop serve` while a large message is retrieved.

Target (DESIGN.md promise 7): RETR of a 200 MB message raises the server's resident memory by
less than 16 MiB. Run: `cargo build --release && python3 bench/retr_memory.py [SIZE_MB]`.
Prints the server's RSS before, its peak during RETR, the growth, and the throughput.
"""
import os, socket, subprocess, sys, tempfile, threading, time

BIN = os.environ.get("CLOUDPOP_BIN", "target/release/cloudpop")
SIZE_MB = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(field)


def main():
    data = tempfile.mkdtemp(prefix="cloudpop-bench-")
    run = lambda *a, **kw: subprocess.run([BIN, *a, "--data-dir", data], check=True, capture_output=True, **kw)
    run("account", "add", "bench", "--password-stdin", input=b"benchpw\n")
    line = b"X" * 76 + b"\r\n"
    with tempfile.NamedTemporaryFile(dir=data, delete=False) as f:
        f.write(b"Subject: bench\r\n\r\n")
        for _ in range(SIZE_MB * 1024 * 1024 // len(line)):
            f.write(line)
        path = f.name
    run("deliver", "bench", path)
    os.unlink(path)

    server = subprocess.Popen([BIN, "serve", "--data-dir", data, "--pop3", "127.0.0.1:0", "--pop3s", ""],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    port = int(server.stdout.readline().decode().rsplit(":", 1)[1])
    try:
        s = socket.create_connection(("127.0.0.1", port))
        r = s.makefile("rb")
        r.readline()
        s.sendall(b"USER bench\r\nPASS benchpw\r\n")
        r.readline(); r.readline()
        # Sample RSS during the transfer: VmHWM would include the argon2 login (19 MiB by design).
        before = status(server.pid, "VmRSS")
        peak, done = [before], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], status(server.pid, "VmRSS"))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        s.sendall(b"RETR 1\r\n")
        header = r.readline()
        started, received = time.monotonic(), 0
        while True:
            chunk = r.readline()
            received += len(chunk)
            if chunk == b".\r\n":
                break
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        peak = peak[0]
        s.sendall(b"QUIT\r\n")
        growth_mib = (peak - before) / 1024
        print(f"message: {SIZE_MB} MB, {header.decode().strip()}")
        print(f"server RSS before RETR: {before / 1024:.1f} MiB; peak during RETR: {peak / 1024:.1f} MiB")
        print(f"growth: {growth_mib:.1f} MiB (target < 16 MiB) -> {'PASS' if growth_mib < 16 else 'FAIL'}")
        print(f"throughput: {received / elapsed / 1e6:.0f} MB/s over loopback")
        sys.exit(0 if growth_mib < 16 else 1)
    finally:
        server.kill()
        server.wait()
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
