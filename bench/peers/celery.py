"""Celery on its Redis transport.

Client: `task.apply_async()` per task (Celery has no bulk enqueue; `group()` still publishes one message each).
Worker: `celery worker` with results ignored, no gossip/mingle/heartbeat, log level WARNING;
no-op and latency: the `solo` pool (runs tasks inline: the fastest single-process pool for tiny tasks);
HTTP: the `threads` pool with concurrency c and requests (measured faster here than `-P gevent`: 330 vs 240/s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from bench import tasks
from bench.peers import SyncPeer, WorkerSpec, bench_queue, bench_redis_url

REDIS_URL = bench_redis_url()
QUEUE = bench_queue()

PREFETCH = 100

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    tasks.noop()


@app.task(name="mark")
def mark(path: str, label: str) -> None:
    tasks.mark(path, label)


@app.task(name="probe")
def probe(path: str, t0: float) -> None:
    tasks.probe(path, t0)


@app.task(name="http")
def http(url: str) -> None:
    tasks.http_get(url)


TASKS = {"noop": noop, "mark": mark, "probe": probe, "http": http}


class CeleryPeer(SyncPeer):
    name = "celery"
    label = "Celery"
    dist = "celery"
    http_client = "requests (Session per thread)"
    configs = {
        "noop": f"`-P solo --prefetch-multiplier {PREFETCH}`, results ignored, no gossip/mingle/heartbeat",
        "http": "`-P threads -c <c>`, requests",
        "latency": f"`-P solo --prefetch-multiplier {PREFETCH}`",
    }

    def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        TASKS[kind].apply_async(args)

    def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        argv = [self.exe("celery"), "-A", "bench.peers.celery", "worker", "-Q", QUEUE, "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if spec.workload == "http":
            argv += ["-P", "threads", "-c", str(spec.concurrency)]
        else:
            argv += ["-P", "solo", "--prefetch-multiplier", str(PREFETCH)]
        return argv, {}
