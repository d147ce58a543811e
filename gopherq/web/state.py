"""The application's shared state: the keys areas read it under (settings, Redis, inspector, event bus, plugins)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gopherq.core.events import EventBus
from gopherq.core.inspect import Inspector
from gopherq.core.plugins import PluginManager
from gopherq.core.settings import Settings

SETTINGS_KEY = web.AppKey("gopherq_settings", Settings)
REDIS_KEY: web.AppKey[Any] = web.AppKey("gopherq_redis")
INSPECTOR_KEY: web.AppKey[Inspector] = web.AppKey("gopherq_inspector")
BUS_KEY: web.AppKey[EventBus | None] = web.AppKey("gopherq_bus")
PLUGINS_KEY: web.AppKey[PluginManager] = web.AppKey("gopherq_plugins")
#: Renders the login page (401) for a request: set by the app from web/render.py, so that web/security.py, which
#: answers the unauthenticated request, does not import the renderer that imports it.
LOGIN_PAGE_KEY: web.AppKey[Callable[[web.Request], web.Response]] = web.AppKey("gopherq_login_page")
