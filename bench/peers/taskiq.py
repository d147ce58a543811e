"""taskiq with taskiq-redis's ListQueueBroker (LPUSH / BRPOP).

Client: `task.kiq()` per task (no bulk enqueue). Worker: `taskiq worker --workers 1 --no-parse`
(one worker process under taskiq's supervisor process), log level WARNING, no result backend;
no-op and latency: `--max-async-tasks 100`; HTTP: `--max-async-tasks <c>` with aiohttp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskiq_redis import ListQueueBroker

from bench import tasks
from bench.peers import AsyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

NOOP_TASKS = 100

broker = ListQueueBroker(url=REDIS_URL, queue_name=QUEUE)


@broker.task(task_name="noop")
async def noop() -> None:
    await tasks.anoop()


@broker.task(task_name="mark")
async def mark(path: str, label: str) -> None:
    await tasks.amark(path, label)


@broker.task(task_name="probe")
async def probe(path: str, t0: float) -> None:
    await tasks.aprobe(path, t0)


@broker.task(task_name="http")
async def http(url: str) -> None:
    await tasks.ahttp_get(url)


TASKS = {"noop": noop, "mark": mark, "probe": probe, "http": http}


class TaskiqPeer(AsyncPeer):
    name = "taskiq"
    label = "taskiq"
    dist = "taskiq"
    http_client = "aiohttp (one session per worker)"
    configs = {
        "noop": f"`taskiq worker --workers 1 --no-parse --max-async-tasks {NOOP_TASKS}`, ListQueueBroker",
        "http": "`taskiq worker --workers 1 --no-parse --max-async-tasks <c>`, aiohttp",
        "latency": f"`taskiq worker --workers 1 --no-parse --max-async-tasks {NOOP_TASKS}`",
    }

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        await TASKS[kind].kiq(*args)

    async def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        limit = spec.concurrency if spec.workload == "http" else NOOP_TASKS
        argv = [self.exe("taskiq"), "worker", "bench.peers.taskiq:broker", "--workers", "1", "--no-parse"]
        return [*argv, "--max-async-tasks", str(limit), "--log-level", "WARNING"], {}
