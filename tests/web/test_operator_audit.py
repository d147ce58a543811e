"""The operator pages' actions leave the audit trail every other operator action leaves: close circuit, reset rate,
a schedule's run / pause / resume, and run now / delete / cancel of one task are `operator.action` events naming
the actor and the source, from the dashboard's forms and from the `/v1` API (the CLI's: tests/cli/
test_cli_operations.py); a task's own action is in that task's timeline. A viewer changes nothing and leaves no
event."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from gopherq import AsyncClient
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from gopherq.web import create_app
from tests.support.common import async_wait_until
from tests.web.test_web import Dashboard

Start = Callable[..., Any]

SCHEDULE = {"name": "beat", "every": 3600, "task": {"url": "http://127.0.0.1:9/"}}
#: The dashboard's action forms (each POSTed with a CSRF token and the key and queue of a destination).
DASHBOARD_ACTIONS = (
    "/destinations/close",
    "/destinations/reset",
    "/schedules/beat/run",
    "/schedules/beat/pause",
    "/schedules/beat/resume",
    "/queues/{queue}/tasks/{later}/run",
    "/queues/{queue}/tasks/{doomed}/delete",
)
TOKEN, VIEWER = "audit-admin-token-0123456789", "audit-viewer-token-0123456789"


@pytest.fixture
async def dashboard(make_settings: Callable[..., Settings], aredis: aioredis.Redis) -> AsyncIterator[Start]:
    """`await dashboard(web={...})`: the application on a real loopback socket with a client's event bus (its sinks
    write the queue's event stream and the tasks' timelines, as `gopherq web`'s do)."""
    opened: list[Any] = []

    async def start(**sections: Any) -> Dashboard:
        settings = make_settings(**sections)
        client = AsyncClient(settings, sinks=True)
        await client.__aenter__()
        server = TestServer(create_app(settings, aredis, bus=client.bus, plugins=client.plugins), host="127.0.0.1")
        await server.start_server()
        session = ClientSession(cookie_jar=CookieJar(unsafe=True))
        opened.append((client, server, session))
        return Dashboard(server, session, settings)

    yield start
    for client, server, session in opened:
        await session.close()
        await server.close()
        await client.__aexit__(None, None, None)


async def trail(app: Dashboard, task_id: str | None = None) -> list[dict[str, Any]]:
    """The `operator.action` events of the queue's stream (or of one task's timeline), as their data."""
    async with AsyncClient(app.settings) as client:
        events = await client.inspect.events(app.settings.queue.name, count=10_000, task_id=task_id)
    return [{**event.data, "task_id": event.task_id} for event in events if event.name == "operator.action"]


async def scheduled(app: Dashboard) -> str | None:
    """The id of the task a `schedule_run` enqueued, once its event is in the stream."""
    return next((event["task_id"] for event in await trail(app) if event["action"] == "schedule_run"), None)


async def recorded(app: Dashboard, expected: list[tuple[str, str | None]], actor: str, source: str) -> None:
    """Wait until each (action, task id) of `expected` is in the trail with `actor` and `source`, and each task's
    action is in its own timeline too."""

    async def done() -> bool:
        found = {(event["action"], event["task_id"]) for event in await trail(app) if event["actor"] == actor}
        return set(expected) <= found

    await async_wait_until(done, timeout=10, what=f"{expected} in the event stream")
    for event in await trail(app):
        assert event["source"] == source and event["actor"] == actor, event
    for action, task_id in expected:
        if task_id is not None:
            assert action in {event["action"] for event in await trail(app, task_id)}, (action, task_id)


async def test_the_dashboard_records_each_action_with_its_user(
    dashboard: Start,
    aredis: aioredis.Redis,
    queue_name: str,
) -> None:
    app: Dashboard = await dashboard(web={"username": "ops", "password": "pw-0123456789"}, schedules=[SCHEDULE])
    basic = {"Authorization": "Basic " + base64.b64encode(b"ops:pw-0123456789").decode()}
    await aredis.zadd(QueueKeys(queue_name).flows, {"dest.example": time.time() * 1000})
    async with AsyncClient(app.settings) as client:
        later = await client.enqueue_http("http://127.0.0.1:9/", delay=3600)
        doomed = await client.enqueue_http("http://127.0.0.1:9/", delay=3600)
        stopped = await client.enqueue_http("http://127.0.0.1:9/")
    _, body, _ = await app.get(f"/queues/{queue_name}", headers=basic)
    token = body.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": token, "key": "dest.example", "queue": queue_name}
    for path in (*DASHBOARD_ACTIONS, f"/queues/{queue_name}/tasks/{stopped}/cancel"):
        path = path.format(queue=queue_name, later=later, doomed=doomed)
        status, _, headers = await app.post(path, form, headers=basic)
        assert status == 303 and "notice=" in headers["Location"], (path, status)
    run = await async_wait_until(lambda: scheduled(app), timeout=10, what="the schedule's run in the stream")
    assert run.startswith("beat@")
    expected = [
        ("close_circuit", None),
        ("reset_rate", None),
        ("schedule_run", run),
        ("schedule_pause", None),
        ("schedule_resume", None),
        ("run_now", later),
        ("delete_task", doomed),
        ("cancel", stopped),
    ]
    await recorded(app, expected, "ops (basic auth)", "dashboard")
    close = next(event for event in await trail(app) if event["action"] == "close_circuit")
    assert close["key"] == "dest.example"
    status, _, _ = await app.post(f"/queues/no_such_queue_zz/tasks/{later}/run", form, headers=basic)
    assert status == 404  # an unknown queue: nothing done, nothing recorded


async def test_the_api_records_each_action_with_its_token_role_and_refuses_a_viewer(
    dashboard: Start,
    aredis: aioredis.Redis,
    queue_name: str,
) -> None:
    app: Dashboard = await dashboard(web={"token": TOKEN, "viewer_token": VIEWER}, schedules=[SCHEDULE])
    await aredis.zadd(QueueKeys(queue_name).flows, {"dest.example": time.time() * 1000})
    async with AsyncClient(app.settings) as client:
        later = await client.enqueue_http("http://127.0.0.1:9/", delay=3600)
        doomed = await client.enqueue_http("http://127.0.0.1:9/", delay=3600)

    async def post(path: str, bearer: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {bearer}"}
        async with app.session.post(app.url(path), headers=headers, allow_redirects=False) as response:
            text = await response.text()
        return response.status, json.loads(text) if path.startswith("/v1/") else text

    paths = [
        f"/v1/destinations/dest.example/close?queue={queue_name}",
        "/v1/destinations/dest.example/reset",
        "/v1/schedules/beat/run",
        "/v1/schedules/beat/pause",
        "/v1/schedules/beat/resume",
        f"/v1/queues/{queue_name}/tasks/{later}/run",
        f"/v1/queues/{queue_name}/tasks/{doomed}/delete",
    ]
    for path in paths:
        status, body = await post(path, VIEWER)
        assert status == 403 and body["error"]["reason"] == "forbidden", path
    for path in (*DASHBOARD_ACTIONS, f"/queues/{queue_name}/tasks/{later}/cancel"):  # the dashboard's forms too
        status, _ = await post(path.format(queue=queue_name, later=later, doomed=doomed), VIEWER)
        assert status == 403, path
    assert await trail(app) == []  # a viewer changed nothing
    answers = [await post(path, TOKEN) for path in paths]
    assert [status for status, _ in answers] == [200, 200, 201, 200, 200, 200, 200]
    run = answers[2][1]["id"]
    expected = [
        ("close_circuit", None),
        ("reset_rate", None),
        ("schedule_run", run),
        ("schedule_pause", None),
        ("schedule_resume", None),
        ("run_now", later),
        ("delete_task", doomed),
    ]
    await recorded(app, expected, "admin (token)", "api")
    pause = next(event for event in await trail(app) if event["action"] == "schedule_pause")
    assert pause["schedule"] == "beat"
    status, body = await post(f"/v1/queues/no_such_queue_zz/tasks/{later}/run", TOKEN)
    assert status == 404 and body["error"]["reason"] == "not_found"
