"""The dashboard's state-changing actions: pause/resume a queue, requeue or delete dead letters (one, the selected
ones, all, or those matching a filter), edit and requeue a dead task, log in and out.

Every change goes through the inspection layer's Operator (checked, bounded, audited with the dashboard user as its
actor). An action on more than one dead letter first answers a confirmation page (200) with the same form and
`confirm=1`; only that second POST changes anything, so a stray click never requeues or deletes in bulk. Each is a
POST (the security middlewares have checked authentication and the CSRF token before it runs) that
answers 303 to the page it came from, named by a `next` form field that must be a local path. A plain form
works without JavaScript; the pages submit them as ordinary forms.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from gopherq.client import AsyncClient
from gopherq.core import codec
from gopherq.core.errors import NotFound, TaskRejected
from gopherq.core.inspect.operations import Operator
from gopherq.core.inspect.selection import SCAN_WINDOW, DeadFilter
from gopherq.web import pages
from gopherq.web.render import render_html
from gopherq.web.security import identity, request_actor
from gopherq.web.sessions import SESSION_COOKIE
from gopherq.web.state import (
    AUTH_KEY,
    BUS_KEY,
    INSPECTOR_KEY,
    PLUGINS_KEY,
    REDIS_KEY,
    SESSIONS_KEY,
    SETTINGS_KEY,
)


def local_path(value: object, default: str) -> str:
    """`value` when it is a path on this server (not `//host` or a URL), else `default`."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")) and value.isprintable():
        return value
    return default


def back(form: MultiDictProxy[Any], default: str, notice: str, count: int | None = None) -> web.HTTPSeeOther:
    target = local_path(form.get("next"), default)
    target += ("&" if "?" in target else "?") + f"notice={notice}" + (f"&n={count}" if count is not None else "")
    return web.HTTPSeeOther(target)


def operator(request: web.Request) -> Operator:
    """The request's changes, checked and audited (core/inspect/operations.py), by the dashboard user."""
    return request.app[INSPECTOR_KEY].operator(request_actor(request), request.app[BUS_KEY])


def _scope(form: MultiDictProxy[Any]) -> tuple[str, list[str] | None, DeadFilter]:
    """What a dead-letter action names: ("all", None), ("matching", None, filter) or ("ids", ids); neither is a 400."""
    if form.get("all") == "1":
        return "all", None, DeadFilter()
    if form.get("matching") == "1":
        where = pages.dead_filter(form)
        if where.empty:
            raise web.HTTPBadRequest(text="400: give a filter (reason, host, status, text, age) to act on matches\n")
        return "matching", None, where
    ids = [value for value in form.getall("entry_id", []) if isinstance(value, str) and value]
    if not ids:
        raise web.HTTPBadRequest(text="400: give entry_id (one or more), a filter with matching=1, or all=1\n")
    if len(ids) > SCAN_WINDOW:
        raise web.HTTPBadRequest(text=f"400: at most {SCAN_WINDOW} entry ids at once\n")
    return "ids", ids, DeadFilter()


async def _confirm(request: web.Request, queue: str, verb: str, form: MultiDictProxy[Any]) -> web.Response:
    """The confirmation page of a bulk action: what it will touch, and the same form again with confirm=1."""
    scope, ids, where = _scope(form)
    inspector = request.app[INSPECTOR_KEY]
    if scope == "all":
        count, what = await inspector.dead_letters(queue).count(), "every dead letter of the queue"
    elif scope == "matching":
        chosen = await inspector.select_dead(queue, where, pages.cursor_param(form))
        more = " (the first window: run it again for the next)" if chosen.next_cursor is not None else ""
        count, what = len(chosen.ids), f"the dead letters matching {where.to_dict()}{more}"
    else:
        count, what = len(ids or []), "the selected dead letters"
    fields = [(key, value) for key, value in form.items() if key not in ("csrf_token", "confirm")]
    context = {
        "queue": queue,
        "verb": verb,
        "count": count,
        "what": what,
        "fields": fields,
        "action_url": request.path,
        "back": local_path(form.get("next"), f"/queues/{queue}?tab=dead"),
    }
    return render_html(request, "confirm.html", context)


async def pause(request: web.Request) -> web.StreamResponse:
    return await _pause(request, True)


async def resume(request: web.Request) -> web.StreamResponse:
    return await _pause(request, False)


async def _pause(request: web.Request, paused: bool) -> web.StreamResponse:
    queue = pages.queue_param(request)
    form = await request.post()
    try:
        await (operator(request).pause(queue) if paused else operator(request).resume(queue))
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"404: {exc}\n") from None
    raise back(form, f"/queues/{queue}", "paused" if paused else "resumed")


async def requeue(request: web.Request) -> web.StreamResponse:
    return await _dead_action(request, "requeue")


async def delete(request: web.Request) -> web.StreamResponse:
    return await _dead_action(request, "delete")


async def _dead_action(request: web.Request, action: str) -> web.StreamResponse:
    """One dead letter at once; several, all, or those matching a filter only after the confirmation page."""
    queue = pages.queue_param(request)
    form = await request.post()
    scope, ids, where = _scope(form)
    if (scope != "ids" or len(ids or []) > 1) and form.get("confirm") != "1":
        return await _confirm(request, queue, action, form)
    ops = operator(request)
    verb = "requeued" if action == "requeue" else "deleted"
    if scope == "matching":
        outcome = await ops.bulk(queue, action, where, pages.cursor_param(form))
        raise back(form, f"/queues/{queue}?tab=dead", verb if outcome.next_cursor is None else "more", outcome.done)
    count = await (ops.requeue(queue, ids) if action == "requeue" else ops.delete(queue, ids))
    raise back(form, f"/queues/{queue}?tab=dead", verb, count)


async def edit(request: web.Request) -> web.StreamResponse:
    """Enqueue the edited task (a JSON textarea) as a new task; the dead letter is kept."""
    queue = pages.queue_param(request)
    entry_id = request.match_info["entry_id"]
    form = await request.post()
    try:
        edited = codec.loads(str(form.get("task", "")))
    except codec.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"400: the edited task is not JSON: {exc}\n") from None
    client = AsyncClient(request.app[SETTINGS_KEY], plugins=request.app[PLUGINS_KEY], redis=request.app[REDIS_KEY])

    async def submit(envelope: dict[str, Any]) -> str:
        return await client.enqueue_raw(codec.dumps(envelope), queue)

    try:
        new_id = await operator(request).edit_requeue(queue, entry_id, edited, submit)
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"404: {exc}\n") from None
    except TaskRejected as exc:
        raise web.HTTPUnprocessableEntity(text=f"422: {exc.reason}: {exc.message}\n") from None
    raise web.HTTPSeeOther(f"/queues/{queue}/tasks/{quote(new_id, safe='')}?notice=edited")


async def login_page(request: web.Request) -> web.Response:
    if not request.app[AUTH_KEY].logins:  # nothing to log in with: basic auth or none
        raise web.HTTPSeeOther("/")
    return render_html(request, "login.html", {"next": local_path(request.query.get("next"), "/"), "failed": False})


async def login(request: web.Request) -> web.StreamResponse:
    """Check the token from the form; on success start a session (in Redis) and set its cookie (HttpOnly,
    SameSite=Strict). A new session id every time, so a cookie planted before the login is worth nothing."""
    auth = request.app[AUTH_KEY]
    sessions = request.app[SESSIONS_KEY]
    form = await request.post()
    target = local_path(form.get("next"), "/")
    token = form.get("token")
    if not isinstance(token, str) or not auth.check_token(token):
        return render_html(request, "login.html", {"next": target, "failed": True}, status=401)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await sessions.end(previous)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE, await sessions.start(token), httponly=True, samesite="Strict", path="/", secure=request.secure
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session in Redis (every web process forgets it at once), then drop the cookie."""
    session = identity(request).session
    if session is not None:
        await request.app[SESSIONS_KEY].end(session)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def setup(app: web.Application) -> None:
    add = app.router.add_post
    add("/queues/{queue}/pause", pause, name="pause")
    add("/queues/{queue}/resume", resume, name="resume")
    add("/queues/{queue}/dead/requeue", requeue, name="requeue")
    add("/queues/{queue}/dead/delete", delete, name="delete")
    add("/queues/{queue}/dead/{entry_id}/edit", edit, name="edit")
    app.router.add_get("/login", login_page, name="login")
    add("/login", login, name="login_post")
    add("/logout", logout, name="logout")
