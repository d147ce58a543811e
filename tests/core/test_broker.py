"""The broker's Redis scripts, called directly on a real Redis: fetch by move, claim, settle, reap, promote, adopt.

These are the building blocks of the delivery protocol; tests/core/test_worker.py drives them through a worker.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq.core import broker as broker_module
from gopherq.core import codec
from gopherq.core.broker import REAPED_KEEP_MS, Broker, Settlement, now_ms
from gopherq.core.inspect import Inspector
from gopherq.core.keys import LEASES_LAYOUT
from gopherq.core.settings import Settings
from gopherq.core.task import decode_task

LEASE_MS = 60_000


def envelope(task_id: str, **extra: Any) -> bytes:
    return codec.dumps({"id": task_id, "method": "GET", "url": "http://127.0.0.1/", **extra})


def ids(raws: list[Any]) -> list[str]:
    return [codec.loads(raw)["id"] for raw in raws]


async def test_blocking_fetch_moves_the_task_into_the_worker_processing_list(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await broker.push([envelope("a")])
    assert await broker.wait_for_task(1)
    # Moved, not popped: at every moment the task is in Redis.
    assert await aredis.llen(queue_name) == 0
    assert await aredis.lrange(broker.processing, 0, -1) == [envelope("a")]
    claimed = await broker.claim(10, LEASE_MS)
    assert ids([raw for _, raw in claimed]) == ["a"]
    assert await aredis.llen(broker.processing) == 0


async def test_blocking_fetch_on_an_empty_queue_times_out(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    assert not await worker.wait_for_task(0.1)


async def test_claim_takes_a_batch_in_one_call_with_tokens_leases_and_inflight_records(
    aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await broker.push([envelope(f"t{i}") for i in range(10)])
    before = now_ms()
    claimed = await broker.claim(4, LEASE_MS)
    assert ids([raw for _, raw in claimed]) == ["t0", "t1", "t2", "t3"]
    tokens = [token for token, _ in claimed]
    assert len(set(tokens)) == 4
    assert await aredis.llen(queue_name) == 6
    inflight: dict[Any, Any] = await aredis.hgetall(broker.keys.inflight)
    assert {key.decode(): value for key, value in inflight.items()} == dict(claimed)
    for token in tokens:
        score = await aredis.zscore(broker.keys.leases, token)
        assert score is not None and score >= before + LEASE_MS
    rest = await broker.claim(100, LEASE_MS)
    assert len(rest) == 6
    assert not set(tokens) & {token for token, _ in rest}
    assert await broker.claim(5, LEASE_MS) == []


@pytest.mark.parametrize("start", [0, 95, 1_999_990, 10**15 - 3, -107])
async def test_claim_tokens_are_the_counter_s_next_values_in_decimal(
    aredis: aioredis.Redis, queue_name: str, start: int
) -> None:
    # The claim writes a token as its hundreds and a two-digit ending (claim.lua): the batches here start at zero,
    # cross a hundred, a thousand and a power of ten (and zero, from a counter someone set below it), and each token
    # must be the counter's value in decimal, in the reply, the in-flight hash, the leases and the whereabouts alike.
    broker = Broker(aredis, queue_name, "w1")
    if start:
        await aredis.set(broker.keys.seq, start)
    await broker.push([envelope(f"t{i}") for i in range(120)], ids=[f"t{i}" for i in range(120)])
    claimed = await broker.claim(120, LEASE_MS)
    expected = [str(start + i) for i in range(1, 121)]
    assert [token for token, _ in claimed] == expected
    assert ids([raw for _, raw in claimed]) == [f"t{i}" for i in range(120)]
    inflight = await aredis.hgetall(broker.keys.inflight)
    assert sorted(key.decode() for key in inflight) == sorted(expected)
    leased = await aredis.zrangebyscore(broker.keys.leases, "-inf", "(+inf")
    assert sorted(member.decode() for member in leased) == sorted(expected)
    records = await aredis.hmget(broker.keys.where, [f"t{i}" for i in range(120)])
    assert [record.decode().split("|")[:2] for record in records] == [["running", token] for token in expected]
    assert int(await aredis.get(broker.keys.seq)) == start + 120


async def test_claim_takes_the_staged_task_before_the_ready_list(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    await broker.push([envelope("first"), envelope("second"), envelope("third")])
    assert await broker.wait_for_task(1)
    claimed = await broker.claim(2, LEASE_MS)
    assert ids([raw for _, raw in claimed]) == ["first", "second"]


async def test_ack_removes_the_task_and_stores_the_result_with_a_ttl(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a")])
    [(token, _)] = await worker.claim(1, LEASE_MS)
    result = codec.dumps({"id": "a", "status": "succeeded"})
    assert await worker.settle([Settlement("ack", token, "a", result)], result_ttl=120, dead_cap=10) == [True]
    assert await aredis.hlen(worker.keys.inflight) == 0
    assert await aredis.zrange(worker.keys.leases, 0, -1) == [LEASES_LAYOUT.encode()]  # no lease left
    assert await worker.get_result("a") == {"id": "a", "status": "succeeded"}
    assert 0 < await aredis.ttl(worker.keys.result("a")) <= 120


async def test_a_settle_sent_again_after_its_reply_was_lost_is_recognised_and_writes_nothing_twice(
    broker: Broker, aredis: aioredis.Redis
) -> None:
    """What redis-py's resend after a dropped connection, or the worker's next settle after a Redis restart, does:
    the same settle again. Every kind is reported settled, counted once, and nothing is written a second time."""
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope(name) for name in ("ok", "again", "dead", "back")])
    tokens = {codec.loads(raw)["id"]: token for token, raw in await worker.claim(10, LEASE_MS)}
    due = now_ms() + 60_000
    items = [
        Settlement("ack", tokens["ok"], "ok", codec.dumps({"first": True})),
        Settlement("retry", tokens["again"], "again", b"", envelope("again", attempt=2), str(due)),
        Settlement("dead", tokens["dead"], "dead", b"", codec.dumps({"id": "dead"}), "dead"),
        Settlement("release", tokens["back"], "back"),
    ]
    assert await worker.settle(items, 60, 10) == [True] * 4
    again = [*items[1:], Settlement("ack", tokens["ok"], "ok", codec.dumps({"second": True}))]
    assert await worker.settle(again, 60, 10) == [True] * 4
    assert await worker.get_result("ok") == {"first": True}
    assert await aredis.zcard(worker.keys.delayed) == 1
    assert await aredis.hkeys(worker.keys.dead) == [b"dead"]  # not a second entry under "dead.<token>"
    assert await aredis.lrange(worker.keys.ready, 0, -1) == [envelope("back")]  # released once
    stats = await worker.stats()
    assert stats["acked"] == stats["retried"] == stats["dead_lettered"] == stats["released"] == 1
    assert stats["settles_repeated"] == 4 and "refused_acks" not in stats


async def test_settle_refuses_a_token_the_reaper_handed_to_another_worker(
    broker: Broker, aredis: aioredis.Redis
) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a")])
    [(token, _)] = await worker.claim(1, lease_ms=-1)  # its lease has already expired
    assert await Broker(aredis, broker.keys.queue, "w2").reap(60_000, 1, "w2") is not None
    assert await aredis.zscore(worker.keys.reaped, token) is not None
    [(second, _)] = await Broker(aredis, broker.keys.queue, "w2").claim(1, LEASE_MS)
    assert await worker.settle([Settlement("ack", second, "a", codec.dumps({"second": True}))], 60, 10) == [True]
    late = Settlement("ack", token, "a", codec.dumps({"late": True}))
    assert await worker.settle([late], 60, 10) == [False]
    assert await worker.get_result("a") == {"second": True}
    stats = await worker.stats()
    assert stats["refused_acks"] == 1 and stats["acked"] == 1 and "settles_repeated" not in stats


async def test_the_reaper_remembers_a_bounded_number_of_tokens_for_a_bounded_time(
    broker: Broker, aredis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    stamp = now_ms()
    # "recent" a ms before the reap's own token, which a fast machine can reap in the same ms as `stamp`.
    remembered = {"ancient": stamp - REAPED_KEEP_MS - 1000, "old": stamp - 2, "recent": stamp - 1}
    await aredis.zadd(worker.keys.reaped, remembered)
    await worker.push([envelope("a")])
    [(token, _)] = await worker.claim(1, lease_ms=-1)
    monkeypatch.setattr(broker_module, "REAPED_MAX", 2)
    await worker.reap(60_000, 1, "w1")
    assert await aredis.zrange(worker.keys.reaped, 0, -1) == [b"recent", token.encode()]


async def test_settle_many_outcomes_in_one_call(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope(name) for name in ("ok", "again", "dead", "back")])
    tokens = {codec.loads(raw)["id"]: token for token, raw in await worker.claim(10, LEASE_MS)}
    due = now_ms() + 60_000
    dead_entry = codec.dumps({"id": "dead", "reason": "non_retryable"})
    flags = await worker.settle(
        [
            Settlement("ack", tokens["ok"], "ok", codec.dumps({"status": "succeeded"})),
            Settlement("retry", tokens["again"], "again", b"", envelope("again", attempt=2), str(due)),
            Settlement("dead", tokens["dead"], "dead", codec.dumps({"status": "failed"}), dead_entry, "dead"),
            Settlement("release", tokens["back"], "back"),
        ],
        result_ttl=60,
        dead_cap=10,
    )
    assert flags == [True, True, True, True]
    assert await aredis.hlen(worker.keys.inflight) == 0
    assert await aredis.zrange(worker.keys.delayed, 0, -1, withscores=True) == [(envelope("again", attempt=2), due)]
    assert await aredis.hget(worker.keys.dead, "dead") == dead_entry
    assert await aredis.zrange(worker.keys.dead_index, 0, -1) == [b"dead"]
    assert await aredis.lrange(worker.keys.ready, 0, -1) == [envelope("back")]
    assert await worker.get_result("dead") == {"status": "failed"}
    assert await worker.get_result("back") is None


async def test_release_puts_the_task_back_at_the_head(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a"), envelope("b")])
    [(token, _)] = await worker.claim(1, LEASE_MS)
    await worker.settle([Settlement("release", token, "a")], 60, 10)
    assert ids(await aredis.lrange(worker.keys.ready, 0, -1)) == ["a", "b"]


async def test_promote_moves_only_due_tasks(broker: Broker, aredis: aioredis.Redis) -> None:
    await aredis.rpush(broker.keys.ready, envelope("already"))
    await broker.push_delayed([(envelope("due"), now_ms() - 1), (envelope("later"), now_ms() + 60_000)])
    assert await broker.promote() == 1
    assert ids(await aredis.lrange(broker.keys.ready, 0, -1)) == ["already", "due"]
    assert await aredis.zcard(broker.keys.delayed) == 1
    assert await broker.promote() == 0


async def test_the_leases_are_a_skiplist_from_the_first_claim_and_list_no_layout_member_as_running(
    broker: Broker, aredis: aioredis.Redis
) -> None:
    """As a listpack (up to 128 members) the leases were scanned whole by every ZADD and ZREM; the layout member,
    scored +inf, keeps them a skiplist, and is never due for the reaper nor listed as a running task."""
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([codec.dumps({"id": f"s{n}", "type": "noop"}) for n in range(3)])
    claimed = await worker.claim(3, 60_000)
    assert len(claimed) == 3
    assert await aredis.object("encoding", broker.keys.leases) == b"skiplist"
    assert await aredis.zscore(broker.keys.leases, LEASES_LAYOUT) == float("inf")
    page = await Inspector(aredis, Settings()).running(broker.keys.queue)
    assert page.total == 3 and sorted(task.id for task in page.items) == ["s0", "s1", "s2"]
    await aredis.delete(broker.keys.reaper_lock)
    await aredis.zadd(broker.keys.leases, {claimed[0][0]: 0})  # one lease expired
    recovered = await broker.reap(60_000, 1, "reaper")
    assert recovered is not None and ids(recovered) == ["s0"]


async def test_reap_returns_expired_leases_to_the_head_counting_a_recovery(
    broker: Broker, aredis: aioredis.Redis
) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a"), envelope("b"), envelope("waiting")])
    claimed = await worker.claim(2, lease_ms=-1)  # leases already expired
    reaper = Broker(aredis, broker.keys.queue, "w2")
    recovered = await reaper.reap(worker_ttl_ms=60_000, lock_ms=1, owner="w2")
    assert recovered is not None and sorted(ids(recovered)) == ["a", "b"]
    ready = [codec.loads(raw) for raw in await aredis.lrange(broker.keys.ready, 0, -1)]
    assert [task["id"] for task in ready] == ["a", "b", "waiting"]
    assert [task.get("recoveries") for task in ready] == [1, 1, None]
    assert await aredis.hlen(broker.keys.inflight) == 0
    assert await aredis.zcount(broker.keys.leases, "-inf", "(+inf") == 0
    # The old holder can no longer settle them.
    stale = [Settlement("ack", token, "x", b"{}") for token, _ in claimed]
    assert await worker.settle(stale, 60, 10) == [False, False]


async def test_recoveries_keep_counting(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a")])
    for expected in (1, 2, 3):
        await worker.claim(1, lease_ms=-1)
        await aredis.delete(broker.keys.reaper_lock)  # as if the lock had lapsed
        await worker.reap(60_000, lock_ms=1, owner="w1")
        ready: list[Any] = await aredis.lrange(broker.keys.ready, 0, -1)
        assert len(ready) == 1
        assert decode_task(ready[0], 1 << 20).recoveries == expected


async def test_reap_is_serialised_by_its_lock(broker: Broker, aredis: aioredis.Redis) -> None:
    assert await broker.reap(60_000, lock_ms=60_000, owner="one") == []
    assert await broker.reap(60_000, lock_ms=60_000, owner="two") is None


async def test_reap_recovers_the_processing_list_of_a_silent_worker(broker: Broker, aredis: aioredis.Redis) -> None:
    gone = Broker(aredis, broker.keys.queue, "gone")
    await gone.heartbeat([], LEASE_MS)
    await gone.push([envelope("staged")])
    assert await gone.wait_for_task(1)
    await aredis.zadd(broker.keys.workers, {"gone": now_ms() - 120_000})  # its heartbeat stopped long ago
    reaper = Broker(aredis, broker.keys.queue, "alive")
    recovered = await reaper.reap(worker_ttl_ms=10_000, lock_ms=1, owner="alive", forget_after_ms=0)
    assert recovered is not None and ids(recovered) == ["staged"]
    assert await aredis.llen(gone.processing) == 0
    assert ids(await aredis.lrange(broker.keys.ready, 0, -1)) == ["staged"]


async def test_reap_leaves_a_live_worker_alone(broker: Broker, aredis: aioredis.Redis) -> None:
    live = Broker(aredis, broker.keys.queue, "live")
    await live.push([envelope("a")])
    await live.claim(1, LEASE_MS)
    await live.heartbeat([], LEASE_MS)
    await live.push([envelope("staged")])
    assert await live.wait_for_task(1)
    assert await Broker(aredis, broker.keys.queue, "other").reap(10_000, 1, "other") == []
    assert await aredis.hlen(broker.keys.inflight) == 1
    assert await aredis.llen(live.processing) == 1


async def test_heartbeat_extends_only_held_leases(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a")])
    [(token, _)] = await worker.claim(1, lease_ms=1000)
    await worker.heartbeat([token, "999999999"], lease_ms=LEASE_MS)
    score = await aredis.zscore(broker.keys.leases, token)
    assert score is not None and score > now_ms() + LEASE_MS - 5000
    assert await aredis.zscore(broker.keys.leases, "999999999") is None  # never creates a lease
    assert await aredis.zscore(broker.keys.workers, "w1") is not None


async def test_adopt_keeps_an_assigned_id_across_a_crash_recovery(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await aredis.rpush(broker.keys.ready, b'{"method":"GET","url":"http://127.0.0.1/"}')  # no id
    [(token, raw)] = await worker.claim(1, lease_ms=-1)
    task = decode_task(raw, 1 << 20)
    assert task.id_assigned
    await worker.adopt({token: task.encode(), "no-such-token": b"{}"})
    assert await aredis.hlen(broker.keys.inflight) == 1  # the stale token was skipped
    # The worker "crashes": its lease expires and the reaper hands the task back.
    recovered = await Broker(aredis, broker.keys.queue, "w2").reap(60_000, 1, "w2")
    assert recovered is not None
    again = decode_task(recovered[0], 1 << 20)
    assert again.id == task.id
    assert not again.id_assigned
    assert again.recoveries == 1


async def test_counts(broker: Broker, aredis: aioredis.Redis) -> None:
    worker = Broker(aredis, broker.keys.queue, "w1")
    await worker.push([envelope("a"), envelope("b"), envelope("c")])
    await worker.claim(1, LEASE_MS)
    await worker.push_delayed([(envelope("d"), now_ms() + 60_000)])
    assert await worker.counts() == {"ready": 2, "inflight": 1, "delayed": 1, "dead": 0}
