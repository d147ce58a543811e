"""Fair keys on the paths besides enqueue and claim, on a real Redis: an operator's run-now and delete of a task
waiting in its fair key's list (from the Operator, as the CLI and dashboard reach it, and from the `/v1` API) find
it there and keep the key's bookkeeping right (its count, its turn, nothing left behind by a key emptied), and a
schedule's task with a fair key enters its key's list as an enqueued one does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import Settings
from gopherq.core import codec
from gopherq.core.audit import Actor
from gopherq.core.broker import Broker, Settlement, SpecialPush, now_ms
from gopherq.core.fair import FairKeys
from gopherq.core.inspect import Inspector
from gopherq.core.inspect.operations import Operator
from gopherq.core.keys import WAKE_MARKER, QueueKeys
from gopherq.core.schedules import Schedule, Scheduler
from gopherq.core.whereabouts import Whereabouts


def envelope(task_id: str, key: str | None, **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": task_id, "type": "rec", **fields}
    if key is not None:
        body["fair_key"] = key
    return codec.dumps(body)


async def enqueue(broker: Broker, items: list[tuple[str, str | None]], **fields: Any) -> None:
    level = fields.get("priority")
    pushes = [SpecialPush(task_id, envelope(task_id, key, **fields), priority=level) for task_id, key in items]
    assert await broker.push_special(pushes) == [None] * len(pushes)


async def claim_all(broker: Broker, batch: int = 1) -> list[str]:
    claimed: list[str] = []
    while True:
        got = await broker.claim(batch, 60000)
        assert got is not None
        if not got:
            return claimed
        claimed += [codec.loads(raw)["id"] for _, raw in got if raw != WAKE_MARKER]


async def waiting(aredis: aioredis.Redis, keys: QueueKeys, letter: str, fair_key: str) -> list[str]:
    return [codec.loads(raw)["id"] for raw in await aredis.lrange(keys.fair_list(letter, fair_key), 0, -1)]


async def leftovers(aredis: aioredis.Redis, queue: str) -> list[bytes]:
    """The fair-key keys of the queue still in Redis."""
    return sorted([key async for key in aredis.scan_iter(match=f"gopherq:{{{queue}}}:fair:*", count=1000)])


async def record(aredis: aioredis.Redis, keys: QueueKeys, task_id: str) -> Whereabouts | None:
    return Whereabouts.parse(await aredis.hget(keys.where, task_id))


def operator(aredis: aioredis.Redis, settings: Settings) -> Operator:
    return Operator(Inspector(aredis, settings), Actor("tester", "cli"))


async def test_run_now_moves_a_task_to_the_head_of_its_keys_list(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [("a1", "acme"), ("a2", "acme"), ("a3", "acme"), ("b1", "beta"), ("b2", "beta")])
    count = await aredis.hget(keys.fair_count, "d")
    before = time.time() * 1000

    assert await operator(aredis, settings).run_now(queue_name, "a3") == "done"
    assert await waiting(aredis, keys, "d", "acme") == ["a3", "a1", "a2"]
    assert await aredis.llen(keys.ready) in (0, 1)  # not put in its level's list (at most a wake marker)
    assert await aredis.hget(keys.fair_count, "d") == count  # the same tasks wait
    where = await record(aredis, keys, "a3")
    assert where is not None and where.place == "ready" and where.how == "run_now" and where.fair_key == "acme"
    assert where.at is not None and where.at * 1000 >= before - 1
    # It runs at its key's next turn: the keys still alternate.
    assert await claim_all(broker) == ["a3", "b1", "a1", "b2", "a2"]
    assert await leftovers(aredis, queue_name) == []


async def test_delete_removes_a_task_from_its_keys_list(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    inspect = Inspector(aredis, settings)
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [("a1", "acme"), ("a2", "acme"), ("b1", "beta")])
    await enqueue(broker, [("h1", "acme")], priority="high")

    assert await operator(aredis, settings).delete_task(queue_name, "a2") == "done"
    assert await waiting(aredis, keys, "d", "acme") == ["a1"]
    assert await aredis.hget(keys.fair_count, "d") == b"2"
    assert await record(aredis, keys, "a2") is None
    result = await broker.get_result("a2")
    assert result is not None and result["status"] == "cancelled", result
    info = await inspect.queue(queue_name)
    assert info.ready == 3 and info.levels["high"].ready == 1 and info.levels["default"].ready == 2

    # A key's only task at a level: the key leaves that level's turns, and keeps its turn at the other.
    assert await operator(aredis, settings).delete_task(queue_name, "h1") == "done"
    assert await aredis.exists(keys.fair_active("h"), f"{keys.fair_active('h')}:vt") == 0
    assert await aredis.hget(keys.fair_count, "h") is None
    assert await aredis.zscore(keys.fair_active("d"), "acme") is not None
    assert await claim_all(broker) == ["a1", "b1"]
    assert await leftovers(aredis, queue_name) == []
    assert await operator(aredis, settings).delete_task(queue_name, "a1") == "not_waiting"


async def test_deleting_the_last_task_of_a_parked_key_leaves_nothing_behind(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(fair={"keys": [{"pattern": "held-*", "concurrency": 1}]})
    await FairKeys(aredis, queue_name, settings.fair).publish_rules()
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [("c1", "held-1"), ("c2", "held-1"), ("only", "lone")])
    assert sorted(await claim_all(broker, batch=5)) == ["c1", "only"]  # held-1 is now parked at its limit
    assert await aredis.zscore(keys.fair_parked, "held-1") == float("inf")

    assert await operator(aredis, settings).delete_task(queue_name, "c2") == "done"
    assert await aredis.zscore(keys.fair_parked, "held-1") is None  # nothing waits: an idle key is not kept
    assert await aredis.exists(keys.fair_list("d", "held-1"), keys.fair_count, keys.fair_active("d")) == 0
    # What is left is the running task's place (gone when it ends) and the stored rules.
    assert await leftovers(aredis, queue_name) == sorted(
        [keys.fair_rules.encode(), keys.fair_running("held-1").encode()]
    )
    # The key is as a new one: its next task waits for its running one to end, then runs.
    await enqueue(broker, [("c3", "held-1")])
    assert await claim_all(broker) == []


async def retry_an_hour_away(broker: Broker, token: str, task_id: str, key: str) -> None:
    """Settle `task_id`'s attempt as a retry due in an hour (an ordered key's: it waits at its key's head)."""
    due = now_ms() + 3_600_000
    retry = Settlement(
        "retry",
        token,
        task_id,
        b"",
        envelope(task_id, key, attempt=2),
        str(due),
        where=f"delayed|retrying|{due}|2/3",
        fair_key=key,
    )
    assert await broker.settle([retry], 60, 100) == [True]


async def test_running_now_or_deleting_an_ordered_keys_waiting_retry_frees_its_key_at_once(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    """An ordered key rests while its retry waits at the head of its list: an operator's run now of that retry
    runs it now (still first of its key), and deleting it lets the key's next task run at once. Deleting a task
    behind the retry does not release the retry early."""
    settings = make_settings()
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await FairKeys(aredis, queue_name, settings.fair).set("ledger", ordered=True)
    await enqueue(broker, [("l1", "ledger"), ("l2", "ledger"), ("l3", "ledger")])
    [(token, _)] = await broker.claim(5, 60000) or []
    await retry_an_hour_away(broker, token, "l1", "ledger")
    assert await claim_all(broker, batch=5) == []  # the key rests until its retry is due

    assert await operator(aredis, settings).delete_task(queue_name, "l3") == "done"
    assert await waiting(aredis, keys, "d", "ledger") == ["l1", "l2"]
    assert await claim_all(broker, batch=5) == []  # the retry still waits, and l2 behind it

    assert await operator(aredis, settings).run_now(queue_name, "l1") == "done"
    [(token, raw)] = await broker.claim(5, 60000) or []
    assert codec.loads(raw)["id"] == "l1"  # now, and still the key's only task in flight
    assert await claim_all(broker, batch=5) == []
    await retry_an_hour_away(broker, token, "l1", "ledger")
    assert await claim_all(broker, batch=5) == []

    assert await operator(aredis, settings).delete_task(queue_name, "l1") == "done"
    assert await claim_all(broker, batch=5) == ["l2"]


async def test_run_now_and_delete_through_the_api_find_a_task_in_its_keys_list(
    settings: Settings, api: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    queue = settings.queue.name
    broker = Broker(aredis, queue, "w1")
    keys = broker.keys
    await enqueue(broker, [("k1", "tenant"), ("k2", "tenant"), ("k3", "tenant")], priority="low")
    status, body = await api("POST", f"/v1/queues/{queue}/tasks/k3/run")
    assert (status, body) == (200, {"id": "k3", "outcome": "run_now"})
    status, body = await api("POST", f"/v1/queues/{queue}/tasks/k1/delete")
    assert (status, body) == (200, {"id": "k1", "outcome": "deleted"})
    assert await waiting(aredis, keys, "l", "tenant") == ["k3", "k2"]
    assert await aredis.hget(keys.fair_count, "l") == b"2"


async def test_a_delayed_task_run_now_goes_to_the_head_of_its_keys_list(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [("a1", "acme")])
    due = int(time.time() * 1000) + 3_600_000
    later = SpecialPush("later", envelope("later", "acme"), due_ms=due)
    assert await broker.push_special([later]) == [None]
    assert await operator(aredis, settings).run_now(queue_name, "later") == "done"
    assert await aredis.zcard(keys.delayed) == 0
    assert await waiting(aredis, keys, "d", "acme") == ["later", "a1"]
    where = await record(aredis, keys, "later")
    assert where is not None and where.fair_key == "acme" and where.how == "run_now"


async def test_a_scheduled_task_with_a_fair_key_enters_its_keys_list(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    await enqueue(broker, [(f"big{i}", "big") for i in range(20)])
    await enqueue(broker, [(f"hb{i}", "big") for i in range(3)], priority="high")
    plain = Schedule(name="plain", every=1, catch_up="all", task={"type": "rec", "priority": "high"})
    keyed = Schedule(name="sync", every=1, catch_up="all", task={"type": "rec", "fair_key": "small"})
    urgent = Schedule(
        name="urgent", every=1, catch_up="all", task={"type": "rec", "fair_key": "small", "priority": "high"}
    )
    scheduler = Scheduler([plain, keyed, urgent], queue_name, {queue_name: broker})
    t0 = int(time.time())
    assert await scheduler.tick(now=t0) == 0  # first sight: each starts with the next slot
    assert await scheduler.tick(now=t0 + 2.5) == 6  # two slots each

    assert await waiting(aredis, keys, "d", "small") == [f"sync@{t0 + 1}", f"sync@{t0 + 2}"]
    assert await waiting(aredis, keys, "h", "small") == [f"urgent@{t0 + 1}", f"urgent@{t0 + 2}"]
    assert [codec.loads(raw)["id"] for raw in await aredis.lrange(keys.level("high"), 0, -1)] == [
        f"plain@{t0 + 1}",
        f"plain@{t0 + 2}",
    ]
    assert await aredis.hget(keys.fair_count, "d") == b"22"
    where = await record(aredis, keys, f"sync@{t0 + 2}")
    assert where is not None and where.place == "ready" and where.how == "scheduled" and where.fair_key == "small"
    assert where.at == t0 + 2 and where.level == "default"
    where = await record(aredis, keys, f"urgent@{t0 + 1}")
    assert where is not None and where.level == "high" and where.fair_key == "small"
    plain_where = await record(aredis, keys, f"plain@{t0 + 1}")
    assert plain_where is not None and plain_where.fair_key is None and plain_where.level == "high"

    order = await claim_all(broker)
    assert len(order) == 29
    # The scheduled tasks take their key's turns rather than waiting behind the big backlog.
    default = [task_id for task_id in order if not task_id.startswith(("hb", "urgent", "plain"))]
    assert default.index(f"sync@{t0 + 2}") < 5, default
    assert await leftovers(aredis, queue_name) == []


async def test_a_task_deep_in_a_long_keys_list_is_found_and_a_key_may_hold_any_character(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    broker = Broker(aredis, queue_name, "w1")
    keys = broker.keys
    key = "a|b *[x]%. é"
    await enqueue(broker, [(f"t{i}", key) for i in range(4500)])
    info = await Inspector(aredis, settings).task(queue_name, "t2250")
    assert info is not None and info.envelope is None and info.note is not None  # beyond the lookup's window
    assert await operator(aredis, settings).run_now(queue_name, "t2250") == "done"
    assert await operator(aredis, settings).delete_task(queue_name, "t2251") == "done"
    head = await aredis.lrange(keys.fair_list("d", key), 0, 1)
    assert [codec.loads(raw)["id"] for raw in head] == ["t2250", "t0"]
    assert await aredis.llen(keys.fair_list("d", key)) == 4499
    assert await aredis.hget(keys.fair_count, "d") == b"4499"
    where = await record(aredis, keys, "t2250")
    assert where is not None and where.fair_key == key and where.how == "run_now"
