"""Fair keys on the web: the dashboard's Keys page (`/queues/{queue}/keys`, live) and the `/v1` routes that read
and change them.

    GET    /v1/queues/{queue}/keys          the queue's fair keys, most backlogged first (`?limit=`, at most 10,000)
    GET    /v1/queues/{queue}/keys/{key}    one key: backlog, running, weight, limits, why parked, oldest wait
    PUT    /v1/queues/{queue}/keys/{key}    change its weight and limits from now on: a JSON object of `weight`,
                                            `concurrency`, `rate` ("5/s" or a number per second), `burst`,
                                            `ordered`, `paused` (what is left out stays as it is)
    DELETE /v1/queues/{queue}/keys/{key}    forget its run-time settings: the `[fair]` rules apply again

Handlers only parse, call the inspection layer (`Inspector.fair_keys`, `Inspector.fair_control`) and answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gopherq.core import codec
from gopherq.core.errors import ConfigError
from gopherq.core.fairspec import parse_rate
from gopherq.web.api import _queue, answer, problem
from gopherq.web.pages import queue_param
from gopherq.web.render import render_html
from gopherq.web.state import INSPECTOR_KEY

#: Keys shown on the dashboard's page (the most backlogged).
PAGE_KEYS = 200

#: What a PUT body may set, and the type each must have.
FIELDS = {"weight": (int, float), "concurrency": (int,), "burst": (int,), "ordered": (bool,), "paused": (bool,)}


def changes_from(body: Any) -> dict[str, Any]:
    """The changes a PUT body asks for; raises ValueError naming the field."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object of weight, concurrency, rate, burst, ordered, paused")
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name == "rate":
            changes["rate"] = (parse_rate(value) if value is not None else None) or 0.0
            continue
        kinds = FIELDS.get(name)
        if kinds is None:
            raise ValueError(f"unknown field {name!r}: weight, concurrency, rate, burst, ordered, paused")
        if type(value) not in kinds or (type(value) is not bool and value < (1 if name == "burst" else 0)):
            raise ValueError(f"field {name!r} has a bad value: {value!r}")
        if name == "weight" and value <= 0:
            raise ValueError(f"field 'weight' must be > 0, got {value!r}")
        changes[name] = value
    return changes


async def list_keys(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    limit = request.query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 10_000:
        return problem(400, "invalid_parameter", f"limit must be a whole number from 1 to 10000, got {limit!r}")
    infos = await request.app[INSPECTOR_KEY].fair_keys(queue, int(limit))
    return answer({"keys": [info.to_dict() for info in infos]})


async def get_key(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    [info] = await request.app[INSPECTOR_KEY].fair_keys(queue, 1, only=request.match_info["key"])
    return answer(info.to_dict())


async def put_key(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    key = request.match_info["key"]
    try:
        changes = changes_from(codec.loads(await request.read()))
        limits = await request.app[INSPECTOR_KEY].fair_control(queue).set(key, **changes)
    except (ValueError, ConfigError) as exc:  # codec.JSONDecodeError is a ValueError
        return problem(400, "invalid_key_settings", str(exc))
    return answer({"key": key, **limits.to_dict()})


async def delete_key(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    key = request.match_info["key"]
    try:
        limits = await request.app[INSPECTOR_KEY].fair_control(queue).reset(key)
    except ConfigError as exc:
        return problem(400, "invalid_key_settings", str(exc))
    return answer({"key": key, **limits.to_dict()})


async def keys_context(request: web.Request) -> dict[str, Any]:
    queue = queue_param(request)
    return {"queue": queue, "keys": await request.app[INSPECTOR_KEY].fair_keys(queue, PAGE_KEYS)}


async def keys_page(request: web.Request) -> web.Response:
    return render_html(request, "keys.html", await keys_context(request))


async def keys_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/keys.html", await keys_context(request))


def setup_api(app: web.Application) -> None:
    """Add the `/v1` fair-key routes (an area of the web application, see app.py)."""
    app.router.add_get("/v1/queues/{queue}/keys", list_keys, name="api_keys")
    app.router.add_get("/v1/queues/{queue}/keys/{key}", get_key, name="api_key")
    app.router.add_put("/v1/queues/{queue}/keys/{key}", put_key, name="api_key_set")
    app.router.add_delete("/v1/queues/{queue}/keys/{key}", delete_key, name="api_key_reset")


def setup_pages(app: web.Application) -> None:
    """Add the dashboard's Keys page and its live fragment."""
    app.router.add_get("/queues/{queue}/keys", keys_page, name="keys")
    app.router.add_get("/fragments/queues/{queue}/keys", keys_fragment, name="keys_fragment")
