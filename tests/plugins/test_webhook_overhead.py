"""What a failing webhook endpoint costs a worker: the drain time of N no-op tasks with no sink, and with a webhook
sink (every event) to an endpoint that hangs (accepts, never answers), refuses connections, or answers slowly.

The figure comes from running this module as a script (the quieter the machine, the better):

    .venv/bin/python -m tests.plugins.test_webhook_overhead --tasks 10000 --rounds 15

The test below is a smoke run of the same code with few tasks: it checks that every task ran in every setup,
never how fast (tests do not assert on speed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from gopherq import RegisterSink, hookimpl
from gopherq.core.events import EventBus
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import load_settings
from gopherq.core.worker import Worker
from tests.support.plugins import ExecutorPlugin, NoopExecutor

#: Events a successful task emits: task.dequeued, task.started, task.succeeded.
EVENTS_PER_TASK = 3

REDIS_URL = os.environ.get("GOPHERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def hanging_endpoint() -> Iterator[str]:
    """A port that completes TCP handshakes (the kernel's backlog) but never reads or answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


@contextmanager
def refusing_endpoint() -> Iterator[str]:
    """A port nobody listens on: every connection attempt is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield f"http://127.0.0.1:{port}/hook"


SLOW_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(float(sys.argv[1]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def slow_endpoint(delay: float = 1.0) -> Iterator[str]:
    """An endpoint that answers 200 after `delay` seconds; in its own process, so that it takes no CPU time
    (or GIL) from the worker being measured."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(delay)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        proc.kill()
        proc.wait()


class NullSink:
    """A sink that wants every event and does nothing: the cost of the event path itself, for reference."""

    async def handle(self, events: list[Any]) -> None:
        return None

    @hookimpl
    def gopherq_register_sinks(self, register: RegisterSink) -> None:
        register("null", self)


SETUPS: dict[str, Any] = {
    "no sink": None,
    "a sink that does nothing (reference)": NullSink,
    "webhook, endpoint hangs": hanging_endpoint,
    "webhook, connection refused": refusing_endpoint,
    "webhook, endpoint answers after 1s": slow_endpoint,
}


def worker_settings(queue: str, url: str | None, endpoint: dict[str, Any]) -> Any:
    webhook = {"endpoints": [{"url": url, **endpoint}]} if url else {}
    overrides = {
        "redis": {"url": REDIS_URL},
        "queue": {"name": queue, "result_ttl": 120},
        "worker": {"concurrency": 100, "batch_size": 200, "shutdown_timeout": 5},
        "plugins": {"logging": {"enabled": False}, "stream": {"enabled": False}, "webhook": webhook},
    }
    return load_settings(None, overrides, environ={})


async def drain(
    worker: Worker, runner: asyncio.Task[None], redis: Any, tasks: int, round_number: int
) -> tuple[float, float]:
    """Queue `tasks` no-op tasks at once (RENAME of a list filled beforehand) and time the worker's drain: from
    its first finished task to its last, wall-clock and this process's CPU time (steadier on a shared machine)."""
    staging = f"{worker.queue}_staging"
    for start in range(0, tasks, 1000):
        chunk = [f'{{"id":"r{round_number}t{i}","type":"noop"}}' for i in range(start, min(tasks, start + 1000))]
        await redis.rpush(staging, *chunk)
    before = worker.stats["succeeded"]
    await redis.rename(staging, worker.queue)
    deadline = time.monotonic() + 120

    async def until(count: int, pause: float) -> None:
        while worker.stats["succeeded"] < count:
            if runner.done():
                runner.result()  # the worker's own exception, if it died
                raise RuntimeError(f"worker {worker.id} stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {worker.id}: {worker.stats} after 120 s, {before + tasks} expected")
            await asyncio.sleep(pause)

    await until(before + 1, 0.0005)
    first, first_cpu = time.perf_counter(), time.process_time()
    await until(before + tasks, 0.002)
    return time.perf_counter() - first, time.process_time() - first_cpu


async def measure(
    tasks: int, rounds: int, endpoint: dict[str, Any] | None = None
) -> dict[str, list[tuple[float, float]]]:
    """Drain times per setup. Each setup has one worker (its own queue and Redis connection), all running side by
    side in this event loop from start to end, so a failing endpoint is in its steady state (buffer full,
    retrying); in each round every worker drains a batch in turn, in a rotating order, so that drift in machine
    load hits every setup alike. `endpoint` holds extra endpoint settings (default: a 10 s timeout)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in SETUPS}
    workers: dict[str, tuple[Worker, Any, asyncio.Task[None]]] = {}
    with contextlib.ExitStack() as stack:
        for name, make in SETUPS.items():
            url = None if make is None or make is NullSink else stack.enter_context(make())
            settings = worker_settings(f"bench_{uuid.uuid4().hex[:10]}", url, endpoint or {"timeout": 10})
            extra: dict[str, Any] = {"noop": ExecutorPlugin("noop", NoopExecutor())}
            if make is NullSink:
                extra["null"] = NullSink()
            redis = aioredis.Redis.from_url(REDIS_URL)
            worker = Worker(settings, load_plugins(settings, extra=extra, sinks=True), redis)
            workers[name] = (worker, redis, asyncio.create_task(worker.run()))
        try:
            names = list(SETUPS)
            for round_number in range(rounds):
                shift = round_number % len(names)  # each setup takes each place in the order in turn
                for name in names[shift:] + names[:shift]:
                    worker, redis, runner = workers[name]
                    times[name].append(await drain(worker, runner, redis, tasks, round_number))
        finally:
            for worker, _, _ in workers.values():
                worker.request_stop()
            await asyncio.gather(*(runner for _, _, runner in workers.values()), return_exceptions=True)
            for worker, redis, _ in workers.values():
                keys = [key async for key in redis.scan_iter(match=f"gopherq:{{{worker.queue}}}:*", count=1000)]
                for start in range(0, len(keys), 500):
                    await redis.delete(*keys[start : start + 500])
                await redis.delete(worker.queue, f"{worker.queue}_staging")
                await redis.aclose()
    return times


async def emit_cost() -> tuple[float, float]:
    """Seconds per `emit` of a task event with no sink, and with one sink whose buffer is full because its
    endpoint hangs (the steady state of a dead endpoint): the event path's cost, free of Redis and machine noise."""

    class Stuck:
        async def handle(self, events: list[Any]) -> None:
            await asyncio.Event().wait()

    costs = []
    for stuck in (False, True):
        bus = EventBus()
        bus.defaults = {"worker": "host:1:abc", "queue": "q"}
        if stuck:
            bus.add_sink("stuck", Stuck(), ["*"], 10000, 20)
            bus.start()
            for _ in range(20000):
                bus.emit("task.started", task_id="t", task_type="noop", attempt=1)
            await asyncio.sleep(0.01)

        def emit(bus: EventBus = bus) -> None:
            bus.emit("task.succeeded", task_id="t", task_type="noop", attempt=1, duration=0.001, data={})

        costs.append(min(timeit.repeat(emit, number=100000, repeat=5)) / 100000)
        for channel in bus.channels:
            channel.dropped = 0
        await bus.close(0.01)
    return costs[0], costs[1]


def test_every_task_runs_whatever_the_endpoint_does(redis_url: str) -> None:
    # A small buffer and one short attempt per batch, so that each worker's shutdown, which gives its sinks
    # up to 5 s to deliver what they hold, is quick.
    endpoint = {"timeout": 0.2, "max_attempts": 1, "buffer_size": 20}
    times = asyncio.run(measure(tasks=300, rounds=1, endpoint=endpoint))
    assert all(len(values) == 1 and values[0][0] > 0 for values in times.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    times = asyncio.run(measure(args.tasks, args.rounds))
    base = times["no sink"]
    print(f"{args.tasks} no-op tasks per round, {args.rounds} rounds, one worker process")
    print("overhead = median over rounds of (setup / no sink in the same round) - 1; 'best' = the fastest round")
    print(f"{'setup':<38} {'best tasks/s':>12} {'wall overhead':>14} {'CPU us/task':>12} {'CPU overhead':>13}")
    for name, values in times.items():
        wall = statistics.median(w / b - 1 for (w, _), (b, _) in zip(values, base, strict=True)) * 100
        cpu = statistics.median(c / b - 1 for (_, c), (_, b) in zip(values, base, strict=True)) * 100
        best = min(w for w, _ in values)
        per_task = statistics.median(c for _, c in values) / args.tasks * 1e6
        print(f"{name:<38} {args.tasks / best:>12.0f} {wall:>13.1f}% {per_task:>12.1f} {cpu:>12.1f}%")
    quiet, stuck = asyncio.run(emit_cost())
    per_task = statistics.median(c for _, c in base) / args.tasks
    extra = (stuck - quiet) * EVENTS_PER_TASK
    print(
        f"event path: {quiet * 1e9:.0f} ns per event with no sink, {stuck * 1e9:.0f} ns into a dead endpoint's full"
        f" buffer; x{EVENTS_PER_TASK} events per task = {extra * 1e6:.2f} us per task,"
        f" {extra / per_task * 100:.1f}% of the no-sink CPU time per task"
    )


if __name__ == "__main__":
    main()
