"""What the benchmarks run against, all on loopback: a private redis-server and an HTTP target (nginx).

Both are started on free ports in the run directory and stopped when the harness leaves. The HTTP target
logs `<unix time> <uri>` per request; the harness times an HTTP run from that log (first to last request of
the run's own URL prefix), so no task has to report anything and the count proves every request was made.
Without nginx (the smoke run in the test environment) a small asyncio server writes the same log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """A throwaway redis-server on a free loopback port: no persistence, flushed between measurements."""

    def __init__(self, run_dir: Path, prefix: list[str] | None = None) -> None:
        #: A command the server runs under (bench/instructions.py: valgrind's callgrind), or none.
        self.prefix = prefix or []
        self.dir = run_dir / "redis"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench: redis-server not found: apt-get install -y redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [*self.prefix, binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 60 if self.prefix else 10, "redis-server")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class HttpTarget:
    """nginx with bench/nginx.conf when installed (or installable), else bench/httpserver.py; same log format."""

    def __init__(self, run_dir: Path, allow_fallback: bool) -> None:
        self.dir = run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run_dir / "access.log"
        self.allow_fallback = allow_fallback
        self.kind = ""
        self.version = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HttpTarget:
        forced = os.environ.get("BENCH_HTTP_TARGET")  # "python" forces the fallback server (to test it)
        nginx = None if forced == "python" else find_nginx(install=not self.allow_fallback)
        if nginx is not None:
            self._start_nginx(nginx)
        elif self.allow_fallback:
            self._start_python()
        else:
            raise SystemExit(
                "bench: nginx is needed as the HTTP target and could not be installed; as root run "
                "`apt-get update && apt-get install -y nginx-light`, then try again"
            )
        wait_for(self._answers, 10, f"HTTP target {self.kind}")
        return self

    def _start_nginx(self, nginx: str) -> None:
        for sub in ("nginx-body", "nginx-proxy", "nginx-fastcgi"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        template = (BENCH_DIR / "nginx.conf").read_text()
        conf.write_text(template.replace("{run_dir}", str(self.dir)).replace("{port}", str(self.port)))
        self.proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "nginx-error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.kind = "nginx"
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        self.version = (out.stderr or out.stdout).strip().rpartition("/")[2]

    def _start_python(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.httpserver", "--port", str(self.port), "--log", str(self.log)],
            cwd=BENCH_DIR.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.kind = "python (bench/httpserver.py)"
        self.version = sys.version.split()[0]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def times(self, prefix: str) -> list[float]:
        """Request times (unix seconds) of every logged request whose URI starts with `/prefix/`."""
        needle = f" /{prefix}/"
        out: list[float] = []
        with contextlib.suppress(FileNotFoundError), self.log.open() as handle:
            for line in handle:
                if needle in line:
                    out.append(float(line.split(" ", 1)[0]))
        return out

    def count(self, prefix: str) -> int:
        return len(self.times(prefix))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def find_nginx(install: bool) -> str | None:
    """nginx on PATH (or in /usr/sbin); with `install`, apt-get it when running as root."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("bench: installing nginx-light (apt-get) for the HTTP target...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx-light"]):
        if subprocess.run(args, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            return None
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
