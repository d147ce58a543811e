"""The dashboard's state-changing actions: pause/resume a queue, requeue or delete dead letters, log in and out.

Each is a POST (the security middlewares have checked authentication and the CSRF token before it runs) that
answers 303 to the page it came from, named by a `next` form field that must be a local path. A plain form
works without JavaScript; the pages submit them as ordinary forms.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gopherq.web import pages
from gopherq.web.render import render_html
from gopherq.web.security import identity
from gopherq.web.sessions import SESSION_COOKIE
from gopherq.web.state import AUTH_KEY, INSPECTOR_KEY, SESSIONS_KEY


def local_path(value: object, default: str) -> str:
    """`value` when it is a path on this server (not `//host` or a URL), else `default`."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")) and value.isprintable():
        return value
    return default


def back(form: MultiDictProxy[Any], default: str, notice: str, count: int | None = None) -> web.HTTPSeeOther:
    target = local_path(form.get("next"), default)
    target += ("&" if "?" in target else "?") + f"notice={notice}" + (f"&n={count}" if count is not None else "")
    return web.HTTPSeeOther(target)


def _entry_ids(form: MultiDictProxy[Any]) -> list[str] | None:
    """The entry ids a dead-letter action names: None for all (`all=1`); a missing id is a 400."""
    if form.get("all") == "1":
        return None
    ids = [value for value in form.getall("entry_id", []) if isinstance(value, str) and value]
    if not ids:
        raise web.HTTPBadRequest(text="400: give entry_id (one or more) or all=1\n")
    return ids


async def pause(request: web.Request) -> web.StreamResponse:
    queue = pages.queue_param(request)
    form = await request.post()
    await request.app[INSPECTOR_KEY].pause(queue)
    raise back(form, f"/queues/{queue}", "paused")


async def resume(request: web.Request) -> web.StreamResponse:
    queue = pages.queue_param(request)
    form = await request.post()
    await request.app[INSPECTOR_KEY].resume(queue)
    raise back(form, f"/queues/{queue}", "resumed")


async def requeue(request: web.Request) -> web.StreamResponse:
    queue = pages.queue_param(request)
    form = await request.post()
    moved = await pages.dead_letters(request, queue).requeue(_entry_ids(form))
    raise back(form, f"/queues/{queue}?tab=dead", "requeued", moved)


async def delete(request: web.Request) -> web.StreamResponse:
    queue = pages.queue_param(request)
    form = await request.post()
    ids = _entry_ids(form)
    letters = pages.dead_letters(request, queue)
    count = await (letters.purge() if ids is None else letters.delete(ids))
    raise back(form, f"/queues/{queue}?tab=dead", "deleted", count)


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
    app.router.add_get("/login", login_page, name="login")
    add("/login", login, name="login_post")
    add("/logout", logout, name="logout")
