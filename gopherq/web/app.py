"""Building the aiohttp application: shared state in app keys, the security middlewares, one setup per area.

An area is a function `setup(app)` that adds its routes (and may read the app keys of web/state.py). The dashboard
pages, the health probes and the metrics endpoint are areas; the `/v1` API adds itself the same way, to `AREAS` or
through `create_app(..., areas=...)`, and gets authentication (bearer token) and CSRF (for cookie-authenticated
calls) from the middlewares without doing anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp import web
from redis.exceptions import RedisError

from gopherq.core.events import EventBus
from gopherq.core.inspect import Inspector
from gopherq.core.masking import Masker
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.redis_client import RedisClient
from gopherq.core.settings import Settings
from gopherq.web import (
    actions,
    api,
    api_ops,
    api_pages,
    flow_pages,
    flows_api,
    health,
    keys,
    metrics,
    operations,
    pages,
)
from gopherq.web.credentials import Auth
from gopherq.web.render import STATIC, build_environment, login_page
from gopherq.web.security import MIDDLEWARES, Handler
from gopherq.web.sessions import Sessions
from gopherq.web.state import (
    AUTH_KEY,
    BUS_KEY,
    ENV_KEY,
    INSPECTOR_KEY,
    LOGIN_PAGE_KEY,
    PLUGINS_KEY,
    POLL_KEY,
    REDIS_KEY,
    SESSIONS_KEY,
    SETTINGS_KEY,
)

Area = Callable[[web.Application], None]

log = logging.getLogger(__name__)

#: The areas every server has, in route-matching order (the API helper appends its own).
AREAS: list[Area] = [
    health.setup,
    metrics.setup,
    api.setup,
    api_ops.setup,
    api_pages.setup,
    flows_api.setup,
    keys.setup_api,
    pages.setup,
    flow_pages.setup,
    keys.setup_pages,
    actions.setup,
    operations.setup,
]

#: The areas of `gopherq api`: the `/v1` API and the probes, no dashboard.
API_AREAS: list[Area] = [health.setup, api.setup, api_ops.setup, api_pages.setup, flows_api.setup, keys.setup_api]


@web.middleware
async def redis_unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page that cannot reach Redis answers 503 with one line (and a live fragment keeps its last content)."""
    try:
        return await handler(request)
    except (RedisError, OSError) as exc:
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
        return web.Response(status=503, text=f"503: Redis unavailable ({type(exc).__name__}); retrying helps\n")


def create_app(
    settings: Settings,
    redis: RedisClient,
    *,
    bus: EventBus | None = None,
    inspector: Inspector | None = None,
    areas: Iterable[Area] | None = None,
    plugins: PluginManager | None = None,
) -> web.Application:
    """The application on an open Redis client (the caller owns and closes it). `bus` receives the events of
    actions taken here (a requeue emits `task.requeued`), so they reach the configured sinks. `plugins`: the
    process's loaded plugins (loaded here when not given)."""
    masker = Masker.from_settings(settings)
    if inspector is None:
        inspector = Inspector(redis, settings, masker)
    app = web.Application(middlewares=[*MIDDLEWARES, redis_unavailable], client_max_size=1024 * 1024)
    app[SETTINGS_KEY] = settings
    app[REDIS_KEY] = redis
    app[INSPECTOR_KEY] = inspector
    app[BUS_KEY] = bus
    app[PLUGINS_KEY] = plugins or load_plugins(settings)
    app[AUTH_KEY] = Auth.from_settings(settings.web)
    app[SESSIONS_KEY] = Sessions(redis, settings.web.session_ttl)
    app[ENV_KEY] = build_environment(masker)
    app[POLL_KEY] = settings.web.poll_interval
    app[LOGIN_PAGE_KEY] = login_page
    app.router.add_static("/static/", STATIC, name="static", append_version=False)
    for setup in AREAS if areas is None else areas:
        setup(app)
    return app
