"""The dashboard's operator pages and their actions: destinations (flow keys), schedules, the Redis server, and
acting on one task (run now, delete, cancel).

Pages read through the inspection layer and render; actions are POSTs (authentication and the CSRF token checked by
the security middlewares, a viewer refused) that answer 303 to the page they came from with a notice, like
web/actions.py, and go through the inspection layer's Operator: checked as the API's and the CLI's are, and
recorded as `operator.action` events naming the dashboard user. Every action that changes or drops a task sits
behind a confirmation (a `<details>` disclosure in the page: no script).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from gopherq.core.errors import ConfigError, NotFound
from gopherq.core.keys import validate_queue_name
from gopherq.web import pages
from gopherq.web.actions import back, operator
from gopherq.web.render import render_html
from gopherq.web.state import INSPECTOR_KEY

#: What a notice of this module's actions says (merged into pages.NOTICES).
NOTICES = {
    "circuit_closed": "Circuit closed: tasks of this destination run again.",
    "rate_reset": "Rate reset to the configured limit.",
    "unknown_key": "No such destination on that queue.",
    "schedule_run": "Schedule's task enqueued now.",
    "schedule_held": "Not enqueued: the schedule's unique task is still queued or running.",
    "schedule_paused": "Schedule paused: its slots pass without a task until it is resumed.",
    "schedule_resumed": "Schedule resumed.",
    "task_run": "Task moved to the head of its ready list.",
    "task_deleted": "Task deleted (recorded as cancelled).",
    "task_cancel_requested": "Cancel requested: a worker running or claiming it stops it.",
    "task_cancelled": "Task cancelled.",
    "task_finished": "Nothing to cancel: the task has already finished.",
    "not_waiting": "Nothing done: the task is no longer waiting (it runs, or has ended).",
}
pages.NOTICES.update(NOTICES)

T = TypeVar("T")


# -- destinations ---------------------------------------------------------------------------------------------


async def destinations_context(request: web.Request) -> dict[str, Any]:
    return {"rows": await request.app[INSPECTOR_KEY].destinations()}


async def destinations_page(request: web.Request) -> web.Response:
    context = {**await destinations_context(request), "notice": pages.notice(request)}
    return render_html(request, "destinations.html", context)


async def destinations_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/destinations.html", await destinations_context(request))


async def _flow_form(request: web.Request) -> tuple[Any, str, str]:
    form = await request.post()
    key, queue = form.get("key"), form.get("queue")
    if not isinstance(key, str) or not key or not isinstance(queue, str):
        raise web.HTTPBadRequest(text="400: give key and queue\n")
    try:
        validate_queue_name(queue)
    except ConfigError:
        raise web.HTTPBadRequest(text="400: invalid queue name\n") from None
    return form, key, queue


async def close_circuit(request: web.Request) -> web.StreamResponse:
    form, key, queue = await _flow_form(request)
    done = await operator(request).close_circuit(key, queue)
    raise back(form, "/destinations", "circuit_closed" if done else "unknown_key")


async def reset_rate(request: web.Request) -> web.StreamResponse:
    form, key, queue = await _flow_form(request)
    done = await operator(request).reset_rate(key, queue)
    raise back(form, "/destinations", "rate_reset" if done else "unknown_key")


# -- schedules ------------------------------------------------------------------------------------------------


async def schedules_context(request: web.Request) -> dict[str, Any]:
    return {"schedules": await request.app[INSPECTOR_KEY].schedules()}


async def schedules_page(request: web.Request) -> web.Response:
    context = {**await schedules_context(request), "notice": pages.notice(request)}
    return render_html(request, "schedules.html", context)


async def schedules_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/schedules.html", await schedules_context(request))


def _schedule_name(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        request.app[INSPECTOR_KEY].schedule(name)
    except ConfigError:
        raise web.HTTPNotFound(text="404: no such schedule\n") from None
    return name


async def run_schedule(request: web.Request) -> web.StreamResponse:
    name = _schedule_name(request)
    form = await request.post()
    task_id = await operator(request).run_schedule(name)
    raise back(form, "/schedules", "schedule_run" if task_id else "schedule_held")


async def pause_schedule(request: web.Request) -> web.StreamResponse:
    name = _schedule_name(request)
    form = await request.post()
    await operator(request).pause_schedule(name, True)
    raise back(form, "/schedules", "schedule_paused")


async def resume_schedule(request: web.Request) -> web.StreamResponse:
    name = _schedule_name(request)
    form = await request.post()
    await operator(request).pause_schedule(name, False)
    raise back(form, "/schedules", "schedule_resumed")


# -- the Redis server -----------------------------------------------------------------------------------------


async def redis_page(request: web.Request) -> web.Response:
    return render_html(request, "redis.html", {"facts": await request.app[INSPECTOR_KEY].server()})


# -- one task -------------------------------------------------------------------------------------------------


async def _acted(action: Awaitable[T]) -> T:
    """The outcome of an Operator's action on one task; 404 (nothing changed) for an unknown queue or task."""
    try:
        return await action
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"404: {exc}\n") from None


async def run_task(request: web.Request) -> web.StreamResponse:
    queue, task_id = pages.queue_param(request), request.match_info["task_id"]
    form = await request.post()
    outcome = await _acted(operator(request).run_now(queue, task_id))
    raise back(form, f"/queues/{queue}", "task_run" if outcome == "done" else "not_waiting")


async def delete_task(request: web.Request) -> web.StreamResponse:
    queue, task_id = pages.queue_param(request), request.match_info["task_id"]
    form = await request.post()
    outcome = await _acted(operator(request).delete_task(queue, task_id))
    raise back(form, f"/queues/{queue}", "task_deleted" if outcome == "done" else "not_waiting")


async def cancel_task(request: web.Request) -> web.StreamResponse:
    queue, task_id = pages.queue_param(request), request.match_info["task_id"]
    form = await request.post()
    outcome = await _acted(operator(request).cancel(queue, task_id))
    notice = {"requested": "task_cancel_requested", "cancelled": "task_cancelled"}.get(outcome, "task_finished")
    raise back(form, f"/queues/{queue}", notice)


def setup(app: web.Application) -> None:
    get, post = app.router.add_get, app.router.add_post
    get("/destinations", destinations_page, name="destinations")
    get("/fragments/destinations", destinations_fragment, name="destinations_fragment")
    post("/destinations/close", close_circuit, name="close_circuit")
    post("/destinations/reset", reset_rate, name="reset_rate")
    get("/schedules", schedules_page, name="schedules")
    get("/fragments/schedules", schedules_fragment, name="schedules_fragment")
    post("/schedules/{name}/run", run_schedule, name="run_schedule")
    post("/schedules/{name}/pause", pause_schedule, name="pause_schedule")
    post("/schedules/{name}/resume", resume_schedule, name="resume_schedule")
    get("/redis", redis_page, name="redis")
    post("/queues/{queue}/tasks/{task_id}/run", run_task, name="run_task")
    post("/queues/{queue}/tasks/{task_id}/delete", delete_task, name="delete_task")
    post("/queues/{queue}/tasks/{task_id}/cancel", cancel_task, name="cancel_task")
