"""The flows part of the `/v1` HTTP API (docs/flows.md): a whole flow in one request, idempotent by flow id.

POST   /v1/flows                {"id": optional flow id, "queue": optional, "tasks": [{"node": name,
                                "task": envelope, "depends_on": [names], "policy": "all_settled"}, ...]}:
                                every task validated as any producer's (one rule per field), the flow created
                                in one Redis call (per 5,000 roots past the first 5,000); 201 with its id and
                                member task ids, 200 when a flow of that id exists (nothing created twice; a
                                creation cut short is resumed)
GET    /v1/flows?queue=Q        the queue's open then finished flows, with their states
GET    /v1/flows/{id}?queue=Q   the flow's state and each member's (node, task id, state, children, policy)
DELETE /v1/flows/{id}?queue=Q   cancel it: members not started never will, running ones are asked to cancel
POST   /v1/flows/{id}/joins/{node}/children?queue=Q   {"tasks": [{"node", "task"}, ...]}: children added to an open
                                join while the flow runs (each ready at once); 200 with how many were new
POST   /v1/flows/{id}/joins/{node}/seal?queue=Q       no more children: the join runs once its parents are final
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import ResponseError

from gopherq.core.errors import TaskRejected
from gopherq.core.flows.members import member_task_id
from gopherq.core.flows.spec import MAX_MEMBERS, Node, Policy
from gopherq.core.jsontext import parse_json
from gopherq.web.api import BatchRejected, _body, _queue, answer, build_batch, problem
from gopherq.web.state import CLIENT_KEY

#: The fields of one member in a POST /v1/flows body.
MEMBER_FIELDS = frozenset({"node", "task", "depends_on", "policy", "open"})


def _nodes(client: Any, members: Any, queue: str, headers: Any) -> list[Node]:
    """The nodes of a request's `tasks`, each task validated as any producer's (TaskRejected, BatchRejected)."""
    if not isinstance(members, list) or not members:
        raise TaskRejected("schema_invalid", "field 'tasks' must be a non-empty array of {node, task, ...} objects")
    if len(members) > MAX_MEMBERS:
        raise TaskRejected("too_large", f"a flow has at most {MAX_MEMBERS} tasks, got {len(members)}")
    for index, member in enumerate(members):
        if not isinstance(member, dict) or not {"node", "task"} <= set(member) or not set(member) <= MEMBER_FIELDS:
            raise TaskRejected("schema_invalid", f"tasks[{index}] must be {{node, task[, depends_on, policy]}}")
        depends_on = member.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(isinstance(name, str) for name in depends_on):
            raise TaskRejected("schema_invalid", f"tasks[{index}].depends_on must be an array of node names")
    tasks = build_batch(client, [member["task"] for member in members], queue, headers)
    return [
        Node(
            member["node"],
            task,
            list(member.get("depends_on", [])),
            Policy.parse(member.get("policy")),
            member.get("open") is True,
        )
        for member, task in zip(members, tasks, strict=True)
    ]


async def create_flow(request: web.Request) -> web.Response:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    try:
        parsed = parse_json(body)
    except TaskRejected as exc:
        return problem(400, exc.reason, exc.message)
    if not isinstance(parsed, dict) or not {"tasks"} <= set(parsed) <= {"id", "queue", "tasks"}:
        return problem(400, "schema_invalid", "a flow is {id (optional), queue (optional), tasks: [...]}")
    queue = _queue(request, parsed.get("queue") if isinstance(parsed.get("queue"), str) else None)
    client = request.app[CLIENT_KEY]
    try:
        nodes = _nodes(client, parsed["tasks"], queue, request.headers)
        flow_id, created = await client.flows.create(nodes, parsed.get("id"), queue)
    except BatchRejected as refused:
        rejection = refused.rejection
        return problem(422, rejection.reason, rejection.message, index=refused.index)
    except TaskRejected as exc:
        return problem(413 if exc.reason == "too_large" else 422, exc.reason, exc.message)
    members = {node.name: member_task_id(flow_id, node.name) for node in nodes}
    return answer({"id": flow_id, "queue": queue, "created": created, "members": members}, 201 if created else 200)


async def list_flows(request: web.Request) -> web.Response:
    return answer({"flows": await request.app[CLIENT_KEY].flows.list(_queue(request))})


async def get_flow(request: web.Request) -> web.Response:
    queue, flow_id = _queue(request), request.match_info["flow_id"]
    view = await request.app[CLIENT_KEY].flows.get(flow_id, queue)
    if view is None:
        return problem(404, "not_found", f"no flow {flow_id!r} in queue {queue!r} (unknown, or expired)")
    return answer(view.to_dict())


async def cancel_flow(request: web.Request) -> web.Response:
    queue, flow_id = _queue(request), request.match_info["flow_id"]
    flows = request.app[CLIENT_KEY].flows
    before = await flows.get(flow_id, queue, members=False)
    if before is None:
        return problem(404, "not_found", f"no flow {flow_id!r} in queue {queue!r} (unknown, or expired)")
    if before.state in ("succeeded", "cancelled"):
        return problem(409, "finished", f"flow {flow_id!r} has already ended ({before.state})", state=before.state)
    state = await flows.cancel(flow_id, queue)
    return answer({"id": flow_id, "state": state}, status=202)


async def add_children(request: web.Request) -> web.Response:
    queue, flow_id, join = _queue(request), request.match_info["flow_id"], request.match_info["node"]
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    try:
        parsed = parse_json(body)
        if not isinstance(parsed, dict) or set(parsed) != {"tasks"} or not isinstance(parsed["tasks"], list):
            raise TaskRejected("schema_invalid", 'children are {"tasks": [{node, task}, ...]}')
        members = parsed["tasks"]
        if not all(isinstance(m, dict) and set(m) == {"node", "task"} for m in members):
            raise TaskRejected("schema_invalid", "each child is {node, task}")
        tasks = build_batch(request.app[CLIENT_KEY], [m["task"] for m in members], queue, request.headers)
        children = [(m["node"], task) for m, task in zip(members, tasks, strict=True)]
        added = await request.app[CLIENT_KEY].flows.extend(flow_id, join, children, queue)
    except BatchRejected as refused:
        return problem(422, refused.rejection.reason, refused.rejection.message, index=refused.index)
    except TaskRejected as exc:
        return problem(400 if exc.reason == "parse_error" else 422, exc.reason, exc.message)
    except ResponseError as exc:
        return problem(409, "not_open", f"flow {flow_id!r}, join {join!r}: {exc}")
    return answer({"id": flow_id, "join": join, "added": added})


async def seal_join(request: web.Request) -> web.Response:
    queue, flow_id, join = _queue(request), request.match_info["flow_id"], request.match_info["node"]
    sealed = await request.app[CLIENT_KEY].flows.seal(flow_id, join, queue)
    if not sealed:
        return problem(409, "not_open", f"flow {flow_id!r} has no open join {join!r} (sealed already, or unknown)")
    return answer({"id": flow_id, "join": join, "sealed": True})


def setup(app: web.Application) -> None:
    """Add the `/v1/flows` routes."""
    app.router.add_post("/v1/flows", create_flow, name="api_flow_create")
    app.router.add_get("/v1/flows", list_flows, name="api_flows")
    app.router.add_get("/v1/flows/{flow_id}", get_flow, name="api_flow")
    app.router.add_delete("/v1/flows/{flow_id}", cancel_flow, name="api_flow_cancel")
    app.router.add_post("/v1/flows/{flow_id}/joins/{node}/children", add_children, name="api_flow_children")
    app.router.add_post("/v1/flows/{flow_id}/joins/{node}/seal", seal_join, name="api_flow_seal")
