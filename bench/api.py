"""The `/v1` enqueue API's throughput: a `gopherq api` process on loopback and a load generator against it.

    python -m bench.api [--seconds 10] [--connections 64] [--batch 1000] [--reps 3]

Starts a private redis-server and one `gopherq api` server process (token auth on, as in production), then for
each workload keeps `--connections` concurrent keep-alive connections busy for `--seconds`, each sending POSTs one
after another: `single` posts one task per request, `batch` posts `{"tasks": [...]}` of `--batch` tasks. Every
task has a fresh id, so every one is really created (idempotency marker and push in one Lua call). The rate is
tasks accepted (201) per second of the window; the ready list's length afterwards is checked against it. The load
generator is a minimal HTTP/1.1 client in this process (one event loop; `--clients N` forks N of them).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.services import RedisServer, free_port, stop_process, wait_for

TOKEN = "bench-token-0123456789abcdef"
QUEUE = "bench_api"
#: What the tasks would call (nothing runs them): a host name, as producers' tasks have.
TARGET = "https://api.partner.example/v1/hook"


async def _load(url: str, seconds: float, connections: int, batch: int, prefix: str) -> int:
    """Keep `connections` keep-alive connections busy for `seconds`; returns the tasks accepted (201).

    A minimal HTTP/1.1 client on asyncio streams (write a request, read the status line, headers and a
    Content-Length body): a full client library costs about as much CPU per request as the server, and on a small
    machine the measurement would then be of the load generator."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.partition(":")
    path = "/" + rest
    counter = itertools.count()
    accepted = 0
    deadline = time.monotonic() + seconds

    def task(task_id: str) -> str:
        return f'{{"id":"{task_id}","method":"POST","url":"{TARGET}","body":{{"n":1}}}}'

    def request(n: int) -> bytes:
        if batch:
            body = ('{"tasks":[' + ",".join(task(f"{prefix}-{n}-{i}") for i in range(batch)) + "]}").encode()
        else:
            body = task(f"{prefix}-{n}").encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def one() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection(address, int(port))
        try:
            while time.monotonic() < deadline:
                writer.write(request(next(counter)))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status == 201:
                    accepted += batch or 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return accepted


def _client(args: tuple[str, float, int, int, str]) -> int:
    return asyncio.run(_load(*args))


def measure(url: str, seconds: float, connections: int, batch: int, clients: int, tag: str) -> float:
    jobs = [(url, seconds, max(1, connections // clients), batch, f"{tag}-{c}") for c in range(clients)]
    started = time.monotonic()
    if clients == 1:
        accepted = _client(jobs[0])
    else:
        with multiprocessing.Pool(clients) as pool:
            accepted = sum(pool.map(_client, jobs))
    return accepted / (time.monotonic() - started)


def _gopherq() -> str:
    return shutil.which("gopherq", path=str(Path(sys.executable).parent)) or "gopherq"


class ApiServer:
    """One `gopherq api` process on a free loopback port, against the given Redis, with token auth on."""

    def __init__(self, run_dir: Path, redis: RedisServer) -> None:
        self.run_dir = run_dir
        self.redis = redis
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/queues/{QUEUE}/tasks"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = itertools.count()

    def start(self) -> ApiServer:
        config = self.run_dir / "gopherq-api.toml"
        config.write_text(
            f'[redis]\nurl = "{self.redis.url}"\n[queue]\nname = "{QUEUE}"\n'
            f'[web]\nport = {self.port}\ntoken = "{TOKEN}"\n[logging]\nlevel = "WARNING"\n'
        )
        log = (self.run_dir / "api.log").open("wb")
        self.proc = subprocess.Popen(
            [_gopherq(), "api", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        wait_for(self._up, 30, "the API server")
        return self

    def _up(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def measure(self, seconds: float, batch: int, connections: int = 64, clients: int = 1) -> float:
        """Tasks created per second over `seconds` (single-task POSTs when `batch` is 0); checks they are queued."""
        self.redis.flush()
        rate = measure(self.url, seconds, connections, batch, clients, f"r{next(self.runs)}")
        with self.redis.client() as check:
            queued = check.llen(QUEUE)
        if queued < rate * seconds * 0.9:
            raise RuntimeError(f"{queued} tasks queued, fewer than the {rate * seconds:.0f} accepted")
        return rate

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-api-") as tmp:
        redis_server = RedisServer(Path(tmp)).start()
        server = ApiServer(Path(tmp), redis_server).start()
        try:
            print(f"| workload | tasks/s (median of {args.reps}) | min | max |")
            print("|---|---|---|---|")
            for name, batch in (("single POST", 0), (f"batch of {args.batch}", args.batch)):
                rates = sorted(
                    server.measure(args.seconds, batch, args.connections, args.clients) for _ in range(args.reps)
                )
                print(f"| {name} | {rates[len(rates) // 2]:,.0f} | {rates[0]:,.0f} | {rates[-1]:,.0f} |")
        finally:
            server.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
