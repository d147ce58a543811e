"""A task's whereabouts (issue 20, part 2): every script that moves a task records where it is, so a lookup by id is
one HGET and never blind: the 10,001st ready task, each priority level, an eta, a retry, a dead letter requeued, a
cancel, a task recovered from a SIGKILLed worker, a schedule's run, a raw push; and the record goes when the task
settles (its result record, kept `result_ttl`, says how it ended)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, RetryTask
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.flow import FlowLimits
from gopherq.core.inspect import Inspector
from gopherq.core.inspect.lookup import DEEP_NOTE, SEARCHED_NOTE
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings, load_settings
from gopherq.core.whereabouts import LAYOUT_FIELD, LAYOUT_VALUE, Whereabouts
from tests.support.common import async_wait_until
from tests.support.faces import write_ops_config
from tests.support.loopback import LoopbackServer
from tests.support.plugins import ExecutorPlugin, FailExecutor, GateExecutor

Start = Callable[..., Any]


async def record(aredis: aioredis.Redis, queue: str, task_id: str) -> Whereabouts | None:
    return Whereabouts.parse(await aredis.hget(QueueKeys(queue).where, task_id))


class RetryOnce:
    """Asks for another attempt on its first try (after `delay` s), then succeeds."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.tries: dict[str, int] = {}

    async def execute(self, task: Any, context: Any) -> str:
        self.tries[task.id] = self.tries.get(task.id, 0) + 1
        if self.tries[task.id] == 1:
            raise RetryTask("not yet", delay=self.delay)
        return "ok"


async def test_the_10001st_ready_task_is_found_at_once_and_each_level_and_eta_is_recorded(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    async with AsyncClient(settings) as client:
        tasks = [client.task("http", url="https://example.com/x", id=f"t{n:05d}") for n in range(14_000)]
        await client.enqueue_many(tasks)
        await client.enqueue_http("https://example.com/h", id="high1", priority="high")
        await client.enqueue_http("https://example.com/l", id="low1", priority="low")
        await client.enqueue_http("https://example.com/e", id="eta1", eta=time.time() + 600)
        await client.enqueue_http("https://example.com/u", id="uniq1", unique_key="u", delay=300)
        inspect = client.inspect

        deep = await inspect.task(queue_name, "t10000")  # the 10,001st: past every old search limit
        assert deep is not None and deep.state == "ready" and deep.where is not None
        assert deep.where["place"] == "ready" and deep.where["level"] == "default" and deep.where["how"] == "enqueued"
        assert deep.envelope is None and deep.note == DEEP_NOTE  # its place is known; its bytes are not read
        near_tail = await inspect.task(queue_name, "t13990")
        assert near_tail is not None and near_tail.state == "ready" and near_tail.envelope is not None
        assert near_tail.envelope["id"] == "t13990" and near_tail.note is None
        head = await inspect.task(queue_name, "t00003")
        assert head is not None and head.envelope is not None and head.envelope["id"] == "t00003"

        for task_id, level in (("high1", "high"), ("low1", "low")):
            info = await inspect.task(queue_name, task_id)
            assert info is not None and info.state == "ready" and info.where is not None
            assert info.where["level"] == level and info.envelope is not None and info.envelope["id"] == task_id
        for task_id in ("eta1", "uniq1"):
            info = await inspect.task(queue_name, task_id)
            assert info is not None and info.state == "delayed" and info.where is not None
            assert info.where["reason"] == "scheduled" and info.envelope is not None
            assert info.envelope["id"] == task_id and info.where["due_at"] > time.time() + 200

        # Cancelled while delayed: the record goes; the result record says how it ended.
        assert await client.cancel("eta1") == "cancelled"
        assert await record(aredis, queue_name, "eta1") is None
        info = await inspect.task(queue_name, "eta1")
        assert info is not None and info.state == "cancelled" and info.where is None
        assert await inspect.task(queue_name, "no-such-task") is None


async def test_claim_retry_promotion_and_success_move_the_record(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    settings = make_settings(queue={"max_attempts": 3})
    gate, retry = GateExecutor(), RetryOnce(delay=60)
    plugins = {"gate": ExecutorPlugin("gate", gate), "again": ExecutorPlugin("again", retry)}
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=plugins)) as client:
        running = await start_worker(settings, extra_plugins=plugins)
        await client.enqueue("gate", id="g1", priority="high")
        await async_wait_until(lambda: gate.started == 1, what="the task to start")
        held = await record(aredis, queue_name, "g1")
        assert held is not None and held.place == "running" and held.worker == running.worker.id
        info = await client.inspect.task(queue_name, "g1")
        assert info is not None and info.state == "running" and info.worker == running.worker.id
        assert info.where is not None and info.where["token"] == held.token and info.envelope is not None

        await client.enqueue("again", id="r1")
        await async_wait_until(lambda: retry.tries.get("r1") == 1, what="the first attempt")

        async def retrying() -> bool:
            found = await record(aredis, queue_name, "r1")
            return found is not None and found.place == "delayed"

        await async_wait_until(retrying, what="the retry to be recorded")
        info = await client.inspect.task(queue_name, "r1")
        assert info is not None and info.state == "delayed" and info.where is not None
        assert info.where["reason"] == "retrying" and info.where["detail"] == "2/3"
        assert info.envelope is not None and info.envelope["attempt"] == 2

        # Made due now: the promotion records it ready again, then it runs and succeeds; the record goes.
        k = QueueKeys(queue_name)
        [(envelope, _)] = await aredis.zrange(k.delayed, 0, 0, withscores=True)
        await aredis.zadd(k.delayed, {envelope: 0})
        await async_wait_until(lambda: retry.tries.get("r1") == 2, what="the second attempt")
        await client.wait("r1", timeout=10)
        assert await record(aredis, queue_name, "r1") is None
        info = await client.inspect.task(queue_name, "r1")
        assert info is not None and info.state == "succeeded" and info.where is None

        gate.gate.set()
        await client.wait("g1", timeout=10)
        assert await record(aredis, queue_name, "g1") is None


async def test_a_promoted_task_is_recorded_ready(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name)
    envelope = codec.dumps({"id": "p1", "type": "http", "url": "https://example.com/", "priority": "low"})
    await broker.push_delayed([(envelope, 1000)], ["p1"])
    found = await record(aredis, queue_name, "p1")
    assert found is not None and (found.place, found.reason) == ("delayed", "scheduled")
    assert await broker.promote() == 1
    found = await record(aredis, queue_name, "p1")
    assert found is not None and (found.place, found.level, found.how) == ("ready", "low", "promoted")


async def test_the_where_hash_is_a_hash_table_from_its_first_write_even_after_a_hostile_empty_id(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    """A listpack hash (Redis's layout for up to 512 short fields) is scanned whole on every write and delete: with a
    few hundred tasks in flight that was a third of Redis's work per task. The layout field keeps it a hash table,
    and a raw push whose id is "" (the layout field's name: no task id can be empty) cannot undo that for long."""
    broker = Broker(aredis, queue_name, "w1")
    k = QueueKeys(queue_name)
    envelope = b'{"id":"%d","type":"http","url":"https://example.com/"}'
    await aredis.rpush(queue_name, *[envelope % n for n in range(3)])
    assert len(await broker.claim(3, 60_000)) == 3
    assert await aredis.object("encoding", k.where) == b"hashtable"
    assert await aredis.hget(k.where, LAYOUT_FIELD) == LAYOUT_VALUE.encode()
    await broker.push([envelope % 7], ["7"])  # a client's write keeps it too
    assert await aredis.hget(k.where, LAYOUT_FIELD) == LAYOUT_VALUE.encode()

    await aredis.delete(k.where)
    await aredis.rpush(queue_name, b'{"id":"","type":"http"}')
    [(token, _raw)] = await broker.claim(1, 60_000)  # the task "7" is first: the hostile bytes come next
    claimed = await broker.claim(1, 60_000)
    assert claimed and claimed[0][1] == b'{"id":"","type":"http"}'
    hostile_token = claimed[0][0]
    assert (await aredis.hget(k.where, LAYOUT_FIELD) or b"").startswith(b"running|" + hostile_token.encode())
    assert await aredis.object("encoding", k.where) == b"hashtable"  # Redis never turns it back into a listpack
    # The settle that dead-letters the bytes forgets the record it names, the layout field with it ...
    await broker.settle(
        [Settlement("dead", hostile_token, "", data=b"{}", extra="x", forget=""), Settlement("ack", token, "7")],
        60,
        100,
    )
    assert not await aredis.exists(k.where)
    # ... and the next write has it again.
    await aredis.rpush(queue_name, envelope % 8)
    assert len(await broker.claim(1, 60_000)) == 1
    assert await aredis.object("encoding", k.where) == b"hashtable"


async def test_a_dead_letter_requeued_is_recorded_ready(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    settings = make_settings()
    plugins = {"fail": ExecutorPlugin("fail", FailExecutor())}
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=plugins)) as client:
        await client.enqueue("fail", id="d1")
        worker = await start_worker(settings, extra_plugins=plugins)
        await client.wait("d1", timeout=10)
        assert await record(aredis, queue_name, "d1") is None
        info = await client.inspect.task(queue_name, "d1")
        assert info is not None and info.state == "dead" and info.where is None
        await worker.stop()
        assert await client.dead_letters.requeue(["d1"]) == 1
        found = await record(aredis, queue_name, "d1")
        assert found is not None and (found.place, found.level, found.how) == ("ready", "default", "requeued")
        info = await client.inspect.task(queue_name, "d1")
        assert info is not None and info.state == "ready" and info.envelope is not None


async def test_a_raw_push_is_found_by_a_search_until_claimed_then_by_its_record(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    settings = make_settings()
    # The seed's format: "id" not first, spaced JSON; no script, so no record.
    await aredis.rpush(queue_name, b'{"type": "gate", "x": {"id": "decoy"}, "id" : "raw1"}')
    inspect = Inspector(aredis, settings)
    info = await inspect.task(queue_name, "raw1")
    assert info is not None and info.state == "ready" and info.note == SEARCHED_NOTE
    gate = GateExecutor()
    worker = await start_worker(settings, extra_plugins={"gate": ExecutorPlugin("gate", gate)})
    await async_wait_until(lambda: gate.started == 1, what="the raw task to start")
    found = await record(aredis, queue_name, "raw1")
    assert found is not None and found.place == "running" and found.worker == worker.worker.id
    assert await record(aredis, queue_name, "decoy") is None  # a nested "id" is not the task's
    gate.gate.set()


async def test_a_schedule_run_is_recorded_ready(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name)
    envelope = codec.dumps({"id": "s1", "type": "http", "url": "https://example.com/", "priority": "high"})
    ok, count = await broker.run_schedule("nightly", None, 100, [("s1", envelope)], priority="high")
    assert ok and count == 1
    found = await record(aredis, queue_name, "s1")
    assert found is not None and (found.place, found.level, found.how) == ("ready", "high", "scheduled")


async def test_a_sigkilled_workers_task_is_recorded_running_then_recovered(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    aredis: aioredis.Redis,
    loopback: LoopbackServer,
    worker_process: Callable[..., Any],
) -> None:
    config = write_ops_config(tmp_path, redis_url, queue_name)
    process = worker_process(["run", "-c", str(config)])
    await async_wait_until(lambda: f"started: queue {queue_name}" in process.output, timeout=30, what="start")
    settings = load_settings(config, environ={})
    async with AsyncClient(settings) as client:
        await client.enqueue_http(loopback.url("/slow?seconds=60"), id="held")
        await async_wait_until(lambda: loopback.count("held") == 1, timeout=15, what="the task to start")
        held = await record(aredis, queue_name, "held")
        assert held is not None and held.place == "running" and held.worker is not None
        process.kill()  # SIGKILL: nothing settles the task; its record still names the dead worker
        await async_wait_until(
            lambda: _state(client.inspect, queue_name, "held", "orphaned"), timeout=15, what="the orphan"
        )
        reaper = Broker(aredis, queue_name, "reaper")
        assert await reaper.reap(worker_ttl_ms=0, lock_ms=5000, owner="test") is not None
        found = await record(aredis, queue_name, "held")
        assert found is not None and (found.place, found.level, found.how) == ("ready", "default", "recovered")
        info = await client.inspect.task(queue_name, "held")
        assert info is not None and info.state == "ready" and info.envelope is not None
        assert info.envelope["recoveries"] == 1 and settings.queue.name == queue_name


async def _state(inspect: Inspector, queue: str, task_id: str, state: str) -> bool:
    info = await inspect.task(queue, task_id)
    return info is not None and info.state == state


class Limited(GateExecutor):
    """A gate whose tasks share one flow key with a concurrency of one: a second task is held back."""

    def flow(self, task: Any) -> tuple[str, FlowLimits]:
        return "partner.example", FlowLimits(concurrency=1, wait=30.0)


async def test_held_back_and_early_tasks_are_recorded_delayed_with_their_reason(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    settings = make_settings()
    limited = Limited()
    plugins = {"limited": ExecutorPlugin("limited", limited)}
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=plugins)) as client:
        await start_worker(settings, extra_plugins=plugins)
        await client.enqueue("limited", id="first")
        await async_wait_until(lambda: limited.started == 1, what="the first task to start")
        await client.enqueue("limited", id="second")

        async def held() -> bool:
            found = await record(aredis, queue_name, "second")
            return found is not None and found.place == "delayed"

        await async_wait_until(held, what="the second task to be held back")
        info = await client.inspect.task(queue_name, "second")
        assert info is not None and info.state == "delayed" and info.where is not None
        assert (info.where["reason"], info.where["detail"]) == ("held", "partner.example")
        assert info.envelope is not None and info.envelope["id"] == "second"

        # A raw push whose eta is ahead reaches a worker early: deferred to it, recorded as scheduled.
        envelope = {"id": "early", "type": "limited", "eta": time.time() + 300}
        await aredis.rpush(queue_name, codec.dumps(envelope))

        async def deferred() -> bool:
            found = await record(aredis, queue_name, "early")
            return found is not None and found.place == "delayed"

        await async_wait_until(deferred, what="the early task to be deferred")
        found = await record(aredis, queue_name, "early")
        assert found is not None and found.reason == "scheduled" and found.at is not None
        assert abs(found.at - envelope["eta"]) < 0.01
        limited.gate.set()


async def test_bytes_that_never_become_a_task_leave_no_record(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    settings = make_settings()
    await start_worker(settings)
    # Not JSON after its first bytes; and two "id" keys (the claim reads the first, the parser keeps the last).
    await aredis.rpush(queue_name, b'{"id":"broken1", not json', b'{"id":"first","id":"second","type":"nope"}')
    k = QueueKeys(queue_name)
    await async_wait_until(lambda: _dead_count(aredis, k, 2), what="both to be dead-lettered")
    assert not await aredis.hexists(k.where, "broken1")  # forgotten by the settle that dead-lettered the bytes
    assert await aredis.hexists(k.dead, "second") and not await aredis.hexists(k.where, "second")
    # The claim recorded the duplicate-key task under its first id: that record names an attempt no longer in
    # flight, so a lookup does not believe it (docs/operations.md, Whereabouts).
    assert await Inspector(aredis, settings).task(queue_name, "first") is None


async def _dead_count(aredis: aioredis.Redis, k: QueueKeys, count: int) -> bool:
    return int(await aredis.zcard(k.dead_index)) == count


async def test_a_record_whose_task_is_not_where_it_says_is_not_believed(
    make_settings: Callable[..., Settings], queue_name: str, aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    async with AsyncClient(settings) as client:
        await client.enqueue_http("https://example.com/", id="gone1")
        await client.enqueue_http("https://example.com/", id="gone2", delay=300)
        await aredis.delete(queue_name, QueueKeys(queue_name).delayed)  # removed by hand, outside GoPherQ
        assert await record(aredis, queue_name, "gone1") is not None
        assert await client.inspect.task(queue_name, "gone1") is None
        assert await client.inspect.task(queue_name, "gone2") is None
