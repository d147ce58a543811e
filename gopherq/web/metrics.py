"""`/metrics`: the Prometheus exposition that `gopherq.web.exposition.render_metrics` builds from the inspector, behind
the same authentication as the pages (scrapers send the bearer token)."""

from __future__ import annotations

from aiohttp import web

from gopherq.web.exposition import render_metrics
from gopherq.web.state import INSPECTOR_KEY


async def metrics(request: web.Request) -> web.Response:
    body, content_type = await render_metrics(request.app[INSPECTOR_KEY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, name="metrics")
