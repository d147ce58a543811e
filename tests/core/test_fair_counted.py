"""Fair keys, which running tasks are counted: only a key with a limit (concurrency or ordered) records its running
tasks, and only the settles of the attempts the claim counted free a place. A limit set or lifted while the key's
tasks run must never drive the count below zero nor hold a place forever; a key with no limit costs its claims and
settles no running set at all. A visit takes up to the quantum (2 per unit of weight) within the key's limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement, SpecialPush
from gopherq.core.fair import FairKeys
from gopherq.core.keys import WAKE_MARKER
from gopherq.core.sections import FairSettings
from gopherq.core.settings import Settings
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin


def envelope(task_id: str, key: str) -> bytes:
    return codec.dumps({"id": task_id, "type": "rec", "fair_key": key})


async def enqueue(broker: Broker, key: str, task_ids: list[str]) -> None:
    pushes = [SpecialPush(task_id, envelope(task_id, key)) for task_id in task_ids]
    assert await broker.push_special(pushes) == [None] * len(pushes)


async def claim(broker: Broker, count: int) -> dict[str, str]:
    """Task id -> attempt token of what one claim took."""
    got = await broker.claim(count, 60000)
    assert got is not None
    return {codec.loads(raw)["id"]: token for token, raw in got if raw != WAKE_MARKER}


async def ack(broker: Broker, held: dict[str, str], task_id: str, key: str) -> None:
    settled = Settlement("ack", held.pop(task_id), task_id, fair_key=key)
    assert await broker.settle([settled], 60, 100) == [True]


async def fair_keys_left(aredis: aioredis.Redis, broker: Broker) -> list[Any]:
    return [key async for key in aredis.scan_iter(match=f"{broker.keys.fair_prefix}*", count=1000)]


async def test_a_key_without_limits_keeps_no_running_set(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, "free", [f"f{i}" for i in range(4)])
    held = await claim(broker, 4)
    assert len(held) == 4
    assert broker.fair_counted == set()  # nothing for its settles to free
    assert not await aredis.exists(broker.keys.fair_running("free"))
    for task_id in list(held):
        await ack(broker, held, task_id, "free")
    assert await fair_keys_left(aredis, broker) == []


async def test_a_limit_set_while_its_tasks_run_counts_from_then_on(aredis: aioredis.Redis, queue_name: str) -> None:
    """What we chose: a limit set at run time counts the tasks claimed from then on; those already running (claimed
    while the key had no limit) finish uncounted, so for as long as they run the key may have up to that many more
    than its limit. Their settles change nothing, so the count never goes below zero."""
    broker = Broker(aredis, queue_name, "w1")
    control = FairKeys(aredis, queue_name, FairSettings())
    await enqueue(broker, "t", [f"t{i}" for i in range(8)])
    early = await claim(broker, 3)  # no limit yet: not counted
    assert sorted(early) == ["t0", "t1", "t2"] and broker.fair_counted == set()
    await control.set("t", concurrency=2)
    late = await claim(broker, 10)
    assert sorted(late) == ["t3", "t4"]  # the limit, counted from now
    assert broker.fair_counted == set(late.values())
    assert await claim(broker, 10) == {}  # at its limit: parked
    for task_id in list(early):  # the uncounted tasks end: no place to free, nothing goes negative
        await ack(broker, early, task_id, "t")
    assert await aredis.zcard(broker.keys.fair_running("t")) == 2
    assert await claim(broker, 10) == {}
    await ack(broker, late, "t3", "t")  # a counted one ends: its place is free again
    assert await aredis.zcard(broker.keys.fair_running("t")) == 1
    assert sorted(await claim(broker, 10)) == ["t5"]


async def test_a_limit_lifted_while_counted_tasks_run_leaves_nothing_behind(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    control = FairKeys(aredis, queue_name, FairSettings())
    await control.set("t", concurrency=1)
    await enqueue(broker, "t", [f"t{i}" for i in range(4)])
    counted = await claim(broker, 10)
    assert list(counted) == ["t0"]
    await control.reset("t")  # no limit any more: the next claims count nothing
    free = await claim(broker, 10)
    assert sorted(free) == ["t1", "t2", "t3"]
    assert broker.fair_counted == set(counted.values())
    await ack(broker, counted, "t0", "t")  # the counted task still frees its place
    assert broker.fair_counted == set()
    for task_id in list(free):
        await ack(broker, free, task_id, "t")
    assert await fair_keys_left(aredis, broker) == []  # no running set left to leak a place later
    # Set again: the count starts from nothing.
    await control.set("t", concurrency=1)
    await enqueue(broker, "t", ["t4", "t5"])
    assert list(await claim(broker, 10)) == ["t4"]


async def test_a_visit_takes_up_to_the_quantum_within_the_keys_limits(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await aredis.hset(broker.keys.fair_config, mapping={"w2": "2,,,,,", "capped": "1,3,,,,"})
    await enqueue(broker, "a", [f"a{i}" for i in range(6)])
    await enqueue(broker, "w2", [f"w{i}" for i in range(12)])
    await enqueue(broker, "capped", [f"c{i}" for i in range(6)])
    order = list(await claim(broker, 30))  # one claim: its visits are not cut short by its room
    runs: dict[str, int] = {}
    previous, length = "", 0
    for task_id in order[: order.index("a5")]:  # while every key has tasks waiting
        length = length + 1 if task_id[0] == previous else 1
        previous = task_id[0]
        runs[previous] = max(runs.get(previous, 0), length)
    assert runs == {"a": 2, "c": 2, "w": 4}, order  # the quantum: 2 per unit of weight
    assert [t for t in order if t[0] == "c"] == ["c0", "c1", "c2"], order  # its limit: 3 running
    assert [t for t in order if t[0] == "w"] == [f"w{i}" for i in range(12)], order


async def test_a_raw_push_sorted_into_a_key_the_same_claim_emptied_keeps_it_active(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, "a", ["a1"])
    # Key "a" is ahead of the keyless tasks' turn, so its only task is taken before a raw push of its own (behind
    # a keyless task in the plain list) is sorted into its list, by the same claim.
    await aredis.set(f"{keys.fair_active('d')}:vt", 1)
    await aredis.rpush(queue_name, codec.dumps({"id": "x", "type": "rec"}), envelope("a2", "a"))
    claimed: list[str] = []
    while got := await claim(broker, 10):
        claimed += got
    assert sorted(claimed) == ["a1", "a2", "x"]


class KeyGauge:
    """Counts the running attempts of each fair key, and the most at once."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def execute(self, task: Any, context: Any) -> None:
        key = task.fair_key
        self.running[key] = self.running.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.running[key])
        await asyncio.sleep(0.02)
        self.running[key] -= 1


async def test_a_worker_frees_the_places_it_was_counted_in(
    aredis: aioredis.Redis, queue_name: str, make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    gauge = KeyGauge()
    await FairKeys(aredis, queue_name, FairSettings()).set("capped", concurrency=2)
    running = await start_worker(
        make_settings(worker={"concurrency": 8}), extra_plugins={"gauge": ExecutorPlugin("gauge", gauge)}
    )
    broker = running.worker.broker
    tasks = [("capped", f"c{i}") for i in range(12)] + [("free", f"f{i}") for i in range(12)]
    pushes = [
        SpecialPush(task_id, codec.dumps({"id": task_id, "type": "gauge", "fair_key": key})) for key, task_id in tasks
    ]
    assert await Broker(aredis, queue_name).push_special(pushes) == [None] * len(pushes)
    keys = broker.keys

    async def all_done() -> bool:
        return all(await aredis.mget([keys.result(task_id) for _, task_id in tasks]))

    await async_wait_until(all_done, what="every task's result")
    assert gauge.peak["capped"] <= 2, gauge.peak
    # Every counted place was freed by its task's settle (a recount happens only when the key looks full).
    assert not await aredis.exists(keys.fair_running("capped"), keys.fair_running("free"))
    assert broker.fair_counted == set()
