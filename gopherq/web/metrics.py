"""`/metrics`: the Prometheus exposition that `gopherq.metrics.render_metrics` builds from the inspector."""

from __future__ import annotations

import importlib

from aiohttp import web

from gopherq.web.state import INSPECTOR_KEY


async def metrics(request: web.Request) -> web.Response:
    module = importlib.import_module("gopherq.metrics")
    body, content_type = await module.render_metrics(request.app[INSPECTOR_KEY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup(app: web.Application) -> None:
    if importlib.util.find_spec("gopherq.metrics") is not None:
        app.router.add_get("/metrics", metrics, name="metrics")
