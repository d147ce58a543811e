"""Whereabouts of tasks that wait outside their level's list, on a real Redis: a ready task with a fair key is found
in its key's list by its record (which names the key, whatever moved it there), `explain` names its key's turn or
what holds its key back, and the flow members the flow scripts make ready (roots, joins) are recorded as they are
pushed, so none of them needs a search."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, Settings
from gopherq.canvas import Flow, step
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement, SpecialPush, now_ms
from gopherq.core.fair import FairKeys
from gopherq.core.inspect import Inspector
from gopherq.core.inspect.explain import CODES
from gopherq.core.keys import QueueKeys
from gopherq.core.outcomes import OutcomePolicy
from gopherq.core.plugins import load_plugins
from gopherq.core.task import task_from_dict
from gopherq.core.whereabouts import Whereabouts, ready_record
from tests.support.plugins import ExecutorPlugin


class Done:
    """The flow members' executor (never run here: the test settles them itself)."""

    async def execute(self, task: Any, context: Any) -> str:
        return "ok"


def envelope(task_id: str, key: str | None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": task_id, "type": "rec", **fields}
    if key is not None:
        body["fair_key"] = key
    return codec.dumps(body)


async def enqueue(broker: Broker, items: list[tuple[str, str | None]], **fields: Any) -> None:
    level = fields.get("priority")
    pushes = [SpecialPush(task_id, envelope(task_id, key, **fields), priority=level) for task_id, key in items]
    assert await broker.push_special(pushes) == [None] * len(pushes)


async def record(aredis: aioredis.Redis, queue: str, task_id: str) -> Whereabouts | None:
    return Whereabouts.parse(await aredis.hget(QueueKeys(queue).where, task_id))


async def found_in_its_keys_list(inspect: Inspector, queue: str, task_id: str, key: str, how: str) -> None:
    info = await inspect.task(queue, task_id)
    assert info is not None and info.state == "ready" and info.note is None, info
    assert info.envelope is not None and info.envelope["id"] == task_id
    assert info.where is not None and info.where["fair_key"] == key and info.where["how"] == how, info.where


def test_records_without_a_key_read_as_before_and_a_key_may_hold_any_character() -> None:
    old = Whereabouts.parse(b"ready|default|1000|enqueued")
    assert old is not None and old.fair_key is None and old.how == "enqueued" and "fair_key" not in old.to_dict()
    keyed = Whereabouts.parse(ready_record("low", 1000, "promoted", "a|b c"))
    assert keyed is not None and keyed.level == "low" and keyed.how == "promoted" and keyed.fair_key == "a|b c"
    assert ready_record(None, 5, "released") == "ready|default|5|released"


async def test_a_ready_task_in_its_fair_keys_list_is_found_whatever_moved_it_there(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    inspect = Inspector(aredis, make_settings())
    broker = Broker(aredis, queue_name, "w-gone")
    await enqueue(broker, [("a1", "acme"), ("a2", "acme"), ("plain", None)])
    await enqueue(broker, [("h1", "acme")], priority="high")
    await found_in_its_keys_list(inspect, queue_name, "a2", "acme", "enqueued")
    await found_in_its_keys_list(inspect, queue_name, "h1", "acme", "enqueued")
    # A task without a key: its record is the four fields it always was.
    assert (await aredis.hget(broker.keys.where, "plain") or b"").count(b"|") == 3
    plain = await inspect.task(queue_name, "plain")
    assert plain is not None and plain.envelope is not None and plain.where is not None
    assert "fair_key" not in plain.where

    claimed = await broker.claim(1, lease_ms=-1000)  # h1 (high first), its lease already over: the reaper's
    assert claimed is not None and codec.loads(claimed[0][1])["id"] == "h1"
    assert await broker.reap(worker_ttl_ms=60000, lock_ms=1000, owner="me") is not None
    await found_in_its_keys_list(inspect, queue_name, "h1", "acme", "recovered")

    [(token, raw)] = await broker.claim(1, lease_ms=60000) or []
    decision = OutcomePolicy.release(token, task_from_dict(codec.loads(raw)))  # a worker shutting down
    assert await broker.settle([decision.settlement], 60, 100) == [True]
    await found_in_its_keys_list(inspect, queue_name, "h1", "acme", "released")

    [(token, raw)] = await broker.claim(1, lease_ms=60000) or []
    retry = envelope("h1", "acme", priority="high", attempt=2)
    due = now_ms() - 1
    settled = Settlement("retry", token, "h1", b"", retry, str(due), fair_key="acme", where=f"delayed|retrying|{due}|")
    assert await broker.settle([settled], 60, 100) == [True]
    assert await broker.promote() == 1
    await found_in_its_keys_list(inspect, queue_name, "h1", "acme", "promoted")
    where = await record(aredis, queue_name, "h1")
    assert where is not None and where.level == "high"


async def test_a_raw_push_with_a_fair_key_is_recorded_when_a_claim_sorts_it_into_its_key(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    inspect = Inspector(aredis, make_settings())
    broker = Broker(aredis, queue_name, "w1")
    await aredis.rpush(queue_name, *[envelope(f"raw{i}", "big") for i in range(3)])
    assert await record(aredis, queue_name, "raw2") is None  # a raw push has no record (found by a search)
    claimed = await broker.claim(1, 60000)
    assert claimed is not None and [codec.loads(raw)["id"] for _, raw in claimed] == ["raw0"]
    running = await record(aredis, queue_name, "raw0")
    assert running is not None and running.place == "running"  # sorted in and claimed by the same call
    await found_in_its_keys_list(inspect, queue_name, "raw2", "big", "sorted")


async def test_explain_names_its_keys_turn_or_what_holds_its_key_back(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    inspect = Inspector(aredis, settings)
    broker = Broker(aredis, queue_name, "w1")
    control = FairKeys(aredis, queue_name, settings.fair)
    assert {"key_turn", "key_paused", "key_limit", "key_ordered", "key_rate"} <= set(CODES)
    await aredis.zadd(broker.keys.workers, {"host:1:x": time.time() * 1000})  # a live worker
    await enqueue(broker, [("b1", "big"), ("b2", "big"), ("b3", "big"), ("s1", "small")])

    why = await inspect.explain(queue_name, "b3")
    assert why is not None and why.waiting_for == "key_turn" and why.state == "ready", why
    assert "waiting for its key's turn" in why.message and why.details["ahead"] == 2
    assert why.details["fair_key"] == "big" and why.details["other_keys"] == 1

    await control.pause("big")
    why = await inspect.explain(queue_name, "b3")
    assert why is not None and why.waiting_for == "key_paused" and "fair key big is paused" in why.message
    await control.resume("big")

    await control.set("big", concurrency=1)
    assert [codec.loads(raw)["id"] for _, raw in await broker.claim(1, 60000) or []] == ["b1"]
    why = await inspect.explain(queue_name, "b3")
    assert why is not None and why.waiting_for == "key_limit" and "1 of 1 running" in why.message, why

    await control.set("big", concurrency=0, ordered=True)
    why = await inspect.explain(queue_name, "b3")
    assert why is not None and why.waiting_for == "key_ordered" and "ordered and busy" in why.message, why

    await control.set("small", rate=0.001, burst=1)
    await enqueue(broker, [("s2", "small")])
    claimed = [codec.loads(raw)["id"] for _, raw in await broker.claim(5, 60000) or []]
    assert claimed == ["s1"]  # then "small" is parked over its rate (and "big" at its limit)
    why = await inspect.explain(queue_name, "s2")
    assert why is not None and why.waiting_for == "key_rate" and "over its rate limit" in why.message, why
    assert why.details["parked_until"] is not None and why.details["parked_until"] > time.time()

    # Queue-wide reasons come first: a paused queue, no live worker.
    await inspect.pause(queue_name)
    why = await inspect.explain(queue_name, "b3")
    assert why is not None and why.waiting_for == "paused"


async def test_an_ordered_keys_retry_waits_in_its_keys_list_and_is_found_there(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    inspect = Inspector(aredis, settings)
    broker = Broker(aredis, queue_name, "w1")
    await FairKeys(aredis, queue_name, settings.fair).set("ledger", ordered=True)
    await aredis.zadd(broker.keys.workers, {"host:1:x": time.time() * 1000})
    await enqueue(broker, [("l1", "ledger"), ("l2", "ledger")])
    [(token, _)] = await broker.claim(1, 60000) or []
    due = now_ms() + 60_000
    retry = Settlement(
        "retry",
        token,
        "l1",
        b"",
        envelope("l1", "ledger", attempt=2),
        str(due),
        where=f"delayed|retrying|{due}|2/3",
        fair_key="ledger",
    )
    assert await broker.settle([retry], 60, 100) == [True]
    # Not in the delayed set (later tasks of the key would overtake it) but at the head of its key's list.
    await found_in_its_keys_list(inspect, queue_name, "l1", "ledger", "retrying")
    for task_id in ("l1", "l2"):
        why = await inspect.explain(queue_name, task_id)
        assert why is not None and why.waiting_for == "key_ordered" and "waits for a retry due at" in why.message


async def test_flow_members_made_ready_by_flow_scripts_are_recorded(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    plugins = load_plugins(settings, extra={"rec": ExecutorPlugin("rec", Done())})
    async with AsyncClient(settings, plugins=plugins) as client:
        flow = Flow()
        a = flow.add(step("rec", value=1), name="a")
        k = flow.add(step("rec", value=1, fair_key="acme"), name="k")
        flow.add(step("rec"), depends_on=[a, k], name="join")
        await flow.aapply(client, "fl")
        inspect = client.inspect
        for task_id in ("fl.a", "fl.k"):
            where = await record(aredis, queue_name, task_id)
            assert where is not None and where.place == "ready" and where.how == "flow", (task_id, where)
        assert (await record(aredis, queue_name, "fl.a")).fair_key is None  # type: ignore[union-attr]
        await found_in_its_keys_list(inspect, queue_name, "fl.k", "acme", "flow")
        assert await record(aredis, queue_name, "fl.join") is None  # waiting: stored in its flow, not queued

        broker = Broker(aredis, queue_name, worker_id="w1")
        claimed = await broker.claim(10, 60_000)
        assert claimed is not None and len(claimed) == 2
        acks = [
            Settlement("ack", token, task_id, b"{}", dag=("fl", task_id.split(".")[1]))
            for token, task_id in ((t, codec.loads(raw)["id"]) for t, raw in claimed)
        ]
        assert await broker.settle(acks, 60, 100) == [True, True]
        where = await record(aredis, queue_name, "fl.join")
        assert where is not None and where.place == "ready" and where.how == "flow" and where.level == "default"
        info = await inspect.task(queue_name, "fl.join")
        assert info is not None and info.state == "ready" and info.note is None
        assert info.envelope is not None and info.envelope["id"] == "fl.join"
