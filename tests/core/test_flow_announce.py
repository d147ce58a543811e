"""A flow's state change is announced once, beside the settle loop; when Redis refuses the announcement for a moment
(here: a private redis-server SIGKILLed, then restarted from its append-only file), it is retried with a short
backoff (at most half a second apart) and arrives within a second or two of Redis answering again, not at the
reconciler's next look (30 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.spec import Node, Policy, plan
from gopherq.core.flows.store import FlowStore
from gopherq.core.task import Task
from tests.support.common import async_wait_until


class Events:
    """An event bus that keeps what it is given: (name, data)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name: str, **fields: Any) -> None:
        self.seen.append((name, fields.get("data") or {}))


async def settle_members(redis: aioredis.Redis, queue: str, flow_id: str, outcomes: dict[str, str]) -> list[str]:
    """Claim the flow's ready members and settle those named in `outcomes` ('ack' or 'dead'); the flows moved."""
    broker = Broker(redis, queue, worker_id="w1")
    claimed = await broker.claim(10, 60_000)
    assert claimed is not None
    tokens = {codec.loads(envelope)["id"]: token for token, envelope in claimed}
    items = []
    for node, kind in outcomes.items():
        task_id = f"{flow_id}.{node}"
        if kind == "dead":
            items.append(Settlement(kind, tokens[task_id], task_id, b"{}", b"{}", task_id, dag=(flow_id, node)))
        else:
            items.append(Settlement(kind, tokens[task_id], task_id, b"{}", dag=(flow_id, node)))
    moved: list[str] = []
    assert await broker.settle(items, 60, 100, moved=moved) == [True] * len(items)
    return moved


async def test_an_announcement_refused_while_redis_restarts_arrives_within_a_second_of_its_return(
    private_redis: Callable[..., Any], queue_name: str
) -> None:
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    redis = aioredis.Redis.from_url(server.url, socket_timeout=5)
    try:
        store = FlowStore(redis, queue_name)
        nodes = [Node(name, Task(id="x", type="noop")) for name in ("a", "b")]
        nodes.append(Node("join", Task(id="x", type="noop"), ["a", "b"], Policy("fail_fast")))
        await store.create(plan("late", queue_name, nodes))
        moved = await settle_members(redis, queue_name, "late", {"a": "ack", "b": "dead"})
        assert moved == ["late"]  # failed: fail_fast, and its join blocked
        events = Events()
        announcer = FlowAnnouncer(store, events, 60)
        server.kill()
        announcer.later(moved)
        await asyncio.sleep(0.5)  # connections refused meanwhile
        assert events.seen == []
        server.start()
        back = time.monotonic()
        await async_wait_until(lambda: events.seen, timeout=10, what="the announcement")
        assert time.monotonic() - back < 2.0  # the retries are at most half a second apart
        assert events.seen == [("flow.failed", {"flow": "late", "halted": 1})]
        assert [flow_id for flow_id, _ in await store.ids(finished=True)] == ["late"]
    finally:
        await redis.aclose()


async def test_a_failed_fail_fast_flows_cancel_requests_are_sent_even_when_the_first_try_fails(
    private_redis: Callable[..., Any], queue_name: str
) -> None:
    """The announcement is claimed in Redis before the flow's ready members are asked to cancel: when the claim's
    call succeeds and the cancel's fails, the next try sends the cancel (the claim is not made twice)."""
    server = private_redis()
    redis = aioredis.Redis.from_url(server.url, socket_timeout=5)
    try:
        store = FlowStore(redis, queue_name)
        nodes = [Node(name, Task(id="x", type="noop")) for name in ("a", "b", "c")]
        nodes.append(Node("join", Task(id="x", type="noop"), ["a", "b", "c"], Policy("fail_fast")))
        await store.create(plan("halt", queue_name, nodes))
        moved = await settle_members(redis, queue_name, "halt", {"a": "dead"})
        events = Events()
        announcer = FlowAnnouncer(store, events, 60)
        # The cancel script refused once, by a real Redis: a write refused under noeviction and no memory left.
        await redis.config_set("maxmemory-policy", "noeviction")
        real_announce = store.announce

        async def announce_then_fill(flow_ids: list[str], ttl: int) -> list[tuple[str, str, int]]:
            told = await real_announce(flow_ids, ttl)
            if told:  # the first call only: the retry's finds nothing left to claim
                await redis.config_set("maxmemory", "1")
            return told

        store.announce = announce_then_fill  # type: ignore[method-assign]
        announcer.later(moved)
        await async_wait_until(lambda: events.seen, timeout=5, what="the announcement")
        await asyncio.sleep(0.2)
        assert await redis.zcard(store.keys.cancels) == 0  # refused meanwhile
        await redis.config_set("maxmemory", "0")
        await async_wait_until(lambda: redis.zcard(store.keys.cancels), timeout=5, what="the cancel requests")
        requests = {item.decode() for item in await redis.zrange(store.keys.cancels, 0, -1)}
        assert requests == {"halt.b", "halt.c"}
        assert events.seen == [("flow.failed", {"flow": "halt", "halted": 1})]
    finally:
        await redis.aclose()
