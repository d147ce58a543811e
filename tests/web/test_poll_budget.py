"""A task-page poll reads a bounded amount from Redis (issue 20, part 2): with a backlog of 100,000 ready tasks (and
delayed ones), the dashboard's task fragment (what the task page's refresh fetches) and `GET /v1/tasks/{id}` each
read under POLL_BUDGET bytes, whichever task is looked at: one deep in the backlog, one at its head, a delayed one,
a finished one, a raw push, an unknown id.

Measured on a private redis-server (nothing else talks to it) as the growth of `total_net_output_bytes` (INFO
stats: every byte the server sent) across one poll, less what the INFO call that starts the measure adds itself.
The task's timeline is read from the events stream, which is empty here: its read is `Inspector.timeline`'s, to be
bounded where the events are kept."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq import AsyncClient
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.results import TaskResult
from gopherq.core.settings import Settings, load_settings
from gopherq.core.task import TaskStatus
from gopherq.web.app import create_app
from tests.support.redis_servers import PrivateRedis

#: Most bytes one task-page poll may read from Redis (the issue's target).
POLL_BUDGET = 64 * 1024

BACKLOG = 100_000
QUEUE = "budget"


async def sent_bytes(redis: aioredis.Redis) -> int:
    return int((await redis.info("stats"))["total_net_output_bytes"])


@pytest.fixture
async def backlog(private_redis: Callable[..., PrivateRedis]) -> AsyncIterator[tuple[Settings, aioredis.Redis]]:
    server = private_redis()
    settings = load_settings(None, {"redis": {"url": server.url}, "queue": {"name": QUEUE}}, environ={})
    redis = aioredis.Redis.from_url(server.url)
    async with AsyncClient(settings) as client:
        url = "https://partner.example/hook?token=abc"
        for start in range(0, BACKLOG, 10_000):
            tasks = [client.task("http", url=url, body="x" * 40, id=f"b{n:06d}") for n in range(start, start + 10_000)]
            await client.enqueue_many(tasks)
        later = [client.task("http", url=url, id=f"later{n}", eta=time.time() + 600 + n) for n in range(2_000)]
        await client.enqueue_many(later)
        keys = QueueKeys(QUEUE)
        record = TaskResult("done1", QUEUE, "http", TaskStatus.SUCCEEDED, 1, finished_at=time.time(), result={"a": 1})
        await redis.set(keys.result("done1"), codec.dumps(record.to_dict()), ex=600)
        await redis.rpush(QUEUE, codec.dumps({"url": url, "id": "raw1"}))  # no script: no whereabouts record
    yield settings, redis
    await redis.aclose()


async def test_a_task_page_poll_reads_under_the_budget_with_a_100k_backlog(
    backlog: tuple[Settings, aioredis.Redis],
) -> None:
    settings, redis = backlog
    server = TestServer(create_app(settings, aioredis.Redis.from_url(settings.redis.url)), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:

            async def poll(path: str) -> tuple[int, int]:
                before = await sent_bytes(redis)
                async with session.get(server.make_url(path)) as response:
                    await response.read()
                    status = response.status
                return status, await sent_bytes(redis) - before - info_size

            base = await sent_bytes(redis)
            info_size = await sent_bytes(redis) - base  # what one INFO stats reply adds to the count
            read: dict[str, Any] = {}
            for task_id in ("b050000", "b000001", "b099999", "later7", "done1", "raw1", "nothing"):
                for face, path in (
                    ("page", f"/fragments/queues/{QUEUE}/tasks/{task_id}"),
                    ("api", f"/v1/tasks/{task_id}?queue={QUEUE}"),
                ):
                    status, size = await poll(path)
                    assert status == (404 if task_id == "nothing" else 200), (face, task_id)
                    read[f"{face} {task_id}"] = size
            print("\nbytes read from Redis per poll:", read)
            over = {name: size for name, size in read.items() if size > POLL_BUDGET}
            assert not over, f"polls read more than {POLL_BUDGET} bytes: {over}"
    finally:
        await server.close()


KEYS = 100_000


async def test_a_ready_tab_poll_reads_under_the_budget_with_100k_fair_keys(
    private_redis: Callable[..., PrivateRedis],
) -> None:
    """The queue page's ready tab (its live fragment, what a poll fetches) and the API's ready page, at the head, in
    the middle of 100,000 fair keys by cursor and among the plain tasks: each reads under POLL_BUDGET bytes."""
    from gopherq.core.broker import Broker, SpecialPush
    from gopherq.core.inspect import Inspector

    server = private_redis()
    settings = load_settings(None, {"redis": {"url": server.url}, "queue": {"name": QUEUE}}, environ={})
    redis = aioredis.Redis.from_url(server.url)
    try:
        broker = Broker(redis, QUEUE, "w1")
        url = "https://partner.example/hook?token=abc"
        for start in range(0, KEYS, 5000):
            pushes = []
            for n in range(start, start + 5000):
                body = {"id": f"k{n:06d}", "url": url, "body": "x" * 40, "fair_key": f"tenant-{n:06d}"}
                pushes.append(SpecialPush(body["id"], codec.dumps(body)))
            await broker.push_special(pushes)
        await redis.rpush(QUEUE, *(codec.dumps({"id": f"p{n}", "url": url}) for n in range(100)))
        middle = await Inspector(redis, settings).ready(QUEUE, KEYS // 2, 25)
        assert middle.next_cursor is not None and middle.total == KEYS + 100
        app = create_app(settings, aioredis.Redis.from_url(settings.redis.url))
        server_app = TestServer(app, host="127.0.0.1")
        await server_app.start_server()
        try:
            async with ClientSession() as session:
                base = await sent_bytes(redis)
                info_size = await sent_bytes(redis) - base
                read: dict[str, int] = {}
                for name, path in (
                    ("page head", f"/fragments/queues/{QUEUE}?tab=ready"),
                    ("page mid-keys", f"/fragments/queues/{QUEUE}?tab=ready&cursor={middle.next_cursor}"),
                    ("api head", f"/v1/queues/{QUEUE}/tasks?state=ready"),
                    ("api mid-keys", f"/v1/queues/{QUEUE}/tasks?state=ready&cursor={middle.next_cursor}"),
                ):
                    before = await sent_bytes(redis)
                    async with session.get(server_app.make_url(path)) as response:
                        body_text = await response.text()
                        assert response.status == 200, (name, body_text[:300])
                    assert ("tenant-0" if "mid" in name else "p0") in body_text, name
                    read[name] = await sent_bytes(redis) - before - info_size
            print("\nbytes read from Redis per ready poll with 100,000 fair keys:", read)
            over = {name: size for name, size in read.items() if size > POLL_BUDGET}
            assert not over, f"polls read more than {POLL_BUDGET} bytes: {over}"
        finally:
            await server_app.close()
    finally:
        await redis.aclose()
