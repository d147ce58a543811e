"""Routes of the /v1 API asked for every answer they give (docs/api.md's status-code table), for the answers test
of tests/core/test_hostile_rules.py: the operator routes (web/api_ops.py), the operator pages' routes
(web/api_pages.py) and the fair-key routes (web/keys.py)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.keys import QueueKeys


async def operator_routes(
    ask: Any, queue: str, redis: aioredis.Redis, servers: tuple[Any, ...], elsewhere: Any
) -> None:
    """Provoke every answer docs/api.md lists for the operator routes (web/api_ops.py)."""
    authed, open_, down, viewer = servers
    task = {"id": "dead-2", "type": "http", "method": "GET", "url": "http://127.0.0.1:9/"}
    entry = {"task_id": "dead-2", "reason": "non_retryable", "dead_at": time.time(), "raw": codec.dumps(task).decode()}
    await redis.hset(QueueKeys(queue).dead, "dead-2", codec.dumps(entry))
    await redis.zadd(QueueKeys(queue).dead_index, {"dead-2": time.time() * 1000})
    base, bad = f"/v1/queues/{queue}", "/v1/queues/not%20a%20queue"
    big = {"data": b"x" * (1024 * 1024 + 1), "headers": {"Content-Type": "application/json"}}
    plain = {"data": b"x", "headers": {"Content-Type": "text/plain"}}
    routes: list[tuple[tuple[str, str], str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = [
        (("GET", "/v1/queues/{queue}/tasks"), "/tasks?state=ready", {}, [("/tasks?state=bogus", {})]),
        (("GET", "/v1/tasks/{id}/explain"), "", {}, []),
        (("GET", "/v1/queues/{queue}/dead"), "/dead?reason=non_retryable", {}, [("/dead?status=1", {})]),
        (("POST", "/v1/queues/{queue}/dead/requeue"), "/dead/requeue", {"json": {"ids": ["x"]}}, []),
        (("POST", "/v1/queues/{queue}/dead/delete"), "/dead/delete", {"json": {"ids": ["x"]}}, []),
        (("GET", "/v1/queues/{queue}/dead/{entry_id}/command"), "/dead/dead-2/command", {}, []),
        (("GET", "/v1/queues/{queue}/dead/{entry_id}/editable"), "/dead/dead-2/editable", {}, []),
        (("POST", "/v1/queues/{queue}/dead/{entry_id}/edit"), "/dead/dead-2/edit", {"json": {"task": task}}, []),
        (("POST", "/v1/queues/{queue}/pause"), "/pause", {}, []),
        (("POST", "/v1/queues/{queue}/resume"), "/resume", {}, []),
    ]
    for route, tail, body, bad_requests in routes:
        if route[1].startswith("/v1/tasks/"):
            good, broken = f"/v1/tasks/s1/explain?queue={queue}", "/v1/tasks/s1/explain?queue=not%20a%20queue"
        else:
            good, broken = base + tail, bad + tail
        for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere), (down, {})):
            await ask(route, good, server, **extra, **body)
        await ask(route, broken, **body)
        for path, extra in bad_requests:
            await ask(route, base + path, **extra)
        if route[0] == "POST":
            await ask(route, good, viewer, **body)  # 403
            if "/dead/" in route[1]:
                await ask(route, good, **big)  # 413
                await ask(route, good, **plain)  # 415
    await ask(("GET", "/v1/tasks/{id}/explain"), f"/v1/tasks/never-seen/explain?queue={queue}")
    for name in ("command", "editable", "edit"):
        method = "POST" if name == "edit" else "GET"
        body = {"json": {"task": task}} if name == "edit" else {}
        await ask((method, f"/v1/queues/{{queue}}/dead/{{entry_id}}/{name}"), f"{base}/dead/never/{name}", **body)
    edit = ("POST", "/v1/queues/{queue}/dead/{entry_id}/edit")
    await ask(edit, f"{base}/dead/dead-2/edit", json={"task": {"url": "ftp://nowhere/"}})  # 422
    await ask(edit, f"{base}/dead/dead-2/edit", data=b"{", headers={"Content-Type": "application/json"})  # 400
    for name in ("pause", "resume"):
        await ask(("POST", f"/v1/queues/{{queue}}/{name}"), f"/v1/queues/no_such_queue_zz/{name}")  # 404


async def ask_key_routes(ask: Any, queue: str, servers: tuple[Any, ...], elsewhere: Any) -> None:
    """Provoke every answer docs/api.md lists for the fair-key routes (web/keys.py)."""
    authed, open_, down, viewer = servers
    keys_list, key_one = ("GET", "/v1/queues/{queue}/keys"), ("GET", "/v1/queues/{queue}/keys/{key}")
    key_set, key_reset = ("PUT", "/v1/queues/{queue}/keys/{key}"), ("DELETE", "/v1/queues/{queue}/keys/{key}")
    for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere), (down, {})):
        await ask(keys_list, f"/v1/queues/{queue}/keys", server, **extra)
        await ask(key_one, f"/v1/queues/{queue}/keys/k1", server, **extra)
        await ask(key_set, f"/v1/queues/{queue}/keys/k1", server, json={"weight": 2}, **extra)
        await ask(key_reset, f"/v1/queues/{queue}/keys/k1", server, **extra)
    await ask(keys_list, f"/v1/queues/{queue}/keys?limit=0")
    await ask(key_one, "/v1/queues/not%20a%20queue/keys/k1")
    await ask(key_set, f"/v1/queues/{queue}/keys/k1", json={"weight": 0})
    await ask(key_reset, "/v1/queues/not%20a%20queue/keys/k1")
    await ask(key_set, f"/v1/queues/{queue}/keys/k1", viewer, json={"weight": 2})  # 403: a viewer changes nothing
    await ask(key_reset, f"/v1/queues/{queue}/keys/k1", viewer)  # 403


#: The schedule the answers test's servers are configured with: unique, so running it twice answers 409.
PAGES_SCHEDULE = {"name": "beat", "every": 3600, "task": {"url": "http://127.0.0.1:9/", "unique_key": "beat-once"}}


async def ask_page_routes(
    ask: Any, queue: str, redis: aioredis.Redis, servers: tuple[Any, ...], elsewhere: Any
) -> None:
    """Provoke every answer docs/api.md lists for the operator pages' routes (web/api_pages.py). The servers'
    settings carry PAGES_SCHEDULE."""
    authed, open_, down, viewer = servers
    await redis.zadd(QueueKeys(queue).flows, {"dest.example": time.time() * 1000})  # a flow key the queue knows
    eta = {"id": "p1", "url": "http://127.0.0.1:9/", "eta": time.time() + 3600}
    await ask(("POST", "/v1/queues/{queue}/tasks"), f"/v1/queues/{queue}/tasks", json=eta)  # a waiting task
    task = "/v1/queues/{queue}/tasks/{id}"
    routes = [
        (("GET", "/v1/destinations"), "/v1/destinations"),
        (("POST", "/v1/destinations/{key}/close"), f"/v1/destinations/dest.example/close?queue={queue}"),
        (("POST", "/v1/destinations/{key}/reset"), "/v1/destinations/dest.example/reset"),
        (("GET", "/v1/schedules"), "/v1/schedules"),
        (("POST", "/v1/schedules/{name}/run"), "/v1/schedules/beat/run"),
        (("POST", "/v1/schedules/{name}/pause"), "/v1/schedules/beat/pause"),
        (("POST", "/v1/schedules/{name}/resume"), "/v1/schedules/beat/resume"),
        (("GET", "/v1/redis"), "/v1/redis"),
        (("GET", "/v1/queues/{queue}/history"), f"/v1/queues/{queue}/history?span=24h"),
        (("POST", task + "/run"), f"/v1/queues/{queue}/tasks/p1/run"),
        (("POST", task + "/delete"), f"/v1/queues/{queue}/tasks/p1/delete"),
    ]
    for route, path in routes:
        for server, extra in ((authed, {}), (authed, {"auth": False}), (open_, elsewhere), (down, {})):
            await ask(route, path, server, **extra)
        if route[0] == "POST":
            await ask(route, path, viewer)  # 403
    for name in ("close", "reset"):
        route = ("POST", f"/v1/destinations/{{key}}/{name}")
        await ask(route, f"/v1/destinations/dest.example/{name}?queue=not%20a%20queue")  # 400
        await ask(route, f"/v1/destinations/nowhere.example/{name}?queue={queue}")  # 404
    for name in ("run", "pause", "resume"):
        await ask(("POST", f"/v1/schedules/{{name}}/{name}"), f"/v1/schedules/nope/{name}")  # 404
    await ask(("POST", "/v1/schedules/{name}/run"), "/v1/schedules/beat/run")  # 409: its unique task waits
    await ask(("GET", "/v1/queues/{queue}/history"), f"/v1/queues/{queue}/history?span=2d")  # 400
    await ask(("GET", "/v1/queues/{queue}/history"), "/v1/queues/not%20a%20queue/history")  # 400
    for name in ("run", "delete"):
        route = ("POST", f"{task}/{name}")
        await ask(route, f"/v1/queues/{queue}/tasks/p1/{name}")  # 409: deleted above, no longer waiting
        await ask(route, f"/v1/queues/not%20a%20queue/tasks/p1/{name}")  # 400
        await ask(route, f"/v1/queues/no_such_queue_zz/tasks/p1/{name}")  # 404
