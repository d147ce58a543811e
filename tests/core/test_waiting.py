"""Why a task waits: the delayed set split into retrying, scheduled and held (flow control: which key, until when),
counted in a bounded read and paged by kind, and `explain` naming the one thing a task waits for, on a real Redis
with a real worker and a loopback HTTP server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient
from gopherq.core.inspect import Inspector
from gopherq.core.inspect.waiting import CLASSIFY_LIMIT, waiting_kind
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from tests.support.common import async_wait_until
from tests.support.loopback import LoopbackServer
from tests.support.plugins import CaptureSink, SinkPlugin


async def test_delayed_tasks_split_into_retrying_scheduled_and_held_everywhere(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], loopback: LoopbackServer
) -> None:
    rule = {"match": "127.0.0.1", "rate": 0.001, "burst": 1}
    settings = make_settings(
        plugins={"http": {"hosts": [rule]}}, queue={"backoff_min": 300, "backoff_max": 300, "max_attempts": 4}
    )
    queue = settings.queue.name
    sink = CaptureSink()
    await start_worker(settings, extra_plugins={"capture": SinkPlugin(sink)})
    async with AsyncClient(settings) as client:
        inspect = client.inspect
        await client.enqueue_http(loopback.url("/status/500"), id="fails")  # the one rate slot: runs, fails
        await async_wait_until(lambda: sink.named("task.retrying"), what="the failing call")
        await client.enqueue_http(loopback.url("/ok"), id="held1")
        await client.enqueue_http(loopback.url("/ok"), id="held2")
        await client.enqueue_http("https://example.com/later", id="later", delay=600)

        async def split() -> bool:
            info = await inspect.queue(queue)
            return (info.retrying, info.scheduled, info.held) == (1, 1, 2)

        await async_wait_until(split, what="the split")
        info = await inspect.queue(queue)
        assert info.delayed == 4 and info.delayed_exact
        assert info.to_dict()["held"] == 2

        retrying = await inspect.delayed(queue, kind="retrying")
        assert [item.id for item in retrying.items] == ["fails"] and retrying.total == 1
        line = retrying.items[0]
        assert line.waiting == "retrying" and line.attempt == 2 and line.last_error and "500" in line.last_error
        held = await inspect.delayed(queue, kind="held", limit=1)
        assert held.total == 2 and len(held.items) == 1
        assert held.items[0].held is not None and held.items[0].held["key"] == "127.0.0.1"
        assert held.items[0].held["reason"] == "rate" and held.items[0].held["limit"] == "rate limit"
        scheduled = await inspect.delayed(queue, kind="scheduled")
        assert [item.id for item in scheduled.items] == ["later"]
        every = await inspect.delayed(queue)
        assert {item.waiting for item in every.items} == {"retrying", "scheduled", "held"}

        why = await inspect.explain(queue, "fails")
        assert why is not None and why.waiting_for == "retrying"
        assert why.details["attempt"] == 2 and why.details["max_attempts"] == 4 and "500" in why.details["last_error"]
        assert "attempt 2 of 4" in why.message
        why = await inspect.explain(queue, "held2")
        assert why is not None and why.waiting_for == "held" and why.details["key"] == "127.0.0.1"
        assert why.details["reason"] == "rate" and why.details["until"] > time.time()
        assert "rate limit of 127.0.0.1" in why.message
        why = await inspect.explain(queue, "later")
        assert why is not None and why.waiting_for == "scheduled" and why.details["eta"] > time.time() + 500
    throttled = await sink.wait_named("task.throttled")
    assert throttled[0].data["why"] == "rate" and throttled[0].data["flow_key"] == "127.0.0.1"


async def test_explain_names_a_paused_queue_no_worker_and_the_backlog_ahead(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    queue = settings.queue.name
    async with AsyncClient(settings) as client:
        inspect = client.inspect
        for n in range(3):
            await client.enqueue_http(f"https://example.com/{n}", id=f"before{n}")
        await client.enqueue_http("https://example.com/urgent", id="urgent", priority="high")
        await client.enqueue_http("https://example.com/me", id="me")
        why = await inspect.explain(queue, "me")
        assert why is not None and why.waiting_for == "no_worker" and why.state == "ready"
        assert why.details["ahead"] == 3 and why.details["ahead_more_urgent"] == 1
        await inspect.pause(queue)
        why = await inspect.explain(queue, "me")
        assert why is not None and why.waiting_for == "paused" and f"queue {queue} is paused" in why.message
        await inspect.resume(queue)
        # A live worker (as its heartbeat says): the wait is the backlog ahead.
        await aredis.zadd(QueueKeys(queue).workers, {"host:1:x": time.time() * 1000})
        why = await inspect.explain(queue, "me")
        assert why is not None and why.waiting_for == "backlog" and "3 task(s) ahead of it" in why.message
        assert await inspect.explain(queue, "nope") is None


async def test_the_split_is_bounded_and_scaled_past_the_classify_limit(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis
) -> None:
    settings = make_settings()
    queue = settings.queue.name
    k = QueueKeys(queue)
    retry = b'{"id":"r%d","attempt":2,"last_error":{"reason":"x","message":"y"},"waiting_for":{"reason":"retry"}}'
    plain = b'{"id":"s%d","eta":1}'
    members = {retry % n: 1000 + n for n in range(CLASSIFY_LIMIT)}
    members.update({plain % n: 10**12 + n for n in range(CLASSIFY_LIMIT)})
    await aredis.zadd(k.delayed, members)
    info = await Inspector(aredis, settings).queue(queue)
    # The soonest CLASSIFY_LIMIT are all retries: the rest are taken to be in the same proportion (flagged).
    assert info.delayed == 2 * CLASSIFY_LIMIT and not info.delayed_exact
    assert info.retrying + info.scheduled + info.held == info.delayed
    assert waiting_kind({"last_error": {}}) == "retrying" and waiting_kind({"eta": 1}) == "scheduled"
    assert waiting_kind({"waiting_for": {"reason": "circuit", "key": "h"}}) == "held"
