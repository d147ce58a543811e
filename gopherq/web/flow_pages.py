"""The dashboard's flow page: a flow (a DAG of tasks, docs/flows.md) with its graph drawn server-side as SVG
(web/flow_graph.py) and each member's state; each member's task page links here. Reads only, through the store."""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from markupsafe import Markup

from gopherq.core.flows.members import FLOW_ID
from gopherq.core.flows.store import FlowStore
from gopherq.web.flow_graph import flow_svg
from gopherq.web.pages import queue_param
from gopherq.web.render import render_html
from gopherq.web.state import INSPECTOR_KEY


async def flow_page(request: web.Request) -> web.Response:
    queue = queue_param(request)
    flow_id = request.match_info["flow_id"]
    if not FLOW_ID.match(flow_id):
        raise web.HTTPNotFound(text="404: no such flow\n")
    view = await FlowStore(request.app[INSPECTOR_KEY].redis, queue).read(flow_id)
    if view is None:
        raise web.HTTPNotFound(text="404: no such flow (unknown, or expired after it finished)\n")
    svg = flow_svg(view, f"/queues/{queue}/tasks/")
    context = {
        "queue": queue,
        "flow": view,
        "graph": Markup(svg) if svg is not None else None,  # built from escaped parts only (flow_graph.py)
        "counts": sorted(Counter(member.state for member in view.members).items()),
        "parents": view.parents(),
        "members": sorted(view.members, key=lambda member: member.node)[:500],
    }
    return render_html(request, "flow.html", context)


def setup(app: web.Application) -> None:
    app.router.add_get("/queues/{queue}/flows/{flow_id}", flow_page, name="flow")
