"""What the benchmark scripts share: the binary, a server on the embedded store with
provisioned accounts, and the server's resident memory."""

import os
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CLOUDPOP_BIN", os.path.join(ROOT, "target", "release", "cloudpop"))


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


def provision(users, message, **settings):
    """A fresh data directory with accounts u0..u{users-1} (password `pw`), one `message`
    each; returns the environment that points the server at it, with `settings` added."""
    data = tempfile.mkdtemp(prefix="cloudpop-bench-")
    env = dict(os.environ, CLOUDPOP_DATA_DIR=data, CLOUDPOP_API_LISTEN="", CLOUDPOP_OPS_LISTEN="",
               CLOUDPOP_LOG="warn", **{f"CLOUDPOP_{k.upper()}": str(v) for k, v in settings.items()})
    print(f"creating {users} accounts...", flush=True)

    def add(i):
        subprocess.run([BIN, "account", "add", f"u{i}", "--password-stdin"], input=b"pw\n", env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([BIN, "deliver", f"u{i}"], input=message, env=env, check=True, stdout=subprocess.DEVNULL)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(users)))
    return env


def serve(env):
    """Starts the server on a free loopback port (no POP3S); returns (process, port) once ready."""
    port = free_port()
    server = subprocess.Popen([BIN, "serve", "--pop3", f"127.0.0.1:{port}", "--pop3s", ""], env=env,
                              stdout=subprocess.PIPE)
    server.stdout.readline()  # "listening": ready
    return server, port


def enter_quickack_namespace():
    """Re-runs this script in a network namespace of its own whose loopback routes acknowledge
    at once (quickack): Garage and s3s-fs do not set TCP_NODELAY, so a reused connection stalls
    ~40 ms per request on delayed ACKs otherwise, which says nothing about either server."""
    if os.environ.get("CLOUDPOP_BENCH_NETNS"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for route in ("127.0.0.0/8", "127.0.0.1"):
            subprocess.run(["ip", "route", "replace", "local", route, "dev", "lo", "table", "local", "proto",
                            "kernel", "scope", "host", "src", "127.0.0.1", "quickack", "1"], check=True)
        return
    env = dict(os.environ, CLOUDPOP_BENCH_NETNS="1")
    os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], env)


def wait_port(port):
    """Returns once something accepts connections on the loopback port (10 s at most)."""
    import time
    for _ in range(2000):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"port {port} never opened")


def start_s3_and_redis(s3_dir):
    """s3s-fs (bucket `mail`, keys bench/bench-secret) on `s3_dir` and a redis-server, both on
    free loopback ports and answering; returns ([processes], s3 port, redis port)."""
    s3_port, redis_port = free_port(), free_port()
    os.makedirs(os.path.join(s3_dir, "mail"))
    procs = [
        subprocess.Popen(["s3s-fs", "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", "bench",
                          "--secret-key", "bench-secret", s3_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL),
    ]
    wait_port(s3_port)
    wait_port(redis_port)
    return procs, s3_port, redis_port


def cloud_env(s3_endpoint, redis_port, data, **settings):
    """The environment of a `cloudpop` in cloud mode on an s3s-fs of start_s3_and_redis() (or a
    relay in front of it) and its Redis, without API or ops listeners, with `settings` added."""
    return dict(os.environ, CLOUDPOP_STORE="s3", CLOUDPOP_LOCKS="redis", CLOUDPOP_S3_BUCKET="mail",
                CLOUDPOP_S3_ENDPOINT=s3_endpoint, CLOUDPOP_S3_PATH_STYLE="true", CLOUDPOP_S3_ACCESS_KEY_ID="bench",
                CLOUDPOP_S3_SECRET_ACCESS_KEY="bench-secret", CLOUDPOP_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
                CLOUDPOP_LOG="warn", CLOUDPOP_DATA_DIR=data, CLOUDPOP_API_LISTEN="", CLOUDPOP_OPS_LISTEN="",
                **{f"CLOUDPOP_{k.upper()}": str(v) for k, v in settings.items()})


def cpu_seconds(pid):
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(processes):
    """Stops every process (in the order given) and waits for each."""
    for p in processes:
        p.terminate()
        p.wait()
