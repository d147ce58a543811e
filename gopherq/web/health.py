"""The orchestrator probes: `/healthz` (the process answers) and `/readyz` (and Redis answers too)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from gopherq.web.state import REDIS_KEY

#: How long /readyz waits for Redis before it says 503.
READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[REDIS_KEY].ping(), READY_TIMEOUT)
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        return web.Response(status=503, text=f"not ready: Redis unavailable ({type(exc).__name__})\n")
    return web.Response(text="ready\n")


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
