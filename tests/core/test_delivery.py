"""Delivery guarantees through real workers on a real Redis: leases renewed by the heartbeat, recovery of tasks
whose holder died, late acks refused, poison tasks, delayed tasks, quiet mode and the eviction-policy warning.

The fault-injection versions with real processes (SIGKILL, SIGSTOP, Redis restarts) are in tests/chaos/.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel, field_validator

from gopherq import AsyncClient, ExecutionContext, Task
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement, now_ms
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings
from tests.support.common import async_wait_until
from tests.support.plugins import CaptureSink, ExecutorPlugin, Sleeper, sleeper_plugins


async def result_of(aredis: aioredis.Redis, queue: str, task_id: str) -> dict[str, Any] | None:
    return await Broker(aredis, queue).get_result(task_id)


async def final_result(aredis: aioredis.Redis, queue: str, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        record = await result_of(aredis, queue, task_id)
        return record if record is not None and record["status"] != "retrying" else None

    result: dict[str, Any] = await async_wait_until(done, timeout=timeout, what=f"final result of {task_id}")
    return result


async def dead_entry(aredis: aioredis.Redis, queue: str, entry_id: str, timeout: float = 10.0) -> dict[str, Any]:
    broker = Broker(aredis, queue)

    async def entry() -> bytes | None:
        return await aredis.hget(broker.keys.dead, entry_id)  # type: ignore[no-any-return]

    return codec.loads(await async_wait_until(entry, timeout=timeout, what=f"dead letter {entry_id}"))


# -- leases and recovery -------------------------------------------------------------------------------------


async def test_heartbeat_keeps_the_lease_of_a_task_that_runs_longer_than_it(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(worker={"lease_timeout": 0.6, "heartbeat_interval": 0.15, "reaper_interval": 0.1})
    sleeper = Sleeper()
    running = await start_worker(settings, extra_plugins=sleeper_plugins(sleeper))
    await aredis.rpush(queue_name, codec.dumps({"id": "long", "type": "sleep", "seconds": 1.5}))
    record = await final_result(aredis, queue_name, "long")
    assert record["status"] == "succeeded"
    assert sleeper.runs == {"long": 1}  # never recovered and run twice
    assert running.worker.stats["recovered"] == 0


async def test_a_task_whose_holder_died_is_recovered_and_run_by_another_worker(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    # A "ghost" worker claims a task, then dies: no heartbeat ever renews its lease.
    ghost = Broker(aredis, queue_name, "ghost")
    await ghost.heartbeat([], 300)
    await ghost.push([codec.dumps({"id": "orphan", "type": "sleep"})])
    [(stale_token, _)] = await ghost.claim(1, lease_ms=300)
    sink, sleeper = CaptureSink(), Sleeper()
    await start_worker(make_settings(), extra_plugins=sleeper_plugins(sleeper, sink))
    record = await final_result(aredis, queue_name, "orphan")
    assert record["status"] == "succeeded" and record["attempts"] == 1  # a recovery is not an attempt
    [recovered] = await sink.wait_named("task.recovered")
    assert recovered.task_id == "orphan" and recovered.data["recoveries"] == 1
    # The ghost wakes up: its late ack is refused, and counted.
    assert await ghost.settle([late_ack(stale_token, "orphan")], 60, 10) == [False]
    stats = await ghost.stats()
    assert stats["refused_acks"] == 1 and stats["acked"] == 1 and stats["recovered"] == 1


def late_ack(token: str, task_id: str) -> Settlement:
    return Settlement("ack", token, task_id, b'{"late": true}')


async def test_a_worker_presumed_dead_cannot_complete_a_task_handed_to_someone_else(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gopherq")
    sleeper = Sleeper()
    running = await start_worker(make_settings(), extra_plugins=sleeper_plugins(sleeper))
    broker = Broker(aredis, queue_name, "reaper")
    await aredis.rpush(queue_name, codec.dumps({"id": "contested", "type": "sleep", "seconds": 0.8}))
    await async_wait_until(lambda: sleeper.runs.get("contested") == 1, what="first run")
    # Declare the holder dead behind its back: its lease expires now and the reaper hands the task back.
    [token] = await aredis.zrangebyscore(broker.keys.leases, "-inf", "(+inf")  # (not the layout member)
    await aredis.zadd(broker.keys.leases, {token: 0})
    await aredis.delete(broker.keys.reaper_lock)
    assert await broker.reap(60_000, 1, "reaper") is not None
    # The worker finishes its first run (refused), and runs the recovered copy (accepted).
    await async_wait_until(lambda: running.worker.stats["refused"] == 1, what="the late ack to be refused")
    await async_wait_until(lambda: running.worker.stats["succeeded"] == 1, timeout=10, what="the second run")
    assert sleeper.runs == {"contested": 2}
    stats = await broker.stats()
    assert stats["refused_acks"] == 1 and stats["acked"] == 1  # one completion, not two
    assert "task contested: late ack refused" in caplog.text


async def test_a_task_recovered_more_than_max_recoveries_times_is_poison(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    sleeper = Sleeper()
    await start_worker(make_settings(worker={"max_recoveries": 2}), extra_plugins=sleeper_plugins(sleeper))
    await aredis.rpush(
        queue_name,
        codec.dumps({"id": "crashy", "type": "sleep", "recoveries": 3}),
        codec.dumps({"id": "survivor", "type": "sleep", "recoveries": 2}),
    )
    entry = await dead_entry(aredis, queue_name, "crashy")
    assert entry["reason"] == "poison"
    assert "lost its worker 3 times (max_recoveries=2)" in entry["error"]["message"]
    assert (await final_result(aredis, queue_name, "survivor"))["status"] == "succeeded"
    assert "crashy" not in sleeper.runs


@pytest.mark.parametrize("worker", [{}, {"concurrency": 2, "prefetch": 4}], ids=["default", "prefetch"])
async def test_a_task_that_lost_its_worker_twice_runs_alone(
    worker: dict[str, int],
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
) -> None:
    # With prefetch, the others of its batch are claimed ahead (staged): the suspect waits for them to run too.
    sleeper = Sleeper()
    running = await start_worker(make_settings(worker=worker), extra_plugins=sleeper_plugins(sleeper))
    tasks = [{"id": f"n{i}", "type": "sleep", "seconds": 0.3} for i in range(4)]
    tasks[1:1] = [{"id": f"suspect{i}", "type": "sleep", "seconds": 0.3, "recoveries": 2} for i in range(2)]
    await aredis.rpush(queue_name, *(codec.dumps(task) for task in tasks))  # claimed in one batch
    for task in tasks:
        assert (await final_result(aredis, queue_name, task["id"]))["status"] == "succeeded"
    # Each suspect ran with nothing else running (if it crashed the worker, it would take no one with it).
    assert sleeper.overlaps("suspect0") == [] and sleeper.overlaps("suspect1") == []
    together = {"n1", "n2", "n3"} if not worker else {"n1"}  # the others ran together as usual (two at a time)
    assert set(sleeper.overlaps("n0")) >= together
    assert sleeper.runs == {task["id"]: 1 for task in tasks}
    assert running.worker.stats["recovered"] == 0


class Exploding(BaseModel):
    """A payload model whose validator fails in a way the worker does not expect (not a ValueError)."""

    x: int = 0

    @field_validator("x")
    @classmethod
    def _explode(cls, value: int) -> int:
        raise RuntimeError("bug in a plugin")


class ExplodingExecutor:
    payload_model = Exploding

    async def execute(self, task: Task, context: ExecutionContext) -> None:  # pragma: no cover - never reached
        return None


async def test_an_internal_error_on_one_task_is_a_crash_for_that_task_only(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(
        worker={"lease_timeout": 0.5, "heartbeat_interval": 0.1, "reaper_interval": 0.1, "max_recoveries": 1}
    )
    sleeper = Sleeper()
    plugins = {**sleeper_plugins(sleeper), "boom": ExecutorPlugin("boom", ExplodingExecutor())}
    await start_worker(settings, extra_plugins=plugins)
    await aredis.rpush(queue_name, codec.dumps({"id": "bad", "type": "boom", "x": 1}))
    await aredis.rpush(queue_name, codec.dumps({"id": "good", "type": "sleep"}))
    assert (await final_result(aredis, queue_name, "good"))["status"] == "succeeded"
    # Not stuck forever under a renewed lease: recovered like a crash, then poison.
    entry = await dead_entry(aredis, queue_name, "bad", timeout=15)
    assert entry["reason"] == "poison"


# -- delayed tasks -------------------------------------------------------------------------------------------


async def test_delay_and_eta_wait_in_the_delayed_set_and_start_on_time(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sleeper = Sleeper()
    plugins = load_plugins(settings, extra=sleeper_plugins(sleeper))
    async with AsyncClient(settings, plugins=plugins) as client:
        before = time.time()
        by_delay = client.task("sleep", delay=1.0)
        by_eta = client.task("sleep", eta=before + 1.2)
        await client.enqueue_many([by_delay, by_eta])
        broker = client.broker()
        assert await broker.counts() == {"ready": 0, "inflight": 0, "delayed": 2, "dead": 0}
        await start_worker(settings, extra_plugins=sleeper_plugins(sleeper))
        for task, due in ((by_delay, before + 1.0), (by_eta, before + 1.2)):
            assert (await final_result(aredis, queue_name, task.id))["status"] == "succeeded"
            assert due <= sleeper.started[task.id] < due + 1.0  # not early, and within about a second


async def test_a_raw_task_pushed_before_its_eta_waits_for_it(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    sleeper = Sleeper()
    running = await start_worker(make_settings(), extra_plugins=sleeper_plugins(sleeper))
    eta = time.time() + 1.0
    await aredis.rpush(queue_name, codec.dumps({"id": "later", "type": "sleep", "eta": eta}))
    record = await final_result(aredis, queue_name, "later")
    assert record["status"] == "succeeded" and record["attempts"] == 1  # deferring is not an attempt
    assert eta <= sleeper.started["later"] < eta + 1.0
    assert running.worker.stats["deferred"] == 1


async def test_two_promoters_at_once_never_move_a_task_twice(aredis: aioredis.Redis, queue_name: str) -> None:
    brokers = [Broker(aredis, queue_name, f"w{i}") for i in range(2)]
    due = now_ms() - 1
    await brokers[0].push_delayed([(codec.dumps({"id": f"d{i}"}), due) for i in range(600)])
    await brokers[0].push_delayed([(codec.dumps({"id": "future"}), now_ms() + 60_000)])
    moved = await asyncio.gather(*(broker.promote(limit=50) for _ in range(10) for broker in brokers))
    moved += await asyncio.gather(*(broker.promote(limit=1000) for broker in brokers))
    assert sum(moved) == 600
    ready = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)]
    assert len(ready) == len(set(ready)) == 600
    assert await aredis.zcard(brokers[0].keys.delayed) == 1  # the future one stays


# -- quiet mode and start-up checks ----------------------------------------------------------------------------


async def test_quiet_stops_fetching_and_hands_back_a_staged_task(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    sink, sleeper = CaptureSink(), Sleeper()
    running = await start_worker(make_settings(), extra_plugins=sleeper_plugins(sleeper, sink))
    worker = running.worker
    worker.request_quiet()
    await async_wait_until(lambda: worker._fetcher is not None and worker._fetcher.done(), what="fetch loop to end")
    await aredis.rpush(queue_name, codec.dumps({"id": "untouched", "type": "sleep"}))
    await asyncio.sleep(worker.settings.worker.fetch_timeout + 0.3)  # a fetching worker would have taken it by now
    assert await aredis.llen(queue_name) == 1
    assert await aredis.llen(worker.broker.processing) == 0
    assert sleeper.runs == {}
    await async_wait_until(lambda: sink.named("worker.quiet"), what="worker.quiet event")


@pytest.mark.parametrize(("policy", "warned"), [("allkeys-lru", True), ("noeviction", False)])
async def test_start_warns_when_redis_may_evict_tasks(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    private_redis: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    policy: str,
    warned: bool,
) -> None:
    server = private_redis("--maxmemory-policy", policy)
    client = aioredis.Redis.from_url(server.url)
    try:
        caplog.set_level(logging.WARNING, "gopherq")
        running = await start_worker(make_settings(redis={"url": server.url}), redis_client=client)
        await running.stop()
    finally:
        await client.aclose()
    assert (f"maxmemory-policy is {policy}, not noeviction" in caplog.text) is warned
