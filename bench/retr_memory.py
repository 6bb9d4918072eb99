#!/usr/bin/env python3
"""Benchmark: resident memory of `cloudpop serve` while a large message is retrieved.

Target (DESIGN.md promise 7): RETR of a 200 MB message raises the server's resident memory by
less than 16 MiB. Run: `cargo build --release && python3 bench/retr_memory.py [SIZE_MB]`.
Prints the server's RSS before, its peak during RETR, the growth, and the throughput.
"""
import os, socket, subprocess, sys, tempfile, threading, time

BIN = os.environ.get("CLOUDPOP_BIN", "target/release/cloudpop")
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SIZE_MB = int(ARGS[0]) if ARGS else 200
CLOUD = "--cloud" in sys.argv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(1000):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"port {port} never opened")


def start_cloud(root):
    """Starts s3s-fs and redis-server; returns their processes and the environment for cloudpop."""
    s3_port, redis_port = free_port(), free_port()
    os.makedirs(f"{root}/s3/bench")
    procs = [
        subprocess.Popen(["s3s-fs", "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", "bench",
                          "--secret-key", "bench-secret", f"{root}/s3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL),
    ]
    wait_port(s3_port)
    wait_port(redis_port)
    env = dict(os.environ, CLOUDPOP_STORE="s3", CLOUDPOP_LOCKS="redis", CLOUDPOP_S3_BUCKET="bench",
               CLOUDPOP_S3_ENDPOINT=f"http://127.0.0.1:{s3_port}", CLOUDPOP_S3_PATH_STYLE="true",
               CLOUDPOP_S3_ACCESS_KEY_ID="bench", CLOUDPOP_S3_SECRET_ACCESS_KEY="bench-secret",
               CLOUDPOP_REDIS_URL=f"redis://127.0.0.1:{redis_port}")
    return procs, env


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(field)


def main():
    data = tempfile.mkdtemp(prefix="cloudpop-bench-")
    helpers, env = start_cloud(data) if CLOUD else ([], dict(os.environ))
    run = lambda *a, **kw: subprocess.run([BIN, *a, "--data-dir", data], check=True, capture_output=True, env=env, **kw)
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
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
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
        print(f"mode: {'cloud (s3s-fs + redis)' if CLOUD else 'embedded'}; message: {SIZE_MB} MB, {header.decode().strip()}")
        print(f"server RSS before RETR: {before / 1024:.1f} MiB; peak during RETR: {peak / 1024:.1f} MiB")
        print(f"growth: {growth_mib:.1f} MiB (target < 16 MiB) -> {'PASS' if growth_mib < 16 else 'FAIL'}")
        print(f"throughput: {received / elapsed / 1e6:.0f} MB/s over loopback")
        sys.exit(0 if growth_mib < 16 else 1)
    finally:
        for p in [server, *helpers]:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
