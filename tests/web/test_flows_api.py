"""`/v1/flows`: a whole flow in one request, idempotent by flow id; read it, list it, cancel it; a bad member is
refused with its index and nothing is created."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.web.test_api import api  # noqa: F401 - the fixture

URL = "http://127.0.0.1:9/never"


def member(node: str, depends_on: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"node": node, "task": {"url": URL, "method": "POST"}, "depends_on": depends_on or [], **extra}


async def test_a_flow_is_created_once_read_listed_and_cancelled(api: Callable[..., Any]) -> None:  # noqa: F811
    app = await api()
    flow = {"id": "order-42", "tasks": [member("a"), member("b", ["a"]), member("c", ["a", "b"], policy="quorum:1")]}
    status, body = await app.call("POST", "/v1/flows", flow)
    assert status == 201, body
    assert body["created"] is True and body["members"] == {"a": "order-42.a", "b": "order-42.b", "c": "order-42.c"}
    status, again = await app.call("POST", "/v1/flows", flow)
    assert status == 200 and again["created"] is False
    status, view = await app.call("GET", f"/v1/flows/order-42?queue={app.queue}")
    assert status == 200 and view["state"] == "pending"
    states = {m["node"]: (m["state"], m.get("policy")) for m in view["members"]}
    assert states == {"a": ("ready", None), "b": ("waiting", "fail_fast"), "c": ("waiting", "quorum:1")}
    status, listed = await app.call("GET", f"/v1/flows?queue={app.queue}")
    assert status == 200 and [f["id"] for f in listed["flows"]] == ["order-42"]
    status, cancelled = await app.call("DELETE", f"/v1/flows/order-42?queue={app.queue}")
    assert status == 202 and cancelled["state"] == "cancelled"
    status, _ = await app.call("GET", f"/v1/flows/nope?queue={app.queue}")
    assert status == 404


async def test_a_bad_member_or_graph_is_refused_and_nothing_is_created(api: Callable[..., Any]) -> None:  # noqa: F811
    app = await api()
    bad_task = {"id": "bad1", "tasks": [member("a"), {"node": "b", "task": {"url": URL, "attempt": 3}}]}
    status, body = await app.call("POST", "/v1/flows", bad_task)
    assert status == 422 and body["error"]["index"] == 1 and "attempt" in body["error"]["message"]
    cycle = {"id": "bad2", "tasks": [member("a", ["b"]), member("b", ["a"])]}
    status, body = await app.call("POST", "/v1/flows", cycle)
    assert status == 422 and "cycles" in body["error"]["message"]
    missing = {"id": "bad3", "tasks": [member("a", ["zz"])]}
    status, body = await app.call("POST", "/v1/flows", missing)
    assert status == 422 and "'zz'" in body["error"]["message"]
    forged = {"id": "bad4", "tasks": [{"node": "a", "task": {"url": URL, "flow_member": {"flow": "x", "node": "y"}}}]}
    status, body = await app.call("POST", "/v1/flows", forged)
    assert status == 422 and "flow_member" in body["error"]["message"]
    for flow_id in ("bad1", "bad2", "bad3", "bad4"):
        status, _ = await app.call("GET", f"/v1/flows/{flow_id}?queue={app.queue}")
        assert status == 404


async def test_the_flow_page_draws_the_graph_and_member_task_pages_link_to_it(api: Callable[..., Any]) -> None:  # noqa: F811
    app = await api()
    flow = {"id": "page-1", "tasks": [member("a"), member("b", ["a"]), member("c", ["a"]), member("d", ["b", "c"])]}
    status, _ = await app.call("POST", "/v1/flows", flow)
    assert status == 201
    status, page = await app.call("GET", f"/queues/{app.queue}/flows/page-1")
    assert status == 200
    assert "<svg" in page and page.count("<rect") == 4 and page.count("<line") == 4
    assert f'href="/queues/{app.queue}/tasks/page-1.d"' in page and "b, c" in page
    status, task_page = await app.call("GET", f"/queues/{app.queue}/tasks/page-1.a")
    assert status == 200 and f'href="/queues/{app.queue}/flows/page-1"' in task_page
    status, _ = await app.call("GET", f"/queues/{app.queue}/flows/nope")
    assert status == 404


async def test_children_are_added_to_an_open_join_and_it_is_sealed(api: Callable[..., Any]) -> None:  # noqa: F811
    app = await api()
    flow = {"id": "dyn-1", "tasks": [member("a"), member("join", ["a"], policy="all_settled", open=True)]}
    status, _ = await app.call("POST", "/v1/flows", flow)
    assert status == 201
    children = {"tasks": [{"node": f"k{i}", "task": {"url": URL, "method": "POST"}} for i in range(2)]}
    path = f"/v1/flows/dyn-1/joins/join/children?queue={app.queue}"
    status, body = await app.call("POST", path, children)
    assert status == 200 and body["added"] == 2
    status, view = await app.call("GET", f"/v1/flows/dyn-1?queue={app.queue}")
    states = {m["node"]: m["state"] for m in view["members"]}
    assert states == {"a": "ready", "k0": "ready", "k1": "ready", "join": "waiting"} and view["size"] == 4
    seal = f"/v1/flows/dyn-1/joins/join/seal?queue={app.queue}"
    status, _ = await app.call("POST", seal)
    assert status == 200
    status, body = await app.call("POST", seal)
    assert status == 409
    status, body = await app.call("POST", path, children)
    assert status == 409 and body["error"]["reason"] == "not_open"
