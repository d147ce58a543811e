"""True numbers (issue 20, part 1): each incident an SRE meets, built on the real Redis with real workers, then read
through every face of the inspection layer: `gopherq queues --json` (the real command), the `/v1` API, `/metrics`,
and the alert rules of docs/operations.md evaluated on that scrape.

- every queue that has anything is listed: a paused queue holding only low-priority tasks and no worker, a queue
  with only delayed tasks, a schedule's target, a queue a worker serves that only raw pushes fed;
- `ready` counts tasks only (not the wake marker a priority enqueue leaves);
- latency counts from when the oldest task, at any level, became ready: enqueued, a retry come due, a dead letter
  requeued, a task recovered from a killed worker (not from `created_at`), and a raw head from when it was first
  seen;
- a task held by a worker whose heartbeat is gone is `orphaned`, and the no-worker alert fires for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from gopherq import AsyncClient, RetryTask
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.inspect import ORPHANED_NOTE, Inspector
from gopherq.core.keys import QUEUE_REGISTRY, QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.registry import FORGET_AFTER
from gopherq.core.settings import Settings, load_settings
from tests.support.common import async_wait_until
from tests.support.faces import Faces, sample, write_ops_config
from tests.support.loopback import LoopbackServer
from tests.support.plugins import ExecutorPlugin, FailExecutor, NoopExecutor

Start = Callable[..., Any]


@pytest.fixture
def more_queues(redis_url: str, queue_name: str) -> Iterator[Callable[[str], str]]:
    """`more_queues("x")` names another queue of this test (`<queue_name>_x`); its keys and registry entry are
    deleted at teardown."""
    made: list[str] = []

    def make(suffix: str) -> str:
        made.append(f"{queue_name}_{suffix}")
        return made[-1]

    yield make
    client = redis.Redis.from_url(redis_url)
    for name in made:
        client.delete(name, *client.scan_iter(match=f"gopherq:{{{name}}}:*", count=1000))
        client.zrem(QUEUE_REGISTRY, name)
    client.close()


def settings_for(config: Path, queue: str) -> Settings:
    return load_settings(config, {"queue": {"name": queue}}, environ={})


def raw_task(task_id: str, created_ago: float, **fields: Any) -> bytes:
    """A task envelope as a producer writes it, created `created_ago` seconds ago (an HTTP call unless `fields`
    say otherwise)."""
    envelope = {"id": task_id, "url": "http://127.0.0.1/", "created_at": time.time() - created_ago, **fields}
    return codec.dumps(envelope)


NOOP = {"noop": ExecutorPlugin("noop", NoopExecutor())}


async def faces_of(tmp_path: Path, redis_url: str, configured: str, aredis: Any, extra: str = "") -> Faces:
    return Faces(write_ops_config(tmp_path, redis_url, configured, extra), aredis)


# -- discovery ---------------------------------------------------------------------------------------------------


async def test_every_queue_that_has_anything_is_listed_by_every_face(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    aredis: aioredis.Redis,
    more_queues: Callable[[str], str],
    start_worker: Start,
) -> None:
    paused, later, fed, target = queue_name, more_queues("later"), more_queues("raw"), more_queues("sched")
    configured = f"{queue_name}_other"  # the config names another queue: nothing here is listed for being configured
    schedule = f'[[schedules]]\nname = "hourly"\nevery = 3600\nqueue = "{target}"\ntask = {{ type = "noop" }}\n'
    async with await faces_of(tmp_path, redis_url, configured, aredis, schedule) as faces:
        async with AsyncClient(faces.settings) as client:
            await client.enqueue_many(
                [client.task("http", url="http://127.0.0.1/", queue=paused, priority="low") for _ in range(400)]
            )
            await client.enqueue("http", url="http://127.0.0.1/", queue=later, delay=3600)
        assert (await faces.cli("pause", paused)).returncode == 0
        await aredis.rpush(fed, raw_task("raw-1", 0, type="noop"))  # a seed-style push: GoPherQ sees nothing...
        worker = await start_worker(settings_for(faces.config, fed), extra_plugins=NOOP)
        await async_wait_until(lambda: aredis.hexists(QueueKeys(fed).stats, "acked"), what="the raw task to run")
        await worker.stop()  # ...until a worker serves the queue

        for listed in (await faces.cli_queue(paused), await faces.api_listed(paused)):
            assert listed is not None
            assert (listed["ready"], listed["paused"], listed["workers"], listed["running"]) == (400, True, 0, 0)
            assert {name: level["ready"] for name, level in listed["levels"].items()} == {
                "high": 0,
                "default": 0,
                "low": 400,
            }
        for name, key, value in ((later, "delayed", 1), (fed, "ready", 0), (target, "ready", 0)):
            for listed in (await faces.cli_queue(name), await faces.api_listed(name)):
                assert listed is not None and listed[key] == value, name
        samples = await faces.metrics()
        assert sample(samples, "gopherq_queue_ready_tasks", queue=paused) == 400
        assert sample(samples, "gopherq_queue_level_ready_tasks", queue=paused, priority="low") == 400
        assert sample(samples, "gopherq_queue_paused", queue=paused) == 1
        assert sample(samples, "gopherq_queue_delayed_tasks", queue=later) == 1
        assert sample(samples, "gopherq_queue_tasks_total", queue=fed, outcome="succeeded") == 1
        assert sample(samples, "gopherq_workers_alive", queue=target) == 0
        # Paused on purpose, nothing running: no alert; the same backlog unpaused and without a worker alerts.
        assert "GopherqNoWorkers" not in await faces.firing(paused, samples)
        assert (await faces.cli("resume", paused)).returncode == 0
        assert "GopherqNoWorkers" in await faces.firing(paused)


async def test_a_registered_name_with_nothing_left_is_dropped_after_an_hour(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, more_queues: Callable[[str], str]
) -> None:
    gone, fresh = more_queues("gone"), more_queues("fresh")
    inspector = Inspector(aredis, make_settings())
    stale = int((time.time() - FORGET_AFTER - 60) * 1000)
    await aredis.zadd(QUEUE_REGISTRY, {gone: stale, fresh: int(time.time() * 1000)})
    names = await inspector.queue_names()
    assert fresh in names and gone not in names  # an empty queue is listed for an hour after its last note
    assert await aredis.zscore(QUEUE_REGISTRY, gone) is None and await aredis.zscore(QUEUE_REGISTRY, fresh)
    await aredis.zadd(QUEUE_REGISTRY, {gone: stale})
    await aredis.hset(QueueKeys(gone).stats, "acked", 1)  # a queue with history stays, however old its note
    assert gone in await inspector.queue_names()


async def test_discover_registers_queues_left_by_a_version_without_the_registry(
    private_redis: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    server = private_redis()
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.hset(QueueKeys("old_one").stats, "acked", 3)
        await client.zadd(QueueKeys("old_two").dead_index, {"x": 1})
        await client.rpush("plain_list", b"{}")  # not a GoPherQ key: no queue can be told from it
        inspector = Inspector(client, make_settings(redis={"url": server.url}))
        assert not {"old_one", "old_two"} & set(await inspector.queue_names())  # listing never scans
        assert await inspector.discover() == ["old_one", "old_two"]
        assert {"old_one", "old_two"} <= set(await inspector.queue_names())
        assert await inspector.discover() == []
    finally:
        await client.aclose()


# -- ready and latency -------------------------------------------------------------------------------------------


async def test_ready_counts_tasks_and_latency_counts_every_level(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis
) -> None:
    async with await faces_of(tmp_path, redis_url, queue_name, aredis) as faces:
        async with AsyncClient(faces.settings) as client:
            for n in range(10):  # ten high-priority tasks that have waited 40 s, the plain list empty
                await client.enqueue_raw(raw_task(f"h{n}", 40, priority="high"))
        assert await aredis.llen(queue_name) == 1  # the wake marker the first of them left
        for info in (await faces.cli_queue(queue_name), await faces.api_queue(queue_name)):
            assert info is not None
            assert info["ready"] == 10 and info["levels"]["high"]["ready"] == 10
            assert 40 <= info["latency"] < 100 and 40 <= info["levels"]["high"]["latency"] < 100
            assert info["levels"]["default"] == {"ready": 0, "latency": 0.0}
        samples = await faces.metrics()
        assert sample(samples, "gopherq_queue_ready_tasks", queue=queue_name) == 10
        assert 40 <= (sample(samples, "gopherq_queue_latency_seconds", queue=queue_name) or 0) < 100
        high = sample(samples, "gopherq_queue_level_latency_seconds", queue=queue_name, priority="high")
        assert high is not None and 40 <= high < 100
        fired = await faces.firing(queue_name, samples)
        assert {"GopherqNoWorkers", "GopherqHighPriorityBacklogAge"} <= fired
        assert "GopherqBacklogAge" not in fired  # 40 s is not a backlog at the default level's 5 minutes


async def test_latency_grows_while_tasks_wait(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    async with AsyncClient(settings) as client:
        await client.enqueue_many([client.task("http", url="http://127.0.0.1/", priority="high") for _ in range(3)])
        inspect = client.inspect
        assert (await inspect.queue(queue_name)).latency < 1.0
        await async_wait_until(lambda: _latency_over(inspect, queue_name, 1.0), what="latency to reach 1 s")


async def _latency_over(inspect: Inspector, queue: str, seconds: float) -> bool:
    return (await inspect.queue(queue)).levels["high"].latency >= seconds


async def test_a_raw_head_is_measured_from_when_it_was_first_seen(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A seed-style push carries no time: its wait counts from the first inspection that saw it at the head, grows
    while it stays there, and starts again for the next head."""
    inspector = Inspector(aredis, make_settings())
    await aredis.rpush(queue_name, b'{"id":"r1","method":"GET","url":"http://127.0.0.1/"}')
    await aredis.rpush(queue_name, b'{"id":"r2","method":"GET","url":"http://127.0.0.1/"}')
    assert (await inspector.queue(queue_name)).latency < 0.5  # first seen now
    await async_wait_until(lambda: _latency_over_default(inspector, queue_name, 1.0), what="the head's age")
    await aredis.lpop(queue_name)  # the head moves on: the next one is new
    assert (await inspector.queue(queue_name)).latency < 0.5
    await aredis.lpop(queue_name)
    assert (await inspector.queue(queue_name)).latency == 0.0
    assert not await aredis.exists(QueueKeys(queue_name).heads)  # nothing left to remember


async def _latency_over_default(inspector: Inspector, queue: str, seconds: float) -> bool:
    return (await inspector.queue(queue)).latency >= seconds


class FailOnceWhenLetGo:
    """Holds each task's first attempt until `gate` opens, then fails it (retryable); later attempts succeed."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def execute(self, task: Any, context: Any) -> None:
        if context.attempt == 1:
            self.started += 1
            await self.gate.wait()
            raise RetryTask("not yet", delay=0.2)


async def test_a_requeued_old_dead_letter_waits_from_its_requeue(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    async with await faces_of(tmp_path, redis_url, queue_name, aredis) as faces:
        worker = await start_worker(faces.settings, extra_plugins={"noop": ExecutorPlugin("noop", FailExecutor())})
        async with AsyncClient(faces.settings, plugins=load_plugins(faces.settings)) as client:
            await aredis.rpush(queue_name, raw_task("old", 600, type="noop"))  # created ten minutes ago
            await async_wait_until(lambda: client.dead_letters.count(), what="the dead letter")
            await worker.stop()
            assert await client.dead_letters.requeue() == 1
        for info in (await faces.cli_queue(queue_name), await faces.api_queue(queue_name)):
            assert info is not None and info["ready"] == 1 and info["latency"] < 60  # not ~600
        assert (sample(await faces.metrics(), "gopherq_queue_latency_seconds", queue=queue_name) or 0) < 60


async def test_a_retry_waits_from_when_it_came_due(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    async with await faces_of(tmp_path, redis_url, queue_name, aredis) as faces:
        executor = FailOnceWhenLetGo()
        await start_worker(faces.settings, extra_plugins={"noop": ExecutorPlugin("noop", executor)})
        inspect = Inspector(aredis, faces.settings)
        await aredis.rpush(queue_name, raw_task("late", 600, type="noop"))  # created ten minutes ago
        await async_wait_until(lambda: executor.started == 1, what="the first attempt")
        await inspect.pause(queue_name)  # the attempt fails; its retry, promoted when due, stays ready
        executor.gate.set()
        await async_wait_until(lambda: _ready(inspect, queue_name), what="the retry to be promoted")
        page = await inspect.ready(queue_name)
        assert page.items[0].attempt == 2
        assert page.items[0].enqueued_at is not None and page.items[0].enqueued_at > time.time() - 60
        for info in (await faces.cli_queue(queue_name), await faces.api_queue(queue_name)):
            assert info is not None and info["ready"] == 1 and info["latency"] < 60  # from its due time, not ~600


async def _ready(inspect: Inspector, queue: str) -> bool:
    return (await inspect.queue(queue)).ready == 1


# -- orphaned tasks ---------------------------------------------------------------------------------------------


async def test_a_task_of_a_killed_worker_is_orphaned_until_a_worker_recovers_it(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    aredis: aioredis.Redis,
    loopback: LoopbackServer,
    worker_process: Callable[..., Any],
    start_worker: Start,
) -> None:
    async with await faces_of(tmp_path, redis_url, queue_name, aredis) as faces:
        process = worker_process(["run", "-c", str(faces.config)])
        await async_wait_until(lambda: f"started: queue {queue_name}" in process.output, timeout=30, what="start")
        envelope = {"id": "held", "url": loopback.url("/slow?seconds=60"), "created_at": time.time() - 600}
        await aredis.rpush(queue_name, codec.dumps(envelope))
        await async_wait_until(lambda: loopback.count("held") == 1, timeout=15, what="the task to start")
        process.kill()  # SIGKILL: its heartbeat stops, its lease runs out, nothing settles the task
        inspect = Inspector(aredis, faces.settings)
        await async_wait_until(lambda: _orphaned(inspect, queue_name), timeout=15, what="the orphan")

        done = await faces.cli("queues")
        assert f"{queue_name}: 1 orphaned task(s), {ORPHANED_NOTE}" in done.stderr
        for info in (await faces.cli_queue(queue_name), await faces.api_queue(queue_name)):
            assert info is not None
            assert (info["running"], info["orphaned"], info["workers"], info["ready"]) == (1, 1, 0, 0)
        task = await faces.cli("task", "held", "--json")
        assert json.loads(task.stdout)["state"] == "orphaned"
        assert f"orphaned ({ORPHANED_NOTE})" in (await faces.cli("task", "held")).stdout
        status, body = await faces.get(f"/v1/tasks/held?queue={queue_name}")
        assert status == 200 and body["state"] == "orphaned"
        status, page = await faces.get(f"/queues/{queue_name}?tab=running")
        assert status == 200 and "state-orphaned" in page and ORPHANED_NOTE in page
        samples = await faces.metrics()
        assert sample(samples, "gopherq_queue_orphaned_tasks", queue=queue_name) == 1
        assert sample(samples, "gopherq_queue_running_tasks", queue=queue_name) == 1
        assert {"GopherqNoWorkers", "GopherqOrphanedTasks"} <= await faces.firing(queue_name, samples)

        # A worker of the queue recovers it (paused: it stays ready), and it has waited since its recovery.
        await inspect.pause(queue_name)
        await start_worker(faces.settings)
        await async_wait_until(lambda: _ready(inspect, queue_name), timeout=15, what="the recovery")
        for info in (await faces.cli_queue(queue_name), await faces.api_queue(queue_name)):
            assert info is not None
            assert (info["orphaned"], info["running"], info["workers"]) == (0, 0, 1)
            assert info["latency"] < 60  # not ~600: counted from the recovery
        assert not {"GopherqNoWorkers", "GopherqOrphanedTasks"} & await faces.firing(queue_name)


async def _orphaned(inspect: Inspector, queue: str) -> bool:
    return (await inspect.queue(queue)).orphaned == 1


async def test_recovery_stamps_the_envelope_tail_in_place(aredis: aioredis.Redis, queue_name: str) -> None:
    """The Lua rewrite of `ready_at` and `recoveries` at the end of the JSON, whatever the envelope ends with."""
    worker = Broker(aredis, queue_name, "w1")
    shapes = [b'{"id":"a"}', b'{"id":"b","ready_at":1.5,"recoveries":2}', b'{"id":"c","x":[],"ready_at":7}  ', b"{}"]
    await worker.push(shapes)
    await worker.claim(len(shapes), lease_ms=-1)
    before = time.time()
    recovered = await Broker(aredis, queue_name, "w2").reap(60_000, 1, "w2")
    assert recovered is not None
    decoded = {codec.loads(raw).get("id"): codec.loads(raw) for raw in await aredis.lrange(queue_name, 0, -1)}
    assert decoded["a"]["recoveries"] == 1 and decoded["b"]["recoveries"] == 3 and decoded["c"]["recoveries"] == 1
    assert decoded["c"]["x"] == []  # bytes kept: an empty array stays an array
    for envelope in decoded.values():
        assert before - 1 <= envelope["ready_at"] <= time.time() + 1
    for raw in await aredis.lrange(queue_name, 0, -1):
        assert raw.count(b'"ready_at"') == 1 and raw.count(b'"recoveries"') == 1
    assert b"not json" == (await _reaped_once(aredis, queue_name, b"not json"))  # left alone: dead-lettered later


async def _reaped_once(aredis: aioredis.Redis, queue: str, raw: bytes) -> bytes:
    await aredis.delete(queue)
    worker = Broker(aredis, queue, "w3")
    await worker.push([raw])
    await worker.claim(1, lease_ms=-1)
    await aredis.delete(QueueKeys(queue).reaper_lock)
    await Broker(aredis, queue, "w4").reap(60_000, 1, "w4")
    return bytes(await aredis.lindex(queue, 0))


async def test_a_silent_workers_staged_task_is_orphaned(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """A task a blocking fetch moved into a worker's list just before the worker died is held by nobody alive."""
    gone = Broker(aredis, queue_name, "gone")
    await gone.heartbeat([], 60_000)
    await gone.push([b'{"id":"staged"}'])
    assert await gone.wait_for_task(1)
    await aredis.zadd(QueueKeys(queue_name).workers, {"gone": int((time.time() - 120) * 1000)})
    info = await Inspector(aredis, make_settings()).queue(queue_name)
    assert (info.ready, info.running, info.orphaned, info.workers) == (0, 1, 1, 0)
