"""Dramatiq on its Redis broker.

Client: `actor.send()` per task (no bulk enqueue). Worker: `dramatiq --processes 1 --threads N`;
no-op and latency: 8 threads (the default); HTTP: c threads with requests. Retries off for the benchmark actors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import tasks
from bench.peers import SyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)
NOOP_THREADS = 8


@dramatiq.actor(queue_name=QUEUE, max_retries=0, actor_name="noop")
def noop() -> None:
    tasks.noop()


@dramatiq.actor(queue_name=QUEUE, max_retries=0, actor_name="mark")
def mark(path: str, label: str) -> None:
    tasks.mark(path, label)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, actor_name="probe")
def probe(path: str, t0: float) -> None:
    tasks.probe(path, t0)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, actor_name="http")
def http(url: str) -> None:
    tasks.http_get(url)


ACTORS = {"noop": noop, "mark": mark, "probe": probe, "http": http}


class DramatiqPeer(SyncPeer):
    name = "dramatiq"
    label = "Dramatiq"
    dist = "dramatiq"
    http_client = "requests (Session per thread)"
    configs = {
        "noop": f"`dramatiq --processes 1 --threads {NOOP_THREADS}`",
        "http": "`dramatiq --processes 1 --threads <c>`, requests",
        "latency": f"`dramatiq --processes 1 --threads {NOOP_THREADS}`",
    }

    def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        ACTORS[kind].send(*args)

    def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        threads = spec.concurrency if spec.workload == "http" else NOOP_THREADS
        argv = [self.exe("dramatiq"), "bench.peers.dramatiq", "--processes", "1", "--threads", str(threads)]
        return [*argv, "--queues", QUEUE], {}
