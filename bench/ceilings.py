"""The limits every figure is read against: HTTP clients with no queue at all, Redis round trips, and GoPherQ's
delivery protocol (claim + settle Lua scripts) with no executor.

HTTP: N GETs against the same nginx with c requests in flight, by the clients the systems use: GoPherQ's (its
transport called directly: its own aiohttp-backed one by default, httpx's httpcore with `transport = "httpx"`),
the general-purpose `httpx-aiohttp` transport (for comparison), raw aiohttp (the async peers), and requests with
c threads (the sync peers). Redis: redis-benchmark on the private server.
Protocol: one Python process claiming batches of 200 and acknowledging them, the most a GoPherQ worker could do
on this Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.peers import run_async


async def _drive(count: int, concurrency: int, get: Any, window: float) -> float:
    """Run `get(i)` for i < count with `concurrency` in flight, for at most `window` seconds (a slow client
    would otherwise take minutes); returns requests per second."""
    counter = iter(range(count))
    start = time.perf_counter()
    done = 0

    async def lane() -> None:
        nonlocal done
        for i in counter:
            await get(i)
            done += 1
            if time.perf_counter() - start > window:
                return

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def transport_rate(url: str, count: int, concurrency: int, transport: str, window: float) -> float:
    """An HTTP client driven as GoPherQ's executor drives its transport, with the pool sized to the concurrency:
    `gopherq` (GoPherQ's aiohttp transport, with the executor's own request and answer records: plugins/http/
    wire.py), or an httpx transport through `handle_async_request`: `httpx-aiohttp` or `httpx` (httpcore)."""
    import httpx

    if transport == "gopherq":
        return await _gopherq_rate(url, count, concurrency, window)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client: httpx.AsyncBaseTransport
    if transport == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport as GeneralAiohttpTransport

        client = GeneralAiohttpTransport(limits=limits)
    else:
        client = httpx.AsyncHTTPTransport(limits=limits)
    try:

        async def get(i: int) -> None:
            response = await client.handle_async_request(httpx.Request("GET", f"{url}/{i}"))
            try:
                await response.aread()
            finally:
                await response.aclose()
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

        await _drive(min(count, concurrency), concurrency, get, window)  # open the connections first
        return await _drive(count, concurrency, get, window)
    finally:
        await client.aclose()


async def _gopherq_rate(url: str, count: int, concurrency: int, window: float) -> float:
    from gopherq.plugins.http.aiohttp_transport import AiohttpTransport
    from gopherq.plugins.http.wire import Outgoing, target

    client = AiohttpTransport(concurrency)
    try:

        async def get(i: int) -> None:
            response = await client.send(Outgoing("GET", target(f"{url}/{i}"), {}, b"", None))
            await response.read(1 << 20)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

        await _drive(min(count, concurrency), concurrency, get, window)  # open the connections first
        return await _drive(count, concurrency, get, window)
    finally:
        await client.aclose()


async def aiohttp_rate(url: str, count: int, concurrency: int, window: float) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def get(i: int) -> None:
            async with session.get(f"{url}/{i}") as response:
                await response.read()
                response.raise_for_status()

        await _drive(min(count, concurrency), concurrency, get, window)
        return await _drive(count, concurrency, get, window)


def requests_rate(url: str, count: int, concurrency: int) -> float:
    from bench.tasks import http_get

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: http_get(f"{url}/{i}"), range(concurrency)))
        start = time.perf_counter()
        list(pool.map(lambda i: http_get(f"{url}/{i}"), range(count)))
        return count / (time.perf_counter() - start)  # requests manages ~1,000/s: count is kept small


CLIENT_MODULES = {
    "requests": "requests",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "httpx-aiohttp": "httpx_aiohttp",
    "gopherq": "gopherq.plugins.http.aiohttp_transport",
}


def available(client: str) -> bool:
    """Whether this environment has the client (the smoke run's test environment has no requests)."""
    import importlib.util

    return importlib.util.find_spec(CLIENT_MODULES[client]) is not None


def in_fresh_interpreter(*args: str) -> float:
    """Run one ceiling measurement in a new Python process (`python -m bench.ceilings ...`) and return its figure.

    The harness process has run a whole benchmark by then: its heap (and so its garbage collector's passes) and
    its imported clients would weigh on a measurement taken in it, by as much as 20 % between runs."""
    argv = [sys.executable, "-m", "bench.ceilings", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'failed'}"
        )
    return float(out.stdout.strip().splitlines()[-1])


def http_ceiling(client: str, base_url: str, count: int, concurrency: int, window: float = 10.0) -> float:
    """Requests per second of `client` doing `count` GETs (or as many as it does in `window` seconds), measured
    in a fresh interpreter."""
    return in_fresh_interpreter("http", client, base_url, str(count), str(concurrency), str(window))


def _http_ceiling_here(client: str, base_url: str, count: int, concurrency: int, window: float) -> float:
    url = f"{base_url}/ceil-{uuid.uuid4().hex[:8]}"
    if client == "requests":
        return requests_rate(url, count, concurrency)
    if client == "aiohttp":
        return float(run_async(aiohttp_rate(url, count, concurrency, window)))
    return float(run_async(transport_rate(url, count, concurrency, client, window)))


def redis_benchmark(port: int, requests: int) -> dict[str, float]:
    """Requests per second of PING with 1 client (one round trip at a time) and of PING/LPUSH with 50."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    out: dict[str, float] = {}
    runs = {"PING, 1 client": ["-c", "1", "-t", "ping"], "PING, 50 clients": ["-c", "50", "-t", "ping"]}
    runs["LPUSH, 50 clients"] = ["-c", "50", "-t", "lpush"]
    for name, extra in runs.items():
        args = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "--csv", *extra]
        text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        rates = [float(line.split(",")[1].strip('"')) for line in text.splitlines()[1:] if line.count(",") >= 1]
        if rates:
            out[name] = max(rates)  # PING runs PING_INLINE and PING_MBULK: the better of the two
    return out


async def _protocol_rate(redis_url: str, count: int, batch: int) -> float:
    from redis.asyncio import Redis

    from gopherq.core.broker import Broker, Settlement

    queue = f"ceil{uuid.uuid4().hex[:6]}"
    redis = Redis.from_url(redis_url)
    try:
        broker = Broker(redis, queue, "ceiling:1:0")
        envelope = b'{"id":"%d","type":"pycall","function":"bench.tasks:anoop","args":[]}'
        for start in range(0, count, 1000):
            await redis.rpush(queue, *[envelope % i for i in range(start, min(count, start + 1000))])
        result = b'{"status":"succeeded","attempts":1}'
        begin = time.perf_counter()
        done = 0
        while done < count:
            claimed = await broker.claim(batch, 60_000)
            if not claimed:
                break
            items = [Settlement("ack", token, str(i), result=result) for i, (token, _raw) in enumerate(claimed)]
            await broker.settle(items, 60, 1000)
            done += len(claimed)
        return done / (time.perf_counter() - begin)
    finally:
        await redis.flushall()
        await redis.aclose()


def protocol_ceiling(redis_url: str, count: int, batch: int = 200) -> float:
    """Tasks per second through claim + settle with no executor, measured in a fresh interpreter."""
    return in_fresh_interpreter("protocol", redis_url, str(count), str(batch))


def main(argv: list[str]) -> None:
    """`python -m bench.ceilings http CLIENT URL COUNT CONCURRENCY WINDOW` or `... protocol REDIS_URL COUNT BATCH`:
    prints the figure."""
    if argv[0] == "http":
        client, url, count, concurrency, window = argv[1:6]
        print(_http_ceiling_here(client, url, int(count), int(concurrency), float(window)))
    elif argv[0] == "protocol":
        redis_url, count, batch = argv[1:4]
        print(float(run_async(_protocol_rate(redis_url, int(count), int(batch)))))
    else:
        raise SystemExit(f"unknown ceiling {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
