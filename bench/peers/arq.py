"""arq (asyncio, Redis).

Client: `ArqRedis.enqueue_job()` per task (no bulk enqueue). Worker: `arq bench.peers.arq.WorkerSettings`,
results not kept, `poll_delay` 0.01 s (the default 0.5 s sleeps between polls even when the queue is busy);
no-op and latency: `max_jobs` 100; HTTP: `max_jobs` c with aiohttp.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench import tasks
from bench.peers import AsyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

NOOP_JOBS = 100
POLL_DELAY = 0.01


async def noop(ctx: dict[str, Any]) -> None:
    await tasks.anoop()


async def mark(ctx: dict[str, Any], path: str, label: str) -> None:
    await tasks.amark(path, label)


async def probe(ctx: dict[str, Any], path: str, t0: float) -> None:
    await tasks.aprobe(path, t0)


async def http(ctx: dict[str, Any], url: str) -> None:
    await tasks.ahttp_get(url)


class WorkerSettings:
    functions = [noop, mark, probe, http]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", NOOP_JOBS))
    keep_result = 0
    poll_delay = POLL_DELAY
    max_tries = 1
    log_results = False


class ArqPeer(AsyncPeer):
    name = "arq"
    label = "arq"
    dist = "arq"
    http_client = "aiohttp (one session per worker)"
    configs = {
        "noop": f"`max_jobs={NOOP_JOBS}`, `poll_delay={POLL_DELAY}`, `keep_result=0`",
        "http": f"`max_jobs=<c>`, `poll_delay={POLL_DELAY}`, aiohttp",
        "latency": f"`max_jobs={NOOP_JOBS}`, `poll_delay={POLL_DELAY}`",
    }

    async def open(self) -> None:
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(REDIS_URL))

    async def close(self) -> None:
        await self.pool.aclose()

    async def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        await self.pool.enqueue_job(kind, *args, _queue_name=QUEUE)

    async def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        jobs = spec.concurrency if spec.workload == "http" else NOOP_JOBS
        return [self.exe("arq"), "bench.peers.arq.WorkerSettings"], {"BENCH_CONCURRENCY": str(jobs)}
