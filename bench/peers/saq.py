"""SAQ (Simple Async Queue) on Redis.

Client: `Queue.enqueue()` per task (no bulk enqueue; `map`/`batch` wait for results), job records not kept
(`ttl=-1`). Worker: `saq bench.peers.saq.settings --workers 1`; no-op and latency: concurrency 100;
HTTP: concurrency c with aiohttp.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

from bench import tasks
from bench.peers import AsyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

NOOP_CONCURRENCY = 100
KWARGS = {"noop": (), "mark": ("path", "label"), "probe": ("path", "t0"), "http": ("url",)}


async def noop(ctx: dict[str, Any]) -> None:
    await tasks.anoop()


async def mark(ctx: dict[str, Any], *, path: str, label: str) -> None:
    await tasks.amark(path, label)


async def probe(ctx: dict[str, Any], *, path: str, t0: float) -> None:
    await tasks.aprobe(path, t0)


async def http(ctx: dict[str, Any], *, url: str) -> None:
    await tasks.ahttp_get(url)


def make_queue() -> RedisQueue:
    """redis-py's asyncio pool raises past 100 connections instead of waiting; c=500 needs more."""
    return RedisQueue(Redis.from_url(REDIS_URL, max_connections=2000), name=QUEUE)


queue = make_queue()
settings = {
    "queue": queue,
    "functions": [noop, mark, probe, http],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", NOOP_CONCURRENCY)),
}


class SaqPeer(AsyncPeer):
    name = "saq"
    label = "SAQ"
    dist = "saq"
    http_client = "aiohttp (one session per worker)"
    configs = {
        "noop": f"`saq --workers 1`, concurrency {NOOP_CONCURRENCY}, job ttl -1 (not kept)",
        "http": "`saq --workers 1`, concurrency <c>, aiohttp",
        "latency": f"`saq --workers 1`, concurrency {NOOP_CONCURRENCY}",
    }

    async def open(self) -> None:
        self.queue = make_queue()
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        await self.queue.enqueue(kind, ttl=-1, **dict(zip(KWARGS[kind], args, strict=True)))

    async def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        concurrency = spec.concurrency if spec.workload == "http" else NOOP_CONCURRENCY
        return [self.exe("saq"), "bench.peers.saq.settings", "--workers", "1"], {"BENCH_CONCURRENCY": str(concurrency)}
