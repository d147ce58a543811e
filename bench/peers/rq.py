"""RQ (Redis Queue).

Client: `Queue.enqueue()` per task; bulk: `Queue.enqueue_many()` (one pipeline per 1,000), results not kept.
Worker: `rq worker` with `SimpleWorker` (runs jobs in the worker process instead of forking one child per job,
which is RQ's default and far slower), log level WARNING. RQ runs one job at a time per worker process, so
the HTTP workloads run sequentially whatever c is; requests is the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue

from bench import tasks
from bench.peers import SyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

FUNCS = {"noop": tasks.noop, "mark": tasks.mark, "probe": tasks.probe, "http": tasks.http_get}


class RQPeer(SyncPeer):
    name = "rq"
    label = "RQ"
    dist = "rq"
    has_bulk = True
    http_client = "requests (one job at a time)"
    configs = {
        "noop": "`rq worker -w rq.worker.SimpleWorker`, result_ttl=0",
        "http": "`rq worker -w rq.worker.SimpleWorker` (one job at a time: c does not apply)",
        "latency": "`rq worker -w rq.worker.SimpleWorker`",
    }

    def open(self) -> None:
        self.conn = Redis.from_url(REDIS_URL)
        self.queue = Queue(QUEUE, connection=self.conn)

    def close(self) -> None:
        self.conn.close()

    def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        self.queue.enqueue(FUNCS[kind], *args, result_ttl=0)

    def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        func = FUNCS[kind]
        self.queue.enqueue_many([Queue.prepare_data(func, a, result_ttl=0) for a in args])

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        argv = [self.exe("rq"), "worker", "-u", REDIS_URL, "-w", "rq.worker.SimpleWorker"]
        return [*argv, "--logging_level", "WARNING", QUEUE], {}
