"""The /v1/flows routes asked for every answer they give (docs/api.md's table), for the answers test of
tests/core/test_hostile_rules.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


async def ask_flow_routes(
    ask: Callable[..., Any], queue: str, authed: Any, open_: Any, down: Any, elsewhere: Any
) -> None:
    """Every answer of the /v1/flows routes (docs/flows.md), for the test below."""
    create, listing = ("POST", "/v1/flows"), ("GET", "/v1/flows")
    read, cancel = ("GET", "/v1/flows/{flow_id}"), ("DELETE", "/v1/flows/{flow_id}")
    children, seal = (
        ("POST", "/v1/flows/{flow_id}/joins/{node}/children"),
        ("POST", "/v1/flows/{flow_id}/joins/{node}/seal"),
    )
    url = "http://127.0.0.1:9/"
    flow = {
        "id": "fl1",
        "queue": queue,
        "tasks": [
            {"node": "a", "task": {"url": url}},
            {"node": "j", "task": {"url": url}, "depends_on": ["a"], "open": True},
        ],
    }
    kids = {"tasks": [{"node": "k", "task": {"url": url}}]}
    for _ in range(2):  # 201, then 200: the same flow id again
        await ask(create, "/v1/flows", json=flow)
    await ask(create, "/v1/flows", data=b"{", headers={"Content-Type": "application/json"})
    await ask(create, "/v1/flows", json={"tasks": [{"node": "a", "task": {"url": url, "body": "x" * 2000}}]})
    await ask(create, "/v1/flows", data=b"x", headers={"Content-Type": "text/plain"})
    await ask(create, "/v1/flows", json={"tasks": [{"node": "a", "task": {"url": "ftp://127.0.0.1/"}}]})
    path = f"/v1/flows/fl1/joins/j/children?queue={queue}"
    await ask(children, path, json=kids)
    await ask(children, path, data=b"{", headers={"Content-Type": "application/json"})
    await ask(children, path, json={"tasks": [{"node": "k", "task": {"url": url, "body": "x" * 2000}}]})
    await ask(children, path, data=b"x", headers={"Content-Type": "text/plain"})
    await ask(children, path, json={"tasks": [{"node": "k", "task": {"url": "ftp://127.0.0.1/"}}]})
    await ask(seal, f"/v1/flows/fl1/joins/j/seal?queue={queue}")
    await ask(seal, f"/v1/flows/fl1/joins/j/seal?queue={queue}")  # sealed already: 409
    await ask(children, path, json=kids)  # sealed: 409
    await ask(seal, "/v1/flows/fl1/joins/j/seal?queue=not%20a%20queue")
    await ask(children, "/v1/flows/fl1/joins/j/children?queue=not%20a%20queue", json=kids)
    await ask(read, f"/v1/flows/fl1?queue={queue}")
    await ask(read, f"/v1/flows/never?queue={queue}")
    await ask(read, "/v1/flows/fl1?queue=not%20a%20queue")
    await ask(listing, f"/v1/flows?queue={queue}")
    await ask(listing, "/v1/flows?queue=not%20a%20queue")
    await ask(cancel, f"/v1/flows/fl1?queue={queue}")  # 202
    await ask(cancel, f"/v1/flows/fl1?queue={queue}")  # cancelled already: 409
    await ask(cancel, f"/v1/flows/never?queue={queue}")
    await ask(cancel, "/v1/flows/fl1?queue=not%20a%20queue")
    routes = {
        create: ("/v1/flows", {"json": flow}),
        listing: (f"/v1/flows?queue={queue}", {}),
        read: (f"/v1/flows/fl1?queue={queue}", {}),
        cancel: (f"/v1/flows/fl1?queue={queue}", {}),
        children: (path, {"json": kids}),
        seal: (f"/v1/flows/fl1/joins/j/seal?queue={queue}", {}),
    }
    for route, (where, body) in routes.items():
        await ask(route, where, auth=False, **body)
        await ask(route, where, open_, **elsewhere, **body)
        await ask(route, where, down, **body)
