"""Cancellation: a ready task is never run, a delayed one is removed at once, a running one (async or sync) is
cancelled on its worker within a second; each is recorded as `cancelled`, announced, and not retried."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, ExecutionContext, Settings, Task
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.plugins import load_plugins
from tests.support.common import async_wait_until
from tests.support.plugins import CaptureSink, ExecutorPlugin, SinkPlugin


class Sleeper:
    """Sleeps `seconds` (async, or in its thread when `sync`); records each start."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    async def execute(self, task: Task, context: ExecutionContext) -> str:
        self.started.append(task.id)
        await asyncio.sleep(task.fields.get("seconds", 0))
        self.finished.append(task.id)
        return "slept"


class SyncSleeper:
    def __init__(self) -> None:
        self.started = threading.Event()

    def execute(self, task: Task, context: ExecutionContext) -> str:
        self.started.set()
        time.sleep(task.fields.get("seconds", 0))
        return "slept"


def setup(settings: Settings, sleeper: Any, sink: CaptureSink | None = None) -> tuple[dict[str, Any], AsyncClient]:
    extra: dict[str, Any] = {"sleep": ExecutorPlugin("sleep", sleeper)}
    if sink is not None:
        extra["capture"] = SinkPlugin(sink)
    return extra, AsyncClient(settings, plugins=load_plugins(settings, extra=extra))


async def test_cancelling_a_running_task_ends_it_within_a_second_and_it_is_not_retried(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sleeper, sink = Sleeper(), CaptureSink()
    extra, client = setup(settings, sleeper, sink)
    async with client:
        running = await start_worker(settings, extra_plugins=extra)
        task_id = await client.enqueue("sleep", seconds=10, max_attempts=5)
        await async_wait_until(lambda: sleeper.started, what="the task to start")
        asked = time.time()
        assert await client.cancel(task_id) == "requested"
        record = await client.wait(task_id, timeout=8)
        assert record is not None and record.status.value == "cancelled"
        assert record.finished_at is not None and record.finished_at - asked < 1.0
        assert record.attempts == 1 and record.error is None
        [event] = await sink.wait_named("task.cancelled")
        assert event.task_id == task_id and event.data["running"] is True
        assert await client.cancel(task_id) == "finished"
    assert sleeper.started == [task_id] and sleeper.finished == []
    assert running.worker.stats["cancelled"] == 1 and running.worker.stats["retried"] == 0
    assert await aredis.zcard(f"gopherq:{{{queue_name}}}:delayed") == 0  # no retry waiting
    assert await aredis.zcard(f"gopherq:{{{queue_name}}}:cancels") == 0  # the request is forgotten


async def test_a_sync_executor_s_result_is_discarded(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings()
    sleeper = SyncSleeper()
    extra, client = setup(settings, sleeper)
    async with client:
        await start_worker(settings, extra_plugins=extra)
        task_id = await client.enqueue("sleep", seconds=2)
        await async_wait_until(sleeper.started.is_set, what="the task to start")
        await client.cancel(task_id)
        record = await client.wait(task_id, timeout=8)
        assert record is not None and record.status.value == "cancelled" and record.result is None
        await asyncio.sleep(0)  # the thread finishes later; its return value goes nowhere
        assert (await client.result(task_id)).status.value == "cancelled"  # type: ignore[union-attr]


async def test_a_ready_task_is_never_run_and_a_delayed_one_is_removed_at_once(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sleeper, sink = Sleeper(), CaptureSink()
    extra, client = setup(settings, sleeper, sink)
    async with client:
        ready_id = await client.enqueue("sleep", unique_key="only-one")
        delayed_id = await client.enqueue("sleep", delay=3600)
        assert await client.cancel(delayed_id) == "cancelled"
        record = await client.result(delayed_id)
        assert record is not None and record.status.value == "cancelled" and record.attempts == 0
        assert await aredis.zcard(f"gopherq:{{{queue_name}}}:delayed") == 0
        assert await client.cancel(ready_id) == "requested"
        other = await client.enqueue("sleep")
        await start_worker(settings, extra_plugins=extra)
        record = await client.wait(ready_id, timeout=8)
        assert record is not None and record.status.value == "cancelled" and record.started_at is None
        assert (await client.wait(other, timeout=8)).status.value == "succeeded"  # type: ignore[union-attr]
        [event] = await sink.wait_named("task.cancelled")
        assert event.data["running"] is False
        # Cancelling freed the task's uniqueness key.
        assert not (await client.submit([client.task("sleep", unique_key="only-one")]))[0].duplicate
    assert sleeper.started == [other] or sleeper.started[0] == other
    assert ready_id not in sleeper.started


async def test_the_cancel_command(
    make_settings: Callable[..., Settings], run_gopherq: Callable[..., Any], redis_url: str, queue_name: str
) -> None:
    settings = make_settings()
    _, client = setup(settings, Sleeper())
    async with client:
        task_id = await client.enqueue("sleep", delay=3600)
    env = {"GOPHERQ_REDIS__URL": redis_url, "GOPHERQ_QUEUE__NAME": queue_name}
    done = await asyncio.to_thread(run_gopherq, ["cancel", "--json", task_id], env=env)
    assert done.returncode == 0, done.stderr
    assert '"outcome": "cancelled"' in done.stdout
    again = await asyncio.to_thread(run_gopherq, ["cancel", task_id], env=env)
    assert again.returncode == 1 and "already finished" in again.stdout


async def test_a_request_for_a_task_that_ends_first_does_not_linger(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await broker.push([codec.dumps({"id": "t1", "type": "sleep"})])
    [(token, _)] = await broker.claim(1, lease_ms=60000)
    # The request arrives while the task runs, and the worker learns of it (its watch loop) as the task succeeds.
    assert await broker.cancel("t1", result_ttl=60) == "requested"
    broker.cancel_requests = frozenset(await broker.cancel_requests_now(60000))
    assert await broker.settle([Settlement("ack", token, "t1", b'{"status":"succeeded"}')], 60, 100) == [True]
    assert await aredis.zcard(broker.keys.cancels) == 0
    assert await broker.cancel("t1", result_ttl=60) == "finished"
