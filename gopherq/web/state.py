"""The application's shared state: every key the app is built with (app.py, api.py) and its areas read, in one place.

Only this module defines `web.AppKey`s; the types they hold come from modules that do not import this one, so the
web package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import jinja2
from aiohttp import web

from gopherq.client import AsyncClient
from gopherq.core.events import EventBus
from gopherq.core.inspect import Inspector
from gopherq.core.plugins import PluginManager
from gopherq.core.redis_client import RedisClient
from gopherq.core.settings import Settings
from gopherq.web.coalescer import Coalescer
from gopherq.web.credentials import Auth
from gopherq.web.sessions import Sessions

#: The effective settings the server was started with.
SETTINGS_KEY = web.AppKey("gopherq_settings", Settings)
#: The open Redis client every area shares (the caller of `create_app` owns and closes it).
REDIS_KEY: web.AppKey[RedisClient] = web.AppKey("gopherq_redis")
#: The one inspection layer the pages, the metrics and the API read queues, tasks and workers through.
INSPECTOR_KEY: web.AppKey[Inspector] = web.AppKey("gopherq_inspector")
#: Where the events of actions taken here go (a requeue emits `task.requeued`); None when nobody listens.
BUS_KEY: web.AppKey[EventBus | None] = web.AppKey("gopherq_bus")
#: The process's loaded plugins (executors validate what the API enqueues; the plugins page lists them).
PLUGINS_KEY: web.AppKey[PluginManager] = web.AppKey("gopherq_plugins")
#: The configured credentials the `authenticate` middleware checks (web/credentials.py).
AUTH_KEY = web.AppKey("gopherq_auth", Auth)
#: Dashboard logins and the CSRF secret, in Redis (web/sessions.py).
SESSIONS_KEY = web.AppKey("gopherq_sessions", Sessions)
#: The jinja2 environment every page renders with (web/render.py).
ENV_KEY = web.AppKey("gopherq_jinja", jinja2.Environment)
#: Seconds between live updates of a page (`web.poll_interval`), handed to the templates.
POLL_KEY = web.AppKey("gopherq_poll_interval", float)
#: Renders the login page (401) for a request: set by the app from web/render.py, so that web/security.py, which
#: answers the unauthenticated request, does not import the renderer that imports it.
LOGIN_PAGE_KEY: web.AppKey[Callable[[web.Request], web.Response]] = web.AppKey("gopherq_login_page")
#: The client the `/v1` API creates, looks up and cancels tasks with (web/api.py).
CLIENT_KEY: web.AppKey[AsyncClient] = web.AppKey("gopherq_api_client")
#: Joins the creations of concurrent `/v1` requests into one Redis call (web/coalescer.py).
COALESCER_KEY: web.AppKey[Coalescer] = web.AppKey("gopherq_api_coalescer")
