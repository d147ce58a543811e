"""Fair keys, the claim path: keys take turns by weight within a priority level, priorities still come first, keyless
tasks (a raw RPUSH included) keep their path, and every move of a task (recovery, release, retry, promotion,
dead-letter requeue) returns it to its key's list. Idle keys leave nothing in Redis."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement, SpecialPush, now_ms
from gopherq.core.fair import FairKeys
from gopherq.core.keys import WAKE_MARKER
from gopherq.core.sections import FairSettings


def envelope(task_id: str, key: str | None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": task_id, "type": "rec", **fields}
    if key is not None:
        body["fair_key"] = key
    return codec.dumps(body)


async def enqueue(broker: Broker, items: list[tuple[str, str | None]], **fields: Any) -> None:
    level = fields.get("priority")
    pushes = [SpecialPush(task_id, envelope(task_id, key, **fields), priority=level) for task_id, key in items]
    assert await broker.push_special(pushes) == [None] * len(pushes)


async def claim_all(broker: Broker, batch: int = 7) -> list[tuple[str, bytes]]:
    claimed: list[tuple[str, bytes]] = []
    while True:
        got = await broker.claim(batch, 60000)
        assert got is not None
        if not got:
            return claimed
        claimed += got


def ids(claimed: list[tuple[str, bytes]]) -> list[str]:
    return [codec.loads(raw)["id"] for _, raw in claimed if raw != WAKE_MARKER]


async def leftovers(aredis: aioredis.Redis, queue_name: str) -> list[bytes]:
    """The fair-key keys of the queue still in Redis."""
    return sorted([key async for key in aredis.scan_iter(match=f"gopherq:{{{queue_name}}}:fair:*", count=1000)])


async def test_keys_take_turns_and_a_big_backlog_does_not_hold_back_small_keys(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, [(f"big-{i}", "big") for i in range(100)])
    await enqueue(broker, [(f"s{k}-{i}", f"small-{k}") for k in range(5) for i in range(2)])
    order = ids(await claim_all(broker))
    assert len(order) == 110
    # Every small task is claimed within the first rounds, not behind the 100 big ones.
    last_small = max(i for i, task_id in enumerate(order) if task_id.startswith("s"))
    assert last_small < 20, order[:20]
    # Each key's own tasks keep their enqueue order.
    assert [t for t in order if t.startswith("big")] == [f"big-{i}" for i in range(100)]
    assert await leftovers(aredis, queue_name) == []  # idle keys leave nothing


async def test_weights_share_the_claims(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await aredis.hset(broker.keys.fair_config, mapping={"heavy": "3,,,,,", "light": "1,,,,,"})
    await enqueue(broker, [(f"h{i}", "heavy") for i in range(300)] + [(f"l{i}", "light") for i in range(300)])
    first = ids(await claim_all(broker, batch=10))[:200]
    share = Counter(task_id[0] for task_id in first)
    assert 145 <= share["h"] <= 155, share  # 3:1 -> 150 of 200


async def test_priorities_come_first_and_keyless_tasks_take_a_turn(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, [(f"d{i}", "a") for i in range(5)])
    await enqueue(broker, [(f"h{i}", "a") for i in range(3)], priority="high")
    await aredis.rpush(queue_name, *[envelope(f"raw{i}", None) for i in range(5)])  # a raw push: keyless
    order = ids(await claim_all(broker, batch=4))
    assert order[:3] == ["h0", "h1", "h2"]
    rest = order[3:]
    # The keyless tasks share the default level with key "a": they take turns, each turn at most the quantum
    # (2 tasks), each in its own order.
    runs = [len(list(run)) for _, run in itertools.groupby(rest, key=lambda task_id: task_id[0])]
    assert max(runs) <= 2 and len(runs) >= 5, rest
    assert [t for t in rest if t[0] == "d"] == [f"d{i}" for i in range(5)]
    assert [t for t in rest if t[0] == "r"] == [f"raw{i}" for i in range(5)]
    assert await leftovers(aredis, queue_name) == []


async def test_keyless_tasks_alone_keep_their_path(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await aredis.rpush(queue_name, *[envelope(f"raw{i}", None) for i in range(20)])
    assert ids(await claim_all(broker)) == [f"raw{i}" for i in range(20)]
    assert await leftovers(aredis, queue_name) == []


async def test_a_raw_push_with_a_fair_key_joins_its_key(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await aredis.rpush(queue_name, *[envelope(f"big{i}", "big") for i in range(30)])
    await aredis.rpush(queue_name, envelope("small", "small"))
    order = ids(await claim_all(broker, batch=5))
    assert sorted(order) == sorted([f"big{i}" for i in range(30)] + ["small"])
    assert order.index("small") < 5, order
    assert await leftovers(aredis, queue_name) == []


async def test_a_bad_fair_key_pushed_raw_stays_on_the_plain_path(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    bad = codec.dumps({"id": "x", "type": "rec", "fair_key": 5})
    await aredis.rpush(queue_name, bad)
    assert [raw for _, raw in await claim_all(broker)] == [bad]  # the worker dead-letters it (schema_invalid)


async def test_every_move_returns_a_task_to_its_keys_list(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w-gone")
    keys = broker.keys
    await enqueue(broker, [("a1", "a"), ("a2", "a")])
    # Reap: an expired lease goes back to the head of its key's list.
    [(token, raw)] = await broker.claim(1, lease_ms=-1000)
    assert codec.loads(raw)["id"] == "a1"
    assert await broker.reap(worker_ttl_ms=60000, lock_ms=1000, owner="me") is not None
    assert [codec.loads(r)["id"] for r in await aredis.lrange(keys.fair_list("d", "a"), 0, -1)] == ["a1", "a2"]
    # Release (shutdown): back to the head.
    [(token, raw)] = await broker.claim(1, lease_ms=60000)
    settled = Settlement("release", token, "a1", fair_key="a")
    assert await broker.settle([settled], 60, 100) == [True]
    assert [codec.loads(r)["id"] for r in await aredis.lrange(keys.fair_list("d", "a"), 0, -1)] == ["a1", "a2"]
    # A retry goes through the delayed set and, when due, to the tail of its key's list.
    [(token, raw)] = await broker.claim(1, lease_ms=60000)
    retry = envelope("a1", "a", attempt=2)
    settled = Settlement("retry", token, "a1", b"", retry, str(now_ms() - 1), fair_key="a")
    assert await broker.settle([settled], 60, 100) == [True]
    assert await broker.promote() == 1
    assert [codec.loads(r)["id"] for r in await aredis.lrange(keys.fair_list("d", "a"), 0, -1)] == ["a2", "a1"]
    assert await aredis.llen(queue_name) in (0, 1)  # at most a wake marker
    assert ids(await claim_all(broker)) == ["a2", "a1"]


async def test_a_key_at_its_concurrency_limit_is_skipped_not_bounced(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await aredis.hset(keys.fair_config, "capped", "1,2,,,,")
    await enqueue(broker, [(f"c{i}", "capped") for i in range(5)] + [(f"f{i}", "free") for i in range(5)])
    first = await claim_all(broker, batch=4)
    assert sorted(ids(first)) == ["c0", "c1", "f0", "f1", "f2", "f3", "f4"]
    assert await aredis.zcard(keys.delayed) == 0  # skipped, not bounced through the delayed set
    assert await aredis.zscore(keys.fair_parked, "capped") == float("inf")
    # One of the capped key's tasks ends: the next one may run.
    token = next(t for t, raw in first if codec.loads(raw)["id"] == "c0")
    assert await broker.settle([Settlement("ack", token, "c0", fair_key="capped")], 60, 100) == [True]
    assert ids(await claim_all(broker)) == ["c2"]
    # A running task whose end was never reported (its worker's settle was lost, the lease reaped) heals the count.
    token = next(t for t, raw in first if codec.loads(raw)["id"] == "c1")
    await aredis.hdel(keys.inflight, token)
    await aredis.zrem(keys.leases, token)
    assert await FairKeys(aredis, queue_name, FairSettings()).heal() == 1
    assert ids(await claim_all(broker)) == ["c3"]


async def test_an_ordered_key_runs_one_task_at_a_time_and_its_retry_holds_only_it(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await aredis.hset(keys.fair_config, "fifo", "1,,,,1,")
    await enqueue(broker, [(f"o{i}", "fifo") for i in range(3)] + [(f"x{i}", "other") for i in range(3)])
    first = await claim_all(broker)
    assert sorted(ids(first)) == ["o0", "x0", "x1", "x2"]
    # o0 fails: its retry goes back to the head of its key's list and the key rests until it is due.
    token = next(t for t, raw in first if codec.loads(raw)["id"] == "o0")
    due = now_ms() + 300
    retry = Settlement("retry", token, "o0", b"", envelope("o0", "fifo", attempt=2), str(due), fair_key="fifo")
    assert await broker.settle([retry], 60, 100) == [True]
    assert await aredis.zcard(keys.delayed) == 0
    assert [codec.loads(r)["id"] for r in await aredis.lrange(keys.fair_list("d", "fifo"), 0, -1)] == ["o0", "o1", "o2"]
    assert await claim_all(broker) == []  # o1 does not overtake its failing elder
    while now_ms() <= due:
        await asyncio.sleep(0.05)
    again = await claim_all(broker)
    assert [(codec.loads(raw)["id"], codec.loads(raw)["attempt"]) for _, raw in again] == [("o0", 2)]
    assert await broker.settle([Settlement("ack", again[0][0], "o0", fair_key="fifo")], 60, 100) == [True]
    assert ids(await claim_all(broker)) == ["o1"]


async def test_a_rate_limited_key_waits_for_its_slot(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await aredis.hset(keys.fair_config, "slow", "1,,5,,,")  # 5 per second: one each 200 ms
    await enqueue(broker, [(f"r{i}", "slow") for i in range(3)])
    assert ids(await claim_all(broker)) == ["r0"]
    parked_until = await aredis.zscore(keys.fair_parked, "slow")
    assert parked_until is not None and 0 < parked_until - now_ms() <= 200
    while now_ms() <= parked_until:
        await asyncio.sleep(0.02)
    assert ids(await claim_all(broker)) == ["r1"]


async def test_a_paused_key_waits_for_its_resume(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    control = FairKeys(aredis, queue_name, FairSettings())
    await control.pause("t1")
    await enqueue(broker, [("a", "t1"), ("b", "t2")])
    assert ids(await claim_all(broker)) == ["b"]
    limits = await control.resume("t1")
    assert not limits.paused
    assert ids(await claim_all(broker)) == ["a"]
    await control.reset("t1")
    assert await leftovers(aredis, queue_name) == []


async def test_the_queues_counts_include_tasks_waiting_in_keys_lists(
    aredis: aioredis.Redis, queue_name: str, make_settings: Any
) -> None:
    from gopherq.core.inspect import Inspector

    broker = Broker(aredis, queue_name, "w1")
    await enqueue(broker, [("a", "k1"), ("b", "k2")])
    await enqueue(broker, [("c", "k1")], priority="high")
    markers = (await aredis.lrange(queue_name, 0, -1)).count(WAKE_MARKER)  # left to wake a blocked worker
    assert (await broker.counts())["ready"] == 3 + markers
    info = await Inspector(aredis, make_settings()).queue(queue_name)
    assert info.ready == 3 and info.levels["high"].ready == 1 and info.levels["default"].ready == 2
    await claim_all(broker)
    assert (await broker.counts())["ready"] == 0
    assert await aredis.exists(broker.keys.fair_count) == 0
