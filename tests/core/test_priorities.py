"""Priorities: high, default and low ready lists, served strictly or by weight, without scanning a list; raw RPUSH
feeds the default level; a worker blocked on the plain list wakes for other levels; recovery, release and promotion
return a task to its own level."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, ExecutionContext, Settings, Task
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement, SpecialPush, now_ms
from gopherq.core.inspect import Inspector
from gopherq.core.keys import WAKE_MARKER
from gopherq.core.plugins import load_plugins
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin


class Recorder:
    """Records the id of every task it starts, in order."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def execute(self, task: Task, context: ExecutionContext) -> None:
        self.started.append(task.id)
        await asyncio.sleep(0.001)  # a little work, so the drain cannot outrun the test's late enqueue


def client_for(settings: Settings, recorder: Any) -> AsyncClient:
    plugins = load_plugins(settings, extra={"rec": ExecutorPlugin("rec", recorder)})
    return AsyncClient(settings, plugins=plugins)


async def test_strict_priorities_are_served_in_order_under_load(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(worker={"concurrency": 8, "batch_size": 8})
    recorder = Recorder()
    async with client_for(settings, recorder) as client:
        levels = {"low": [], "default": [], "high": []}  # enqueued least urgent first
        for level in levels:
            tasks = [client.task("rec", id=f"{level}-{i}", priority=level) for i in range(300)]
            levels[level] = await client.enqueue_many(tasks)
        # A raw producer's task is a default-level task.
        await aredis.rpush(queue_name, codec.dumps({"id": "raw-0", "type": "rec"}))
        levels["default"].append("raw-0")
        await start_worker(settings, extra_plugins={"rec": ExecutorPlugin("rec", recorder)})
        # More urgent work arriving mid-drain jumps ahead of what is left.
        await async_wait_until(lambda: len(recorder.started) >= 50, interval=0.005, what="the drain to start")
        late = await client.enqueue_many([client.task("rec", id=f"late-{i}", priority="high") for i in range(50)])
        await async_wait_until(lambda: len(recorder.started) == 951, timeout=60, what="every task")
    order = {task_id: i for i, task_id in enumerate(recorder.started)}
    assert len(order) == 951
    last_high = max(order[i] for i in levels["high"])
    assert last_high < min(order[i] for i in levels["default"])
    assert max(order[i] for i in levels["default"]) < min(order[i] for i in levels["low"])
    assert max(order[i] for i in late) < min(order[i] for i in levels["low"])
    assert await aredis.llen(queue_name) == 0  # no wake marker left behind


async def test_weighted_priorities_starve_no_level(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(
        worker={
            "concurrency": 4,
            "batch_size": 4,
            "priority_mode": "weighted",
            "priority_weights": {"high": 1, "default": 0, "low": 1},
        }
    )
    recorder = Recorder()
    async with client_for(settings, recorder) as client:
        for level in ("high", "low"):
            await client.enqueue_many([client.task("rec", id=f"{level}-{i}", priority=level) for i in range(400)])
        await start_worker(settings, extra_plugins={"rec": ExecutorPlugin("rec", recorder)})
        await async_wait_until(lambda: len(recorder.started) >= 200, timeout=30, what="200 tasks")
    first = recorder.started[:200]
    lows = sum(1 for task_id in first if task_id.startswith("low"))
    assert 40 <= lows <= 160, lows  # about half: weights 1:1


async def test_a_blocked_worker_wakes_for_a_high_priority_task(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, redis_url: str
) -> None:
    # A long blocking fetch: without the wake marker the task would wait for it to time out.
    settings = make_settings(worker={"fetch_timeout": 10.0})
    recorder = Recorder()
    worker_redis = aioredis.Redis.from_url(redis_url, socket_timeout=30)
    try:
        running = await start_worker(
            settings, extra_plugins={"rec": ExecutorPlugin("rec", recorder)}, redis_client=worker_redis
        )
        async with client_for(settings, recorder) as client:
            await asyncio_sleep_until_blocked(aredis)
            task_id = await client.enqueue("rec", priority="high")
            record = await client.wait(task_id, timeout=8)
            assert record is not None and record.status.value == "succeeded"
            assert record.started_at is not None
        assert running.worker.stats["dead"] == 0  # the marker was dropped, not dead-lettered
        await running.stop()
    finally:
        await worker_redis.aclose()


async def asyncio_sleep_until_blocked(aredis: aioredis.Redis) -> None:
    """Wait until some client is blocked in BLMOVE (the worker's idle fetch)."""

    async def blocked() -> bool:
        info = await aredis.info("clients")
        return int(info.get("blocked_clients", 0)) > 0

    await async_wait_until(blocked, what="the worker's blocking fetch")


async def test_recovery_release_and_promotion_return_a_task_to_its_level(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w-gone")
    keys = broker.keys
    envelope = codec.dumps({"id": "h1", "type": "rec", "priority": "high"})
    assert await broker.push_special([SpecialPush("h1", envelope, priority="high")]) == [None]
    # Reap: a lease that expired goes back to the head of the high list.
    [(token, _)] = await broker.claim(1, lease_ms=-1000)
    assert await broker.reap(worker_ttl_ms=60000, lock_ms=1000, owner="me") is not None
    assert await aredis.llen(keys.level("high")) == 1
    assert codec.loads(await aredis.lindex(keys.level("high"), 0))["recoveries"] == 1
    # Release (shutdown): back to the high list, not the plain one.
    [(token, _)] = await broker.claim(1, lease_ms=60000)
    assert await broker.settle([Settlement("release", token, "h1")], 60, 100) == [True]
    assert await aredis.llen(keys.level("high")) == 1
    # Promotion of a due delayed task: to its level's list.
    low = codec.dumps({"id": "l1", "type": "rec", "priority": "low"})
    await broker.push_delayed([(low, now_ms() - 1)])
    assert await broker.promote() == 1
    assert await aredis.lrange(keys.level("low"), 0, -1) == [low]
    # Every level counts as ready.
    assert (await broker.counts())["ready"] == 2 + await aredis.llen(queue_name)


async def test_bad_priority_is_refused_with_the_field_named(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with client_for(settings, Recorder()) as client:
        try:
            client.task("rec", priority="urgent")
        except Exception as exc:
            assert "priority" in str(exc) and "high, default, low" in str(exc)
        else:
            raise AssertionError("an unknown priority was accepted")


async def test_the_inspection_layer_sees_every_level(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    async with client_for(settings, Recorder()) as client:
        for level in ("low", "default", "high"):
            await client.enqueue_many([client.task("rec", id=f"{level}-{i}", priority=level) for i in range(2)])
    assert await aredis.lindex(queue_name, 0) == WAKE_MARKER  # left by the first low task (the list was empty)
    inspector = Inspector(aredis, settings)
    info = await inspector.queue(queue_name)
    assert info.ready == 6  # tasks only: the marker is not counted
    assert {name: level.ready for name, level in info.levels.items()} == {"high": 2, "default": 2, "low": 2}
    page = await inspector.ready(queue_name, offset=1, limit=4)
    assert [item.id for item in page.items] == ["high-1", "default-0", "default-1", "low-0"]  # not the marker
    assert page.total == 6
    found = await inspector.task(queue_name, "low-1")
    assert found is not None and found.state == "ready"
