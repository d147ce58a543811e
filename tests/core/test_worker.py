"""A real worker in-process on a real Redis, with test executors and sinks registered as plugins: concurrency,
sync executors in threads, time limits, routing by type, events, broken and slow sinks, ids assigned at fetch
time, and reconnecting when Redis is not there at start."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import gopherq
from gopherq import Event, ExecutionContext, Settings, Task
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.worker import Worker
from tests.support.common import async_wait_until


class ExecutorPlugin:
    """Registers the given executors by task type."""

    def __init__(self, **executors: Any) -> None:
        self.executors = executors

    @gopherq.hookimpl
    def gopherq_register_executors(self, register: Any) -> None:
        for name, executor in self.executors.items():
            register(name, executor)


class SinkPlugin:
    """Registers the given sinks, each with its register() options."""

    def __init__(self, **sinks: tuple[Any, dict[str, Any]]) -> None:
        self.sinks = sinks

    @gopherq.hookimpl
    def gopherq_register_sinks(self, register: Any) -> None:
        for name, (sink, options) in self.sinks.items():
            register(name, sink, **options)


class Echo:
    def __init__(self, label: str) -> None:
        self.label = label

    async def execute(self, task: Task, context: ExecutionContext) -> dict[str, Any]:
        return {"by": self.label, "fields": task.payload}


class Gauge:
    """Counts how many tasks run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = 0

    async def execute(self, task: Task, context: ExecutionContext) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.running -= 1
            self.done += 1


class Gate:
    """Runs until released; remembers the ids it saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def execute(self, task: Task, context: ExecutionContext) -> str:
        self.seen.append(task.id)
        await self.release.wait()
        return "released"


class Sleepy:
    async def execute(self, task: Task, context: ExecutionContext) -> None:
        await asyncio.sleep(30)


class Crashing:
    async def execute(self, task: Task, context: ExecutionContext) -> None:
        raise ValueError("no good")


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handle(self, events: list[Event]) -> None:
        self.events.extend(events)

    def names(self, task_id: str | None = None) -> list[str]:
        return [e.name for e in self.events if task_id is None or e.task_id == task_id]


class BrokenSink:
    def handle(self, events: list[Event]) -> None:
        raise RuntimeError("sink down")


class StuckSink:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def handle(self, events: list[Event]) -> None:
        await self.release.wait()


async def push(aredis: aioredis.Redis, queue: str, *tasks: dict[str, Any]) -> None:
    await aredis.rpush(queue, *[codec.dumps(task) for task in tasks])


async def results(aredis: aioredis.Redis, queue: str, ids: list[str], timeout: float = 10) -> dict[str, Any]:
    """Wait until every id has a final result record; returns them by id."""
    keys = QueueKeys(queue)

    async def fetch() -> dict[str, Any] | None:
        raws = await aredis.mget([keys.result(task_id) for task_id in ids])
        records = [codec.loads(raw) for raw in raws if raw is not None]
        if len(records) == len(ids) and all(r["status"] != "retrying" for r in records):
            return {r["id"]: r for r in records}
        return None

    found: dict[str, Any] = await async_wait_until(fetch, timeout=timeout, what=f"results of {ids}")
    return found


async def test_concurrency_limit_is_respected(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    gauge = Gauge()
    settings = make_settings(worker={"concurrency": 3})
    await start_worker(settings, extra_plugins={"gauge": ExecutorPlugin(gauge=gauge)})
    await push(aredis, queue_name, *[{"id": f"g{i}", "type": "gauge"} for i in range(12)])
    found = await results(aredis, queue_name, [f"g{i}" for i in range(12)])
    assert all(record["status"] == "succeeded" for record in found.values())
    assert gauge.peak == 3


async def test_seed_variable_num_workers_sets_the_concurrency(
    redis_url: str, queue_name: str, start_worker: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    settings = gopherq.load_settings(
        None, {"redis": {"url": redis_url}}, environ={"NUM_WORKERS": "2", "QUEUE_NAME": queue_name}
    )
    gauge = Gauge()
    running = await start_worker(settings, extra_plugins={"gauge": ExecutorPlugin(gauge=gauge)})
    assert running.worker.queue == queue_name
    await push(aredis, queue_name, *[{"id": f"g{i}", "type": "gauge"} for i in range(6)])
    await results(aredis, queue_name, [f"g{i}" for i in range(6)])
    assert gauge.peak == 2


async def test_sync_executor_runs_in_a_thread_pool(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    barrier = threading.Barrier(2)
    threads: list[threading.Thread] = []

    class Blocking:
        def execute(self, task: Task, context: ExecutionContext) -> str:
            threads.append(threading.current_thread())
            barrier.wait(timeout=5)  # only passes when both tasks run at the same time
            return "both ran at once"

    await start_worker(make_settings(), extra_plugins={"sync": ExecutorPlugin(blocking=Blocking())})
    await push(aredis, queue_name, {"id": "s1", "type": "blocking"}, {"id": "s2", "type": "blocking"})
    found = await results(aredis, queue_name, ["s1", "s2"])
    assert [found[i]["status"] for i in ("s1", "s2")] == ["succeeded", "succeeded"]
    assert found["s1"]["result"] == "both ran at once"
    assert threading.main_thread() not in threads
    assert len(set(threads)) == 2


async def test_each_attempt_runs_under_its_time_limit(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(worker={"task_timeout": 0.2}, queue={"max_attempts": 1})
    await start_worker(settings, extra_plugins={"sleepy": ExecutorPlugin(sleepy=Sleepy())})
    await push(
        aredis,
        queue_name,
        {"id": "own", "type": "sleepy", "timeout": 0.1},  # the task's own limit
        {"id": "default", "type": "sleepy"},  # worker.task_timeout
    )
    found = await results(aredis, queue_name, ["own", "default"])
    for task_id in ("own", "default"):
        assert found[task_id]["status"] == "dead"
        assert found[task_id]["error"]["reason"] == "timeout"
    assert "0.1s" in found["own"]["error"]["message"]
    assert "0.2s" in found["default"]["error"]["message"]


async def test_executors_are_selected_by_type(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    plugin = ExecutorPlugin(alpha=Echo("alpha"), beta=Echo("beta"), crash=Crashing())
    await start_worker(make_settings(queue={"max_attempts": 1}), extra_plugins={"mine": plugin})
    await push(
        aredis,
        queue_name,
        {"id": "a", "type": "alpha", "x": 1},
        {"id": "b", "type": "beta", "y": 2},
        {"id": "c", "type": "gamma"},
        {"id": "d", "type": "crash"},
    )
    found = await results(aredis, queue_name, ["a", "b", "c", "d"])
    assert found["a"]["result"] == {"by": "alpha", "fields": {"x": 1}}
    assert found["b"]["result"] == {"by": "beta", "fields": {"y": 2}}
    assert found["c"]["status"] == "dead"
    assert found["c"]["dead_reason"] == "unknown_type"
    assert "'gamma'" in found["c"]["error"]["message"]
    assert found["d"]["error"]["reason"] == "exception"
    assert "ValueError: no good" in found["d"]["error"]["message"]


async def test_events_reach_a_sink(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    recorder = Recorder()
    plugins = {"echo": ExecutorPlugin(echo=Echo("e"), crash=Crashing()), "rec": SinkPlugin(rec=(recorder, {}))}
    running = await start_worker(make_settings(queue={"max_attempts": 1}), extra_plugins=plugins)
    await push(
        aredis,
        queue_name,
        {"id": "ok", "type": "echo"},
        {"id": "crash", "type": "crash"},
        {"id": "unknown", "type": "nope"},
    )
    await results(aredis, queue_name, ["ok", "crash", "unknown"])
    await async_wait_until(lambda: "task.succeeded" in recorder.names("ok"), what="task.succeeded event")
    await async_wait_until(lambda: "task.dead_lettered" in recorder.names("crash"), what="dead-letter event")
    await async_wait_until(lambda: "task.dead_lettered" in recorder.names("unknown"), what="dead-letter event")
    await running.stop()
    assert recorder.names("ok") == ["task.dequeued", "task.started", "task.succeeded"]
    assert recorder.names("crash") == ["task.dequeued", "task.started", "task.failed", "task.dead_lettered"]
    assert recorder.names("unknown") == ["task.dead_lettered"]
    failed = next(e for e in recorder.events if e.name == "task.failed")
    assert failed.error is not None and failed.error["reason"] == "exception"
    worker_events = [e.name for e in recorder.events if e.name.startswith("worker.")]
    assert worker_events == ["worker.started", "worker.stopping", "worker.stopped"]
    succeeded = next(e for e in recorder.events if e.name == "task.succeeded")
    assert succeeded.worker == running.worker.id
    assert succeeded.queue == queue_name
    assert succeeded.task_type == "echo"
    assert succeeded.duration is not None


async def test_a_failing_sink_does_not_stop_the_worker(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    aredis: aioredis.Redis,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    plugins = {
        "echo": ExecutorPlugin(echo=Echo("e")),
        "sinks": SinkPlugin(broken=(BrokenSink(), {"batch_size": 1}), rec=(recorder, {})),
    }
    running = await start_worker(make_settings(), extra_plugins=plugins)
    ids = [f"t{i}" for i in range(5)]
    await push(aredis, queue_name, *[{"id": i, "type": "echo"} for i in ids])
    found = await results(aredis, queue_name, ids)
    assert all(record["status"] == "succeeded" for record in found.values())
    await async_wait_until(lambda: running.worker.bus.stats()["broken"]["failed_batches"] >= 5, what="failures")
    await async_wait_until(lambda: all("task.succeeded" in recorder.names(i) for i in ids), what="healthy sink")
    assert any("sink broken failed" in r.getMessage() for r in caplog.records)


async def test_a_full_sink_drops_and_counts_while_tasks_go_on(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    stuck = StuckSink()
    plugins = {
        "echo": ExecutorPlugin(echo=Echo("e")),
        "sinks": SinkPlugin(stuck=(stuck, {"buffer_size": 2, "batch_size": 1})),
    }
    running = await start_worker(make_settings(), extra_plugins=plugins)
    ids = [f"t{i}" for i in range(10)]
    await push(aredis, queue_name, *[{"id": i, "type": "echo"} for i in ids])
    found = await results(aredis, queue_name, ids)
    assert all(record["status"] == "succeeded" for record in found.values())
    assert running.worker.bus.stats()["stuck"]["dropped"] > 0
    stuck.release.set()


async def test_logging_sink_writes_a_line_per_event_with_the_task_id(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    aredis: aioredis.Redis,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gopherq.events")  # before start: the sink registers only if it logs
    await start_worker(make_settings(), extra_plugins={"echo": ExecutorPlugin(echo=Echo("e"))})
    await push(aredis, queue_name, {"id": "logged", "type": "echo"})
    await results(aredis, queue_name, ["logged"])

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "gopherq.events"]

    await async_wait_until(lambda: any(line.startswith("task.succeeded task=logged") for line in lines()))
    assert any(line.startswith("task.started task=logged") for line in lines())


async def test_an_assigned_id_is_stored_before_the_task_runs_and_used_throughout(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    gate = Gate()
    recorder = Recorder()
    plugins = {"gate": ExecutorPlugin(gate=gate), "rec": SinkPlugin(rec=(recorder, {}))}
    await start_worker(make_settings(), extra_plugins=plugins)
    await aredis.rpush(queue_name, b'{"type":"gate","payload":"no id"}')
    await async_wait_until(lambda: gate.seen, what="the task to start")
    [task_id] = gate.seen
    # While it runs, the in-flight copy (what a crash recovery would requeue) already carries the id.
    inflight = [codec.loads(raw) for raw in (await aredis.hgetall(QueueKeys(queue_name).inflight)).values()]
    assert [task["id"] for task in inflight] == [task_id]
    gate.release.set()
    found = await results(aredis, queue_name, [task_id])
    assert found[task_id]["result"] == "released"
    await async_wait_until(lambda: "task.succeeded" in recorder.names(task_id), what="events with the id")


@pytest.fixture
def late_redis() -> Iterator[Callable[[], int]]:
    """A port with no Redis yet; calling the fixture's value starts a throwaway redis-server on it."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    started: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        started.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        return port

    start.port = port  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


async def test_worker_waits_for_redis_at_start_and_then_runs(
    late_redis: Any, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gopherq")
    port = late_redis.port
    settings = make_settings(redis={"url": f"redis://127.0.0.1:{port}/0"})
    client = aioredis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    gate = Gate()
    gate.release.set()
    worker = Worker(settings, load_plugins(settings, extra={"gate": ExecutorPlugin(gate=gate)}), client)
    running = asyncio.create_task(worker.run())
    try:
        await async_wait_until(
            lambda: any("Redis unavailable" in r.getMessage() for r in caplog.records), what="the warning"
        )
        assert not running.done()  # no crash, no traceback: it keeps trying
        late_redis()
        await async_wait_until(lambda: bool(worker._loops), timeout=15, what="the worker to start")
        await client.rpush(settings.queue.name, b'{"id":"late","type":"gate"}')
        await async_wait_until(lambda: gate.seen == ["late"], what="the task to run")
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 15)
        await client.aclose()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_worker_asked_to_stop_before_redis_answers_stops(
    late_redis: Any, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis={"url": f"redis://127.0.0.1:{late_redis.port}/0"})
    client = aioredis.Redis(host="127.0.0.1", port=late_redis.port, retry=Retry(NoBackoff(), 0))
    worker = Worker(settings, load_plugins(settings), client)
    running = asyncio.create_task(worker.run())
    try:
        await async_wait_until(
            lambda: any("Redis unavailable" in r.getMessage() for r in caplog.records), what="the warning"
        )
        worker.request_stop()
        await asyncio.wait_for(running, 10)
    finally:
        await client.aclose()


def test_a_worker_process_freezes_start_up_objects_and_collects_young_garbage_less_often() -> None:
    """What run_worker does to the garbage collector once plugins are loaded, checked in a fresh interpreter (the
    test process's own collector is left alone); cycles made afterwards are still collected."""
    code = (
        "import gc, weakref\n"
        "from gopherq.core.runner import GC_YOUNG_THRESHOLD, quiet_garbage_collector\n"
        "quiet_garbage_collector()\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
        "assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "gone = weakref.ref(a); del a, b\n"
        "gc.collect()\n"
        "assert gone() is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
