"""Huey on Redis (blocking pops).

Client: calling the task enqueues it (no bulk enqueue); results off. Worker: `huey_consumer -k thread -w N`;
no-op and latency: 1 worker thread; HTTP: c worker threads with requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from huey import RedisHuey
from redis import ConnectionPool

from bench import tasks
from bench.peers import SyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

# Every consumer thread pops on its own connection; redis-py's pool holds 100 unless told otherwise.
huey = RedisHuey(
    QUEUE, results=False, blocking=True, connection_pool=ConnectionPool.from_url(REDIS_URL, max_connections=2000)
)


@huey.task(name="noop")
def noop() -> None:
    tasks.noop()


@huey.task(name="mark")
def mark(path: str, label: str) -> None:
    tasks.mark(path, label)


@huey.task(name="probe")
def probe(path: str, t0: float) -> None:
    tasks.probe(path, t0)


@huey.task(name="http")
def http(url: str) -> None:
    tasks.http_get(url)


TASKS = {"noop": noop, "mark": mark, "probe": probe, "http": http}


class HueyPeer(SyncPeer):
    name = "huey"
    label = "Huey"
    dist = "huey"
    http_client = "requests (Session per thread)"
    configs = {
        "noop": "`huey_consumer -k thread -w 1`, results off",
        "http": "`huey_consumer -k thread -w <c>`, requests",
        "latency": "`huey_consumer -k thread -w 1`",
    }

    def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        TASKS[kind](*args)

    def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        workers = spec.concurrency if spec.workload == "http" else 1
        argv = [self.exe("huey_consumer"), "bench.peers.huey.huey", "-k", "thread", "-w", str(workers), "-q"]
        return argv, {}
