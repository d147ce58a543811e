"""The `/v1` API of the operator pages: the same inspection-layer calls the dashboard's destinations, schedules and
Redis pages and its task actions make, as JSON.

    GET  /v1/destinations                          every flow key: last hour's outcomes, p95, state per queue
    POST /v1/destinations/{key}/close?queue=Q      close its circuit now (every queue that knows it without Q)
    POST /v1/destinations/{key}/reset?queue=Q      back to its full configured rate
    GET  /v1/schedules                             rule, time zone, next and last run, last outcome, paused
    POST /v1/schedules/{name}/run                  enqueue its task once, now
    POST /v1/schedules/{name}/pause | /resume      its slots pass without a task while paused
    GET  /v1/redis                                 the server: version, role, memory, clients, persistence
    GET  /v1/queues/{queue}/history?span=1h|24h|7d outcomes and timings per minute (1h) or hour
    POST /v1/queues/{queue}/tasks/{id}/run          a waiting task to the head of its ready list
    POST /v1/queues/{queue}/tasks/{id}/delete       a waiting task removed, recorded as cancelled

Cancelling is `DELETE /v1/tasks/{id}` (web/api.py). Every route is in the OpenAPI document (added here). Every
action goes through the inspection layer's Operator, so it is checked as the CLI's and the dashboard's are and
recorded as an `operator.action` event naming the request's actor; a viewer token gets 403 (web/security.authorize).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gopherq.core.errors import NotFound
from gopherq.core.inspect.queues import SPANS
from gopherq.web.api import _queue, answer, problem
from gopherq.web.api_ops import operator
from gopherq.web.openapi import OPENAPI, _answer, _errors
from gopherq.web.state import INSPECTOR_KEY


async def list_destinations(request: web.Request) -> web.Response:
    return answer({"destinations": await request.app[INSPECTOR_KEY].destinations()})


async def _flow_action(request: web.Request, name: str) -> web.Response:
    key = request.match_info["key"]
    queue = _queue(request) if request.query.get("queue") else None
    acting = operator(request)
    queues = await (acting.close_circuit if name == "close" else acting.reset_rate)(key, queue)
    if not queues:
        return problem(404, "not_found", f"no destination {key!r} on {queue or 'any queue'}")
    return answer({"key": key, "queues": queues})


async def close_circuit(request: web.Request) -> web.Response:
    return await _flow_action(request, "close")


async def reset_rate(request: web.Request) -> web.Response:
    return await _flow_action(request, "reset")


async def list_schedules(request: web.Request) -> web.Response:
    return answer({"schedules": await request.app[INSPECTOR_KEY].schedules()})


async def _schedule_action(request: web.Request, action: str) -> web.Response:
    name = request.match_info["name"]
    acting = operator(request)
    try:
        if action == "run":
            task_id = await acting.run_schedule(name)
            if task_id is None:
                return problem(409, "unique_held", f"schedule {name!r}: its unique task is still queued or running")
            return answer({"name": name, "id": task_id}, status=201)
        await acting.pause_schedule(name, action == "pause")
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    return answer({"name": name, "paused": action == "pause"})


async def run_schedule(request: web.Request) -> web.Response:
    return await _schedule_action(request, "run")


async def pause_schedule(request: web.Request) -> web.Response:
    return await _schedule_action(request, "pause")


async def resume_schedule(request: web.Request) -> web.Response:
    return await _schedule_action(request, "resume")


async def get_redis(request: web.Request) -> web.Response:
    return answer(await request.app[INSPECTOR_KEY].server())


async def get_history(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    span = request.query.get("span", "1h")
    if span not in SPANS:
        return problem(400, "invalid_parameter", f"span must be one of {', '.join(SPANS)}, got {span!r}")
    buckets = await request.app[INSPECTOR_KEY].history(queue, span)
    return answer({"queue": queue, "span": span, "buckets": [bucket.to_dict() for bucket in buckets]})


async def _task_action(request: web.Request, action: str) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    task_id = request.match_info["task_id"]
    acting = operator(request)
    try:
        outcome = await (acting.run_now if action == "run" else acting.delete_task)(queue, task_id)
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    if outcome != "done":
        return problem(409, "not_waiting", f"task {task_id!r} is not waiting in queue {queue!r} (it runs, or ended)")
    return answer({"id": task_id, "outcome": "run_now" if action == "run" else "deleted"})


async def run_task(request: web.Request) -> web.Response:
    return await _task_action(request, "run")


async def delete_task(request: web.Request) -> web.Response:
    return await _task_action(request, "delete")


def _op(
    operation: str, summary: str, ok: str, *codes: int, params: list[Any] | None = None, status: str = "200"
) -> dict[str, Any]:
    """An operation answering `status` with a JSON object, or one of the error `codes` (an action, a POST, also
    answers 403 to a viewer: pass it in `codes`)."""
    return {
        "operationId": operation,
        "summary": summary,
        **({"parameters": params} if params else {}),
        "responses": {status: _answer(ok, {"type": "object"}), **_errors(*codes)},
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


_QUEUE_Q = {"name": "queue", "in": "query", "required": False, "schema": {"type": "string"}}
_KEY = _path("key", "a flow key (for http tasks, the host or the task's flow_key)")
_NAME = _path("name", "a schedule's name")
_QUEUE_P = _path("queue", "a queue name")
_TASK = [_QUEUE_P, _path("task_id", "a task id")]

#: The routes of this module, as OpenAPI path items.
PATHS: dict[str, Any] = {
    "/v1/destinations": {"get": _op("listDestinations", "Every flow key: last hour's outcomes and state", "ok")},
    "/v1/destinations/{key}/close": {
        "post": _op("closeCircuit", "Close a flow key's circuit now", "closed", 400, 403, 404, params=[_KEY, _QUEUE_Q])
    },
    "/v1/destinations/{key}/reset": {
        "post": _op("resetRate", "A flow key back to its full rate", "reset", 400, 403, 404, params=[_KEY, _QUEUE_Q])
    },
    "/v1/schedules": {"get": _op("listSchedules", "Every schedule: rule, next and last run, outcome", "ok")},
    "/v1/schedules/{name}/run": {
        "post": _op(
            "runSchedule",
            "Enqueue a schedule's task once, now",
            "created",
            403,
            404,
            409,
            params=[_NAME],
            status="201",
        )
    },
    "/v1/schedules/{name}/pause": {
        "post": _op("pauseSchedule", "Pause a schedule", "paused", 403, 404, params=[_NAME])
    },
    "/v1/schedules/{name}/resume": {
        "post": _op("resumeSchedule", "Resume a schedule", "resumed", 403, 404, params=[_NAME])
    },
    "/v1/redis": {"get": _op("getRedis", "The Redis server: version, role, memory, clients, persistence", "ok")},
    "/v1/queues/{queue}/history": {
        "get": _op("getHistory", "Outcomes and timings per minute (1h) or hour (24h, 7d)", "ok", 400, params=[_QUEUE_P])
    },
    "/v1/queues/{queue}/tasks/{task_id}/run": {
        "post": _op(
            "runTaskNow", "A waiting task to the head of its ready list", "moved", 400, 403, 404, 409, params=_TASK
        )
    },
    "/v1/queues/{queue}/tasks/{task_id}/delete": {
        "post": _op(
            "deleteTask", "Remove a waiting task (recorded as cancelled)", "deleted", 400, 403, 404, 409, params=_TASK
        )
    },
}
OPENAPI["paths"].update(PATHS)


def setup(app: web.Application) -> None:
    get, post = app.router.add_get, app.router.add_post
    get("/v1/destinations", list_destinations, name="api_destinations")
    post("/v1/destinations/{key}/close", close_circuit, name="api_close_circuit")
    post("/v1/destinations/{key}/reset", reset_rate, name="api_reset_rate")
    get("/v1/schedules", list_schedules, name="api_schedules")
    post("/v1/schedules/{name}/run", run_schedule, name="api_run_schedule")
    post("/v1/schedules/{name}/pause", pause_schedule, name="api_pause_schedule")
    post("/v1/schedules/{name}/resume", resume_schedule, name="api_resume_schedule")
    get("/v1/redis", get_redis, name="api_redis")
    get("/v1/queues/{queue}/history", get_history, name="api_history")
    post("/v1/queues/{queue}/tasks/{task_id}/run", run_task, name="api_run_task")
    post("/v1/queues/{queue}/tasks/{task_id}/delete", delete_task, name="api_delete_task")
