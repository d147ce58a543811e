"""The operator side of the `/v1` API and the dashboard, over real HTTP on loopback with a real worker: task lists by
state, "why is it waiting", dead letters by filter and bulk actions a window at a time, copy as curl and edit and
requeue (secrets stay masked, and stay secret on the wire), 404 for an unknown queue or task, every change an audit
event with its actor in the task's timeline, and a viewer token that reads everything and is refused every change."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from gopherq import AsyncClient
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from gopherq.web import create_app
from tests.support.common import async_wait_until
from tests.support.loopback import LoopbackServer

ADMIN = "admin-token-0123456789"
VIEWER = "viewer-token-0123456789"
SECRET = "Bearer s3cr3t-hunter2"


class Server:
    """The web application with the client's event bus (so actions are audited into the stream), and a session."""

    def __init__(self, server: TestServer, client: AsyncClient, settings: Settings) -> None:
        self.server = server
        self.client = client
        self.settings = settings
        self.queue = settings.queue.name
        self.sessions: list[ClientSession] = []

    def session(self, token: str | None = ADMIN) -> ClientSession:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        session = ClientSession(headers=headers, cookie_jar=CookieJar(unsafe=True))
        self.sessions.append(session)
        return session

    async def call(self, method: str, path: str, body: Any = None, token: str | None = ADMIN) -> tuple[int, Any]:
        session = self.session(token)
        kwargs = {"json": body} if body is not None else {}
        async with session.request(method, self.server.make_url(path), allow_redirects=False, **kwargs) as response:
            text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


@pytest.fixture
async def served(make_settings: Callable[..., Settings], aredis: aioredis.Redis) -> AsyncIterator[Server]:
    settings = make_settings(web={"token": ADMIN, "viewer_token": VIEWER}, masking={"headers": ["X-Api-Key"]})
    async with AsyncClient(settings, sinks=True) as client:
        app = create_app(settings, aredis, bus=client.bus, plugins=client.plugins)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        found = Server(server, client, settings)
        yield found
        for session in found.sessions:
            await session.close()
        await server.close()


def dead_entry(task: dict[str, Any], reason: str, status: int | None, message: str, age: float) -> bytes:
    details = {"status_code": status} if status is not None else {}
    return codec.dumps(
        {
            "task_id": task["id"],
            "reason": reason,
            "error": {"reason": "http_status", "message": message, "details": details},
            "attempts": 1,
            "dead_at": time.time() - age,
            "raw": codec.dumps(task).decode(),
            "type": "http",
        }
    )


async def add_dead(redis: aioredis.Redis, queue: str, entries: list[tuple[dict[str, Any], bytes, float]]) -> None:
    k = QueueKeys(queue)
    for task, entry, age in entries:
        await redis.hset(k.dead, task["id"], entry)
        await redis.zadd(k.dead_index, {task["id"]: (time.time() - age) * 1000})


async def test_dead_letters_by_filter_bulk_actions_curl_edit_and_the_audit_trail(
    served: Server, aredis: aioredis.Redis, loopback: LoopbackServer, start_worker: Callable[..., Any]
) -> None:
    queue = served.queue
    entries = []
    for n in range(6):
        host = "api.example.com" if n % 2 else "other.example.net"
        status = 503 if n < 4 else 404
        task = {"id": f"d{n}", "type": "http", "method": "POST", "url": f"https://{host}/v1/x", "body": "{}"}
        entries.append((task, dead_entry(task, "retries_exhausted", status, f"HTTP {status} from {host}", n * 60), n))
    await add_dead(aredis, queue, entries)

    status, page = await served.call("GET", f"/v1/queues/{queue}/dead?host=api.example.com&status=503")
    assert status == 200 and [item["entry_id"] for item in page["items"]] == ["d1", "d3"]
    assert page["items"][0]["host"] == "api.example.com" and page["items"][0]["status"] == 503
    status, page = await served.call("GET", f"/v1/queues/{queue}/dead?text=from%20other&newer_than=150s")
    assert [item["entry_id"] for item in page["items"]] == ["d0", "d2"]
    status, body = await served.call("GET", f"/v1/queues/{queue}/dead?status=99")
    assert status == 400 and body["error"]["reason"] == "invalid_parameter"

    status, outcome = await served.call("POST", f"/v1/queues/{queue}/dead/delete", {"filter": {"status": "404"}})
    assert status == 200 and outcome["matched"] == 2 and outcome["done"] == 2 and outcome["next_cursor"] is None
    status, outcome = await served.call(
        "POST", f"/v1/queues/{queue}/dead/requeue", {"filter": {"host": "api.example.com"}}
    )
    assert status == 200 and (outcome["matched"], outcome["done"]) == (2, 2)
    assert await aredis.zcard(QueueKeys(queue).dead_index) == 2 and await aredis.llen(queue) == 2
    status, body = await served.call("POST", f"/v1/queues/{queue}/dead/requeue", {"ids": ["nope"]})
    assert status == 200 and body["not_found"] == 1

    # A real dead HTTP task with a secret header: copied as curl (masked), edited and requeued (secret kept).
    dead_id = await served.client.enqueue_http(
        loopback.url("/status/404"), "POST", headers={"X-Api-Key": SECRET}, body="payload", max_attempts=1
    )
    worker = await start_worker(served.settings)
    await async_wait_until(lambda: aredis.hexists(QueueKeys(queue).dead, dead_id), timeout=15, what="a dead letter")
    status, body = await served.call("GET", f"/v1/queues/{queue}/dead/{dead_id}/command")
    assert status == 200 and body["command"].startswith("curl --request POST --header 'X-Api-Key: ********'")
    assert "hunter2" not in body["command"] and "--data-binary payload" in body["command"]
    status, body = await served.call("GET", f"/v1/queues/{queue}/dead/{dead_id}/editable")
    assert status == 200 and body["task"]["headers"]["X-Api-Key"] == "********" and "id" not in body["task"]
    edited = {**body["task"], "url": loopback.url("/ok"), "id": "fixed-1"}
    status, made = await served.call("POST", f"/v1/queues/{queue}/dead/{dead_id}/edit", {"task": edited})
    assert status == 201 and made["id"] == "fixed-1"
    record = await served.client.wait("fixed-1", timeout=15)
    assert record is not None and record.status.value == "succeeded"
    assert await aredis.hexists(QueueKeys(queue).dead, dead_id)  # the original is kept
    await worker.stop()

    # Every change is in the task's timeline, with its actor and source.
    async def audited(task_id: str, action: str) -> dict[str, Any] | None:
        info = await served.client.inspect.task(queue, task_id)
        found = [e.data for e in (info.events if info else []) if e.name == "operator.action"]
        return next((data for data in found if data["action"] == action), None)

    data = await async_wait_until(lambda: audited("d1", "requeue"), what="the requeue in d1's timeline")
    assert data["actor"] == "admin (token)" and data["source"] == "api"
    assert await async_wait_until(lambda: audited(dead_id, "edit_requeue"), what="the edit in the timeline")
    assert await async_wait_until(lambda: audited("fixed-1", "edit_requeue"), what="the edit in the new timeline")


async def test_lists_explain_pause_and_unknown_names(served: Server) -> None:
    queue = served.queue
    await served.client.enqueue_http("https://example.com/later", id="later", delay=600)
    await served.client.enqueue_http("https://example.com/now", id="now")
    status, page = await served.call("GET", f"/v1/queues/{queue}/tasks?state=scheduled")
    assert status == 200 and [item["id"] for item in page["items"]] == ["later"]
    assert page["items"][0]["waiting"] == "scheduled"
    status, page = await served.call("GET", f"/v1/queues/{queue}/tasks?state=retrying")
    assert status == 200 and page["items"] == []
    assert (await served.call("GET", f"/v1/queues/{queue}/tasks?state=bogus"))[0] == 400
    status, why = await served.call("GET", f"/v1/tasks/later/explain?queue={queue}")
    assert status == 200 and why["waiting_for"] == "scheduled"
    status, why = await served.call("GET", f"/v1/tasks/now/explain?queue={queue}")
    assert status == 200 and why["waiting_for"] == "no_worker"
    assert (await served.call("GET", f"/v1/tasks/never/explain?queue={queue}"))[0] == 404

    status, body = await served.call("POST", f"/v1/queues/{queue}/pause")
    assert status == 200 and body == {"queue": queue, "paused": True}
    status, why = await served.call("GET", f"/v1/tasks/now/explain?queue={queue}")
    assert why["waiting_for"] == "paused"
    assert (await served.call("POST", f"/v1/queues/{queue}/resume"))[0] == 200
    status, body = await served.call("POST", "/v1/queues/no_such_queue_xyz/pause")
    assert status == 404 and "no queue 'no_such_queue_xyz'" in body["error"]["message"]
    status, body = await served.call("DELETE", f"/v1/tasks/never-was?queue={queue}")
    assert status == 404 and body["error"]["reason"] == "not_found"
    assert await served.client.redis.zcard(QueueKeys(queue).cancels) == 0  # nothing left behind  # type: ignore[union-attr]

    status, body = await served.call("GET", "/metrics")
    assert status == 200
    assert f'gopherq_queue_state_tasks{{queue="{queue}",state="scheduled"}} 1.0' in body
    assert f'gopherq_queue_state_tasks{{queue="{queue}",state="ready"}} 1.0' in body


def _concrete(path: str) -> str:
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: {"queue": "q_viewer"}.get(m.group(1), "x"), path)


async def test_a_viewer_reads_everything_and_every_change_is_refused_with_403(served: Server) -> None:
    queue = served.queue
    await served.client.enqueue_http("https://example.com/x", id="seen")
    for path in ("/", f"/queues/{queue}", f"/queues/{queue}/tasks/seen", "/metrics", f"/v1/queues/{queue}"):
        assert (await served.call("GET", path, token=VIEWER))[0] == 200, path
    unsafe = {
        (route.method, route.resource.canonical)
        for route in served.server.app.router.routes()
        if route.method in ("POST", "PUT", "PATCH", "DELETE") and route.resource is not None
    }
    unsafe -= {("POST", "/login"), ("POST", "/logout")}
    assert len(unsafe) >= 10
    for method, path in sorted(unsafe):
        status, body = await served.call(method, _concrete(path), {"ids": ["x"]}, token=VIEWER)
        assert status == 403, (method, path, status, body)
    assert (await served.call("POST", f"/v1/queues/{queue}/pause", token=VIEWER))[0] == 403
    assert not await served.client.redis.exists(QueueKeys(queue).paused)  # type: ignore[union-attr]

    # A browser that logs in with the viewer token: pages render without action forms, and a forged POST is 403.
    browser = served.session(token=None)
    login = served.server.make_url("/login")
    async with browser.get(login) as response:
        form = await response.text()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf is not None
    data = {"token": VIEWER, "next": "/", "csrf_token": csrf.group(1)}
    async with browser.post(login, data=data, allow_redirects=False) as response:
        assert response.status == 303
    async with browser.get(served.server.make_url(f"/queues/{queue}")) as response:
        page = await response.text()
        assert response.status == 200 and "read-only" in page and f"/queues/{queue}/pause" not in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(r'data-csrf="([^"]+)"', page)
    forged = {"csrf_token": token.group(1) if token else ""}
    async with browser.post(served.server.make_url(f"/queues/{queue}/pause"), data=forged) as response:
        assert response.status == 403
