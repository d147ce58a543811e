"""The `/v1` HTTP API: producers in any language enqueue, look up and cancel tasks with nothing but HTTP.

    POST   /v1/queues/{queue}/tasks   one task envelope, or {"tasks": [...]}: validated as a worker would, then
                                      created in one Redis round trip; 201 with the ids (200 when every id had
                                      already been created within `api.idempotency_window`: nothing enqueued twice)
    GET    /v1/queues                 every queue that has anything, with its counts
    GET    /v1/queues/{queue}         the queue's counts (the inspection layer's QueueInfo)
    GET    /v1/tasks/{id}?queue=Q     the task's state, envelope and result (masked; each stored field bounded,
                                      what was cut listed in `truncated`)
    GET    /v1/queues/{queue}/dead/{entry_id}/raw   a dead letter's stored bytes (masked), as a download
    DELETE /v1/tasks/{id}?queue=Q     cancel a task (404 when nothing is known of it)
    GET    /v1/openapi.json           this API as an OpenAPI 3.1 document
    /v1/flows...                      flows (DAGs of tasks): see web/flows_api.py

The operator endpoints (task lists, explain, dead letters by filter, requeue, delete, edit, pause) are in
web/api_ops.py.

Authentication is the web server's (bearer token; loopback only without one). The API takes JSON bodies only, so
a browser cannot send it a cross-site request without a CORS preflight, which this server never grants: that is
why `/v1` needs no CSRF token (see security.csrf). Errors are JSON `{"error": {"reason", "message"}}`, with the
reason codes and messages the CLI and the client give: 400 for a body that is not JSON or not a task, 422 for a
task that fails validation, 413 for a body over `api.max_body_bytes`, 415 for a body that is not JSON.

When Redis fails, the answer is a 503 that says only what is known (see `unavailable`): reason `unavailable` (with
Retry-After) when no command reached Redis, so nothing was created; reason `outcome_unknown` when a command was
sent but not confirmed (a timeout, a connection lost mid-call, an error reply): the tasks may or may not exist, and
sending the request again is safe only when every task carries its own id (`resend_safe`, and then Retry-After),
because an id is created once within `api.idempotency_window`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gopherq.client import AsyncClient
from gopherq.core import codec
from gopherq.core.errors import ConfigError, NotFound, TaskRejected
from gopherq.core.jsontext import parse_json
from gopherq.core.keys import validate_queue_name
from gopherq.core.masking import Masker
from gopherq.core.task import Task, task_from_dict
from gopherq.web.coalescer import Coalescer, CreateFailed
from gopherq.web.openapi import OPENAPI
from gopherq.web.pages import raw_download
from gopherq.web.security import request_actor
from gopherq.web.state import BUS_KEY, CLIENT_KEY, COALESCER_KEY, INSPECTOR_KEY, PLUGINS_KEY, REDIS_KEY, SETTINGS_KEY


def unavailable(failure: CreateFailed, tasks: list[Task], window: int) -> web.Response:
    """The 503 of a create that Redis failed, saying only what is known. Nothing sent: `unavailable`, nothing was
    created, send it again. Sent but not confirmed (a timeout is not a refusal: the command may still run when Redis
    wakes up; a connection lost mid-call, or an error reply to one command of several, leave it as open):
    `outcome_unknown`, the tasks may exist; sending again is safe only when every task carries the producer's own
    id, which is created once within `api.idempotency_window`."""
    error = f"{type(failure.error).__name__}: {failure.error}"
    if not failure.maybe_sent:
        response = problem(503, "unavailable", f"Redis is unavailable ({error}): nothing was created; send it again")
        response.headers["Retry-After"] = "1"
        return response
    safe = all(not task.id_assigned for task in tasks)
    if safe:
        advice = (
            "sending the same request again is safe: a task id is created once within "
            f"api.idempotency_window ({window}s)"
        )
    else:
        advice = "sending it again may create them twice: give every task an id to make a resend safe"
    message = f"Redis did not confirm the tasks ({error}): they may or may not have been created; {advice}"
    response = problem(503, "outcome_unknown", message, resend_safe=safe, ids=[task.id for task in tasks])
    if safe:
        response.headers["Retry-After"] = "1"
    return response


def answer(data: Any, status: int = 200) -> web.Response:
    """A JSON answer, encoded by the codec (orjson): aiohttp's `json_response` uses the standard library's encoder,
    which cost a tenth of the server's time per single-task POST."""
    return web.Response(body=codec.dumps(data), status=status, content_type="application/json")


def problem(status: int, reason: str, message: str, **extra: Any) -> web.Response:
    """A JSON error answer (its message masked: it may quote a URL of the request)."""
    return answer({"error": {"reason": reason, "message": _MASKER.text(message), **extra}}, status=status)


#: Error messages name fields, not values, but a URL may slip in: masked with the default rules.
_MASKER = Masker()


def _queue(request: web.Request, name: str | None = None) -> str:
    queue = name or request.query.get("queue") or request.app[SETTINGS_KEY].queue.name
    try:
        return validate_queue_name(queue)
    except ConfigError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"reason": "invalid_queue", "message": str(exc)}}),
            content_type="application/json",
        ) from None


async def _body(request: web.Request) -> bytes | web.Response:
    """The request body, or the error answer: 415 when it is not JSON, 413 when it is over the limit."""
    if request.content_type != "application/json":
        return problem(415, "unsupported_media_type", "send the task as JSON (Content-Type: application/json)")
    limit = request.app[SETTINGS_KEY].api.max_body_bytes
    length = request.content_length
    if length is not None:
        if length > limit:
            return _too_large(limit)
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError as exc:  # the producer hung up mid-body
            return problem(400, "parse_error", f"request body ended after {len(exc.partial)} of {length} bytes")
    chunks: list[bytes] = []  # chunked transfer: counted as it arrives
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> web.Response:
    return problem(413, "too_large", f"request body is over api.max_body_bytes={limit}")


def _build(client: AsyncClient, obj: Any, queue: str) -> Task:
    """A validated task from one envelope (raises TaskRejected, as the client and the worker would)."""
    task = task_from_dict(obj, producer=True)
    _place(task, queue)
    client.check_task(task)
    task.envelope = task.encode()
    return task


def _place(task: Task, queue: str) -> None:
    if task.queue is not None and task.queue != queue:
        raise TaskRejected("schema_invalid", f"field 'queue' is {task.queue!r} but the URL names queue {queue!r}")
    task.queue = queue


def build_batch(
    client: AsyncClient, envelopes: list[Any], queue: str, carrier: Mapping[str, str] | None = None
) -> list[Task]:
    """Validated tasks from a request's envelopes, built one step at a time over the whole batch (control fields,
    then the queue, then the executor's validation, then encoding): each step's code then stays hot in the CPU's
    caches, which makes a batch of a thousand about a third cheaper than going task by task. When a task is
    refused, the batch is gone through again task by task, so the error names the first bad task, with its index
    (`BatchRejected`). `carrier` (the request's headers) goes to the plugins' `gopherq_before_enqueue`."""
    try:
        tasks = [task_from_dict(obj, producer=True) for obj in envelopes]
        for task in tasks:
            _place(task, queue)
        hook = client.plugins.before_enqueue
        if hook is not None:
            for task in tasks:
                hook(task, queue, "api", carrier)
        for task in tasks:
            client.check_task(task)
            task.payload = None  # the executor's model was needed to validate, not to enqueue: freed at once
        for task in tasks:
            task.envelope = task.encode()
    except TaskRejected:
        for index, obj in enumerate(envelopes):
            try:
                _build(client, obj, queue)
            except TaskRejected as exc:
                raise BatchRejected(index, exc) from None
        raise  # a task refused in the batch but not alone: cannot happen (the checks look at one task each)
    return tasks


class BatchRejected(Exception):
    """The task at `index` of a request was refused (`rejection` says why)."""

    def __init__(self, index: int, rejection: TaskRejected) -> None:
        super().__init__(index, rejection)
        self.index = index
        self.rejection = rejection


async def create_tasks(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    settings = request.app[SETTINGS_KEY]
    try:
        parsed = parse_json(body)
    except TaskRejected as exc:
        return problem(400, exc.reason, exc.message)
    batch = isinstance(parsed, dict) and set(parsed) == {"tasks"}
    envelopes = parsed["tasks"] if batch else [parsed]
    if not isinstance(envelopes, list) or not envelopes:
        return problem(400, "schema_invalid", "field 'tasks' must be a non-empty array of task objects")
    if len(envelopes) > settings.api.max_batch:
        return problem(413, "too_large", f"{len(envelopes)} tasks in one request, over api.max_batch")
    client = request.app[CLIENT_KEY]
    coalescer = request.app[COALESCER_KEY]
    try:
        tasks = build_batch(client, envelopes, queue, request.headers)
    except BatchRejected as refused:
        rejection = refused.rejection
        where = {"index": refused.index} if batch else {}
        status = 400 if rejection.reason == "parse_error" else 422
        return problem(status, rejection.reason, rejection.message, **where)
    try:
        outcomes = await coalescer.create(tasks)
    except CreateFailed as failure:
        return unavailable(failure, tasks, settings.api.idempotency_window)
    created = [not outcome.duplicate for outcome in outcomes]
    status = 201 if any(created) else 200
    if batch:
        return answer({"ids": [outcome.id for outcome in outcomes], "created": created}, status=status)
    return answer({"id": outcomes[0].id, "created": created[0]}, status=status)


async def list_queues(request: web.Request) -> web.Response:
    """Every queue that has anything (the inspection layer's listing), with its numbers."""
    return answer({"queues": [info.to_dict() for info in await request.app[INSPECTOR_KEY].queues()]})


async def get_queue(request: web.Request) -> web.Response:
    queue = _queue(request, request.match_info["queue"])
    info = await request.app[INSPECTOR_KEY].queue(queue)
    return answer(info.to_dict())


async def get_task(request: web.Request) -> web.Response:
    queue = _queue(request)
    task_id = request.match_info["task_id"]
    events = request.query.get("events", "20")
    if not events.isdigit() or int(events) > 1000:
        return problem(400, "invalid_parameter", f"events must be a whole number from 0 to 1000, got {events!r}")
    info = await request.app[INSPECTOR_KEY].task(queue, task_id, events=int(events))
    if info is None:
        return problem(404, "not_found", f"no task {task_id!r} in queue {queue!r} (unknown, or its result expired)")
    return answer(info.to_dict())


async def get_dead_letter_raw(request: web.Request) -> web.Response:
    """A dead letter's stored bytes, masked, as a download: the whole of what an answer shows cut (see
    `truncated` in GET /v1/tasks/{id})."""
    queue = _queue(request, request.match_info["queue"])
    entry_id = request.match_info["entry_id"]
    raw = await request.app[INSPECTOR_KEY].dead_letter_raw(queue, entry_id)
    if raw is None:
        return problem(404, "not_found", f"no dead letter {entry_id!r} in queue {queue!r}")
    return raw_download(raw, entry_id)


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel through the inspection layer's Operator: an unknown task is a 404, and the cancel is audited."""
    queue = _queue(request)
    task_id = request.match_info["task_id"]
    operator = request.app[INSPECTOR_KEY].operator(request_actor(request), request.app[BUS_KEY])
    try:
        outcome = await operator.cancel(queue, task_id)
    except NotFound as exc:
        return problem(404, "not_found", str(exc))
    if outcome == "finished":
        return problem(409, "finished", f"task {task_id!r} has already ended", outcome=outcome)
    return answer({"id": task_id, "outcome": outcome}, status=202 if outcome == "requested" else 200)


async def openapi(request: web.Request) -> web.Response:
    return answer(OPENAPI)


async def _open_client(app: web.Application) -> None:
    settings = app[SETTINGS_KEY]
    client = AsyncClient(settings, plugins=app[PLUGINS_KEY], redis=app[REDIS_KEY])
    client.bus = app[BUS_KEY]
    app[CLIENT_KEY] = client
    app[COALESCER_KEY] = Coalescer(client, settings.api.idempotency_window)


def setup(app: web.Application) -> None:
    """Add the `/v1` routes (an area of the web application, see app.py)."""
    app.on_startup.append(_open_client)
    app.router.add_post("/v1/queues/{queue}/tasks", create_tasks, name="api_create")
    app.router.add_get("/v1/queues", list_queues, name="api_queues")
    app.router.add_get("/v1/queues/{queue}", get_queue, name="api_queue")
    app.router.add_get("/v1/tasks/{task_id}", get_task, name="api_task")
    app.router.add_delete("/v1/tasks/{task_id}", cancel_task, name="api_cancel")
    app.router.add_get("/v1/queues/{queue}/dead/{entry_id}/raw", get_dead_letter_raw, name="api_dead_raw")
    app.router.add_get("/v1/openapi.json", openapi, name="api_openapi")
