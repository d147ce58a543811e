"""The application's shared state: the keys areas read it under (settings, Redis, inspector, event bus, plugins)."""

from __future__ import annotations

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
