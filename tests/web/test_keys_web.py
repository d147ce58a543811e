"""Fair keys on the web: the `/v1` key routes (list, one, change, reset; bad input is a 400 naming the field) and
the dashboard's Keys page, which escapes what a producer named its keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq import AsyncClient
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from gopherq.web import create_app


@pytest.fixture
async def web_app(make_settings: Callable[..., Settings], aredis: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    settings = make_settings(fair={"default_weight": 2, "keys": [{"pattern": "vip-*", "weight": 5}]})
    server = TestServer(create_app(settings, aredis), host="127.0.0.1")
    await server.start_server()
    session = ClientSession()

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with session.request(method, server.make_url(path), json=body) as response:
            is_json = response.content_type == "application/json"
            return response.status, await (response.json() if is_json else response.text())

    async with AsyncClient(settings) as client:
        tasks = [client.http("http://127.0.0.1:9/", fair_key="vip-acme") for _ in range(3)]
        tasks.append(client.http("http://127.0.0.1:9/", fair_key="<b>small</b>"))
        await client.enqueue_many(tasks)
    call.queue = settings.queue.name  # type: ignore[attr-defined]
    yield call
    await session.close()
    await server.close()


async def test_the_key_routes_list_change_and_reset(web_app: Callable[..., Any]) -> None:
    base = f"/v1/queues/{web_app.queue}/keys"  # type: ignore[attr-defined]
    status, body = await web_app("GET", base)
    assert status == 200
    rows = {row["key"]: row for row in body["keys"]}
    assert rows["vip-acme"]["backlog"] == 3 and rows["vip-acme"]["weight"] == 5
    assert rows["<b>small</b>"]["weight"] == 2
    status, body = await web_app("PUT", f"{base}/vip-acme", {"concurrency": 4, "rate": "10/s", "paused": True})
    assert status == 200 and body["concurrency"] == 4 and body["rate"] == 10 and body["paused"] and body["weight"] == 5
    status, body = await web_app("GET", f"{base}/vip-acme")
    assert status == 200 and body["source"] == "run-time" and body["paused"]
    status, body = await web_app("PUT", f"{base}/vip-acme", {"weight": 0})
    assert status == 400 and "weight" in body["error"]["message"]
    status, body = await web_app("PUT", f"{base}/vip-acme", {"colour": "red"})
    assert status == 400 and "colour" in body["error"]["message"]
    status, body = await web_app("PUT", f"{base}/vip-acme", {"rate": "fast"})
    assert status == 400 and "rate" in body["error"]["message"]
    status, body = await web_app("DELETE", f"{base}/vip-acme")
    assert status == 200 and body["weight"] == 5 and not body["paused"]


async def test_the_keys_page_shows_each_key_escaped(web_app: Callable[..., Any]) -> None:
    status, html = await web_app("GET", f"/queues/{web_app.queue}/keys")  # type: ignore[attr-defined]
    assert status == 200
    assert "vip-acme" in html and "&lt;b&gt;small&lt;/b&gt;" in html and "<b>small</b>" not in html
    status, html = await web_app("GET", f"/fragments/queues/{web_app.queue}/keys")  # type: ignore[attr-defined]
    assert status == 200 and "vip-acme" in html


async def test_metrics_show_the_most_backlogged_keys(web_app: Callable[..., Any]) -> None:
    status, text = await web_app("GET", "/metrics")
    assert status == 200
    queue = web_app.queue  # type: ignore[attr-defined]
    assert f'gopherq_fair_key_backlog{{key="vip-acme",queue="{queue}"}} 3.0' in text
    assert f'gopherq_fair_key_weight{{key="vip-acme",queue="{queue}"}} 5.0' in text


async def test_a_task_created_through_the_api_joins_its_key(
    web_app: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    queue = web_app.queue  # type: ignore[attr-defined]
    status, body = await web_app(
        "POST", f"/v1/queues/{queue}/tasks", {"url": "http://127.0.0.1:9/", "fair_key": "api-t"}
    )
    assert status == 201, body
    assert await aredis.llen(QueueKeys(queue).fair_list("d", "api-t")) == 1
    status, body = await web_app(
        "POST", f"/v1/queues/{queue}/tasks", {"url": "http://127.0.0.1:9/", "fair_key": "a\nb"}
    )
    assert status == 422 and "fair_key" in body["error"]["message"]
