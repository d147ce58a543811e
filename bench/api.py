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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gopherq-bench-api-") as tmp:
        run_dir = Path(tmp)
        redis_server = RedisServer(run_dir).start()
        port = free_port()
        config = run_dir / "gopherq.toml"
        config.write_text(
            f'[redis]\nurl = "redis://127.0.0.1:{redis_server.port}/0"\n[queue]\nname = "{QUEUE}"\n'
            f'[web]\nport = {port}\ntoken = "{TOKEN}"\n[logging]\nlevel = "WARNING"\n'
        )
        log = (run_dir / "api.log").open("wb")
        server = subprocess.Popen(
            [_gopherq(), "api", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            import urllib.request

            def up() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                        return response.status == 200
                except OSError:
                    return False

            wait_for(up, 30, "the API server")
            url = f"http://127.0.0.1:{port}/v1/queues/{QUEUE}/tasks"
            print(f"| workload | tasks/s (median of {args.reps}) | min | max |")
            print("|---|---|---|---|")
            for name, batch in (("single POST", 0), (f"batch of {args.batch}", args.batch)):
                rates = []
                for rep in range(args.reps):
                    redis_server.flush()
                    rate = measure(url, args.seconds, args.connections, batch, args.clients, f"{name[:1]}{rep}")
                    with redis_server.client() as check:
                        queued = check.llen(QUEUE)
                    assert queued >= rate * args.seconds * 0.9, f"{queued} tasks queued, fewer than accepted"
                    rates.append(rate)
                rates.sort()
                print(f"| {name} | {rates[len(rates) // 2]:,.0f} | {rates[0]:,.0f} | {rates[-1]:,.0f} |")
        finally:
            stop_process(server)
            log.close()
            redis_server.stop()


if __name__ == "__main__":
    main()
