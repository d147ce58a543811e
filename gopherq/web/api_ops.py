"""The operator part of the `/v1` API: task lists and "why is it waiting", dead letters by filter, and the actions.

    GET  /v1/queues/{queue}/tasks?state=S        a page of ready, delayed, retrying, scheduled, held or running tasks
                                                 (ready: fair keys' tasks too; `cursor` goes on from next_cursor)
    GET  /v1/tasks/{id}/explain?queue=Q          the one thing the task waits for (code, sentence, facts)
    GET  /v1/queues/{queue}/dead?reason=&host=&status=&text=&older_than=&newer_than=&cursor=
                                                 dead letters, newest first; filtered: one bounded window
    POST /v1/queues/{queue}/dead/requeue         {"ids": [...]} | {"filter": {...}, "cursor": c}
    POST /v1/queues/{queue}/dead/delete          the same
    GET  /v1/queues/{queue}/dead/{entry_id}/command   the dead task as a command line (http: curl), masked
    GET  /v1/queues/{queue}/dead/{entry_id}/editable  the dead task to edit (masked, without GoPherQ's fields)
    POST /v1/queues/{queue}/dead/{entry_id}/edit      {"task": {...}}: enqueue the edit as a new task (201)
    POST /v1/queues/{queue}/pause | /resume

Every action goes through the inspection layer's Operator (core/inspect/operations.py): an unknown queue, task or
dead letter is a 404 that changes nothing, a filtered action handles one window, and each change is an audit event
naming the request's actor. A viewer token gets 403 for every POST, PUT and DELETE (web/security.authorize).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gopherq.core import codec
from gopherq.core.errors import ConfigError, NotFound, TaskRejected
from gopherq.core.inspect import WAITING_KINDS
from gopherq.core.inspect.editing import editable, render_command
from gopherq.core.inspect.operations import Operator
from gopherq.core.inspect.selection import SCAN_WINDOW, DeadFilter
from gopherq.web.api import _queue, answer, problem
from gopherq.web.security import request_actor
from gopherq.web.state import BUS_KEY, CLIENT_KEY, INSPECTOR_KEY, PLUGINS_KEY

#: The `state` values of GET /v1/queues/{queue}/tasks.
LIST_STATES = ("ready", "delayed", *WAITING_KINDS, "running")

#: Most ids one action request may name.
MAX_IDS = SCAN_WINDOW


def operator(request: web.Request) -> Operator:
    return request.app[INSPECTOR_KEY].operator(request_actor(request), request.app[BUS_KEY])


def _paging(request: web.Request) -> tuple[int, int]:
    offset, limit = request.query.get("offset", "0"), request.query.get("limit", "50")
    if not offset.isdigit() or not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise web.HTTPBadRequest(
            text=codec.dumps(
                {"error": {"reason": "invalid_parameter", "message": "offset >= 0 and limit 1-1000 (whole numbers)"}}
            ).decode(),
            content_type="application/json",
        )
    return int(offset), int(limit)


async def list_tasks(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    state = request.query.get("state", "ready")
    if state not in LIST_STATES:
        return problem(400, "invalid_parameter", f"state must be one of {', '.join(LIST_STATES)}")
    offset, limit = _paging(request)
    inspector = request.app[INSPECTOR_KEY]
    cursor = request.query.get("cursor") or None
    if cursor is not None and state != "ready":
        return problem(400, "invalid_parameter", "cursor goes with state=ready (a ready page's next_cursor)")
    if state == "ready":
        try:
            page = await inspector.ready(queue, offset, limit, cursor)
        except ValueError as exc:
            return problem(400, "invalid_parameter", str(exc))
    elif state in WAITING_KINDS:
        page = await inspector.delayed(queue, offset, limit, kind=state)
    else:
        page = await getattr(inspector, state)(queue, offset, limit)
    return answer(page.to_dict())


async def explain_task(request: web.Request) -> web.Response:
    queue = _queue(request)
    task_id = request.match_info["task_id"]
    why = await request.app[INSPECTOR_KEY].explain(queue, task_id)
    if why is None:
        return problem(404, "not_found", f"no task {task_id!r} in queue {queue!r} (unknown, or its result expired)")
    return answer(why.to_dict())


def _filter(values: Any) -> DeadFilter:
    if not isinstance(values, dict):
        raise ConfigError("filter: expected an object of reason, host, status, text, older_than, newer_than")
    return DeadFilter.from_mapping(values)


def _cursor(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"cursor: expected the next_cursor of an earlier answer, got {value!r}") from None


async def list_dead(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    offset, limit = _paging(request)
    try:
        where = _filter(dict(request.query))
        cursor = _cursor(request.query.get("cursor"))
    except ConfigError as exc:
        return problem(400, "invalid_parameter", str(exc))
    page = await request.app[INSPECTOR_KEY].dead(queue, offset, limit, where, cursor)
    return answer(page.to_dict())


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_type != "application/json":
        return problem(415, "unsupported_media_type", "send JSON (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > 1024 * 1024:
        return problem(413, "too_large", "request body is over 1 MiB")
    try:
        body = codec.loads(await request.read())
    except codec.JSONDecodeError:
        return problem(400, "parse_error", "the body is not JSON")
    if not isinstance(body, dict):
        return problem(400, "schema_invalid", "the body must be a JSON object")
    return body


async def dead_action(request: web.Request) -> web.Response:
    """Requeue or delete dead letters: by ids, or by filter (one window from `cursor`)."""
    queue = _queue(request, request.match_info["queue"])
    action = "requeue" if request.path.endswith("/requeue") else "delete"
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    ops = operator(request)
    ids = body.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_IDS:
            return problem(400, "schema_invalid", f"ids must be a list of 1 to {MAX_IDS} entry ids")
        done = await (ops.requeue(queue, ids) if action == "requeue" else ops.delete(queue, ids))
        return answer({"action": action, "matched": len(ids), "done": done, "not_found": len(ids) - done})
    try:
        where = _filter(body.get("filter"))
        cursor = _cursor(body.get("cursor"))
    except ConfigError as exc:
        return problem(400, "invalid_parameter", str(exc))
    if where.empty:
        return problem(400, "schema_invalid", 'give "ids" or a non-empty "filter"')
    outcome = await ops.bulk(queue, action, where, cursor)
    return answer(outcome.to_dict())


async def dead_command(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    inspector, plugins = request.app[INSPECTOR_KEY], request.app[PLUGINS_KEY]
    try:
        command = await render_command(inspector, plugins, queue, request.match_info["entry_id"])
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    if command is None:
        return problem(404, "not_found", "this task's type renders no command")
    return answer({"command": command})


async def dead_editable(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    try:
        task = await editable(request.app[INSPECTOR_KEY], queue, request.match_info["entry_id"])
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    return answer({"task": task})


async def dead_edit(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    client = request.app[CLIENT_KEY]

    async def submit(envelope: dict[str, Any]) -> str:
        return await client.enqueue_raw(codec.dumps(envelope), queue)

    try:
        new_id = await operator(request).edit_requeue(queue, request.match_info["entry_id"], body.get("task"), submit)
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    except TaskRejected as exc:
        return problem(422, exc.reason, exc.message)
    return answer({"id": new_id, "edited_from": request.match_info["entry_id"]}, status=201)


async def pause_or_resume(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    paused = request.path.endswith("/pause")
    ops = operator(request)
    try:
        await (ops.pause(queue) if paused else ops.resume(queue))
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    return answer({"queue": queue, "paused": paused})


def setup(app: web.Application) -> None:
    """Add the operator routes of `/v1` (an area of the web application, see app.py)."""
    get, post = app.router.add_get, app.router.add_post
    get("/v1/queues/{queue}/tasks", list_tasks, name="api_tasks")
    get("/v1/tasks/{task_id}/explain", explain_task, name="api_explain")
    get("/v1/queues/{queue}/dead", list_dead, name="api_dead")
    post("/v1/queues/{queue}/dead/requeue", dead_action, name="api_dead_requeue")
    post("/v1/queues/{queue}/dead/delete", dead_action, name="api_dead_delete")
    get("/v1/queues/{queue}/dead/{entry_id}/command", dead_command, name="api_dead_command")
    get("/v1/queues/{queue}/dead/{entry_id}/editable", dead_editable, name="api_dead_editable")
    post("/v1/queues/{queue}/dead/{entry_id}/edit", dead_edit, name="api_dead_edit")
    post("/v1/queues/{queue}/pause", pause_or_resume, name="api_pause")
    post("/v1/queues/{queue}/resume", pause_or_resume, name="api_resume")
