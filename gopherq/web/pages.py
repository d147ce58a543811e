"""The dashboard's pages and the fragments htmx polls to keep them live: overview, queue, task, dead letter, workers.

Every page is a full HTML document that includes its live part; the live part is also served alone under
`/fragments/...`, and re-requests itself every `web.poll_interval` seconds, so a page updates without reloading
and still works (statically) without JavaScript. Handlers only read through the inspector and render.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from gopherq.core.deadletters import DeadLetters
from gopherq.core.errors import ConfigError, NotFound
from gopherq.core.inspect import WAITING_KINDS
from gopherq.core.inspect.editing import editable, render_command
from gopherq.core.inspect.queues import SPANS
from gopherq.core.inspect.ready_list import ReadyCursor
from gopherq.core.inspect.selection import DeadFilter
from gopherq.core.keys import validate_queue_name
from gopherq.web.chart import history_chart, throughput_chart
from gopherq.web.render import render_html
from gopherq.web.state import BUS_KEY, INSPECTOR_KEY, PLUGINS_KEY, SETTINGS_KEY

PAGE_SIZE = 25
#: The tabs of a queue page: the delayed tasks split by why they wait (core/inspect/waiting.py). `delayed` (all of
#: them) is still served, without a tab of its own.
TABS = ("ready", *WAITING_KINDS, "running", "dead")
SERVED_TABS = (*TABS, "delayed")
NOTICES = {
    "paused": "Queue paused: workers stop taking new tasks from it.",
    "resumed": "Queue resumed.",
    "requeued": "Requeued {n} dead letter(s).",
    "deleted": "Deleted {n} dead letter(s).",
    "more": "Done with {n} dead letter(s) of the first window; more may match: run it again for the next one.",
    "edited": "The edit was enqueued as a new task; the dead letter is kept.",
}


def queue_param(request: web.Request) -> str:
    """The `{queue}` of the path, validated like any queue name (404 otherwise)."""
    try:
        return validate_queue_name(request.match_info["queue"])
    except ConfigError:
        raise web.HTTPNotFound(text="404: no such queue\n") from None


def dead_letters(request: web.Request, queue: str) -> DeadLetters:
    """The queue's dead letters, to requeue or delete, from the app's one inspection layer; requeues are announced
    on the app's event bus."""
    return request.app[INSPECTOR_KEY].dead_letters(queue, request.app[BUS_KEY])


def notice(request: web.Request) -> str | None:
    template = NOTICES.get(request.query.get("notice", ""))
    if template is None:
        return None
    count = request.query.get("n", "")
    return template.format(n=int(count) if count.isdigit() else 0)


def _int(request: web.Request, name: str, default: int = 0) -> int:
    value = request.query.get(name, "")
    return max(0, int(value)) if value.isdigit() else default


# -- overview ---------------------------------------------------------------------------------------------------


T = TypeVar("T")
R = TypeVar("R")

#: Most Redis reads one page makes at once over its queues. redis-py's pool holds 100 connections by default:
#: a page that asked about every queue at once would fail (MaxConnectionsError) on a Redis with more queues than
#: that, and starve the other requests before.
PAGE_READS_AT_ONCE = 16


async def per_queue(read: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
    """`read` of every item, in order, at most PAGE_READS_AT_ONCE at a time."""
    slots = asyncio.Semaphore(PAGE_READS_AT_ONCE)

    async def one(item: T) -> R:
        async with slots:
            return await read(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def overview_context(request: web.Request) -> dict[str, Any]:
    inspector = request.app[INSPECTOR_KEY]
    queues = await inspector.queues()
    series = await per_queue(lambda queue: inspector.throughput(queue.name, 60), queues)
    circuits = await per_queue(lambda queue: inspector.open_circuits(queue.name), queues)
    rows = []
    for queue, minutes, open_circuits in zip(queues, series, circuits, strict=True):
        chart = throughput_chart(minutes)
        rows.append(
            {
                "queue": queue,
                "chart": chart,
                "per_minute": (chart.total_ok + chart.total_bad) / 60,
                "circuits": open_circuits,
            }
        )
    return {"rows": rows}


async def overview(request: web.Request) -> web.Response:
    return render_html(request, "overview.html", {**await overview_context(request), "notice": notice(request)})


async def overview_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/overview.html", await overview_context(request))


# -- one queue ----------------------------------------------------------------------------------------------------


def dead_filter(values: Any) -> DeadFilter:
    """The dead-letter filter of a query string or form (a bad value is a 400 naming it)."""
    try:
        return DeadFilter.from_mapping(values)
    except ConfigError as exc:
        raise web.HTTPBadRequest(text=f"400: {exc}\n") from None


def cursor_param(values: Any) -> float | None:
    value = values.get("cursor", "")
    try:
        return float(value) if value else None
    except ValueError:
        raise web.HTTPBadRequest(text="400: cursor: expected a number\n") from None


def ready_cursor(values: Any) -> str | None:
    """The ready tab's `cursor` (a page's next_cursor): checked here, so a bad one is a 400 naming it."""
    value = values.get("cursor", "")
    if not value:
        return None
    try:
        ReadyCursor.decode(value)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"400: {exc}\n") from None
    return str(value)


async def queue_context(request: web.Request, queue: str) -> dict[str, Any]:
    inspector = request.app[INSPECTOR_KEY]
    tab = request.query.get("tab", "ready")
    if tab not in SERVED_TABS:
        tab = "ready"
    offset = _int(request, "offset")
    where = dead_filter(request.query) if tab == "dead" else DeadFilter()
    read: Awaitable[Any]
    cursor = ready_cursor(request.query) if tab == "ready" else None
    if tab == "ready":
        read = inspector.ready(queue, offset, PAGE_SIZE, cursor)
    elif tab in WAITING_KINDS:
        read = inspector.delayed(queue, offset, PAGE_SIZE, kind=tab)
    elif tab == "dead":
        read = inspector.dead(queue, offset, PAGE_SIZE, where, cursor_param(request.query))
    else:
        read = getattr(inspector, tab)(queue, offset, PAGE_SIZE)
    span = request.query.get("span", "1h")
    if span not in SPANS:
        span = "1h"
    info, page, buckets = await asyncio.gather(inspector.queue(queue), read, inspector.history(queue, span))
    return {
        "info": info,
        "tab": tab,
        "tabs": TABS,
        "page": page,
        "offset": page.offset if cursor else offset,
        "cursor": cursor,
        "page_size": PAGE_SIZE,
        "where": where.to_dict(),
        "filter_query": urlencode({name: request.query[name] for name in DeadFilter.FIELDS if request.query.get(name)}),
        "history": history_chart(buckets, span),
        "spans": SPANS,
    }


async def queue_page(request: web.Request) -> web.StreamResponse:
    queue = queue_param(request)
    task_id = request.query.get("task", "").strip()
    if task_id:  # the search box: straight to the task
        raise web.HTTPSeeOther(request.app.router["task"].url_for(queue=queue, task_id=task_id))
    context = await queue_context(request, queue)
    return render_html(request, "queue.html", {**context, "notice": notice(request)})


async def queue_fragment(request: web.Request) -> web.Response:
    """The live part of a queue page; `part=head`: only its numbers and tabs (what the dead tab polls)."""
    queue = queue_param(request)
    if request.query.get("part") == "head":
        info = await request.app[INSPECTOR_KEY].queue(queue)
        return render_html(request, "fragments/queue_head.html", {"info": info, "tab": "dead", "tabs": TABS})
    return render_html(request, "fragments/queue.html", await queue_context(request, queue))


# -- one task -------------------------------------------------------------------------------------------------------


async def task_context(request: web.Request) -> dict[str, Any]:
    queue = queue_param(request)
    task_id = request.match_info["task_id"]
    inspector = request.app[INSPECTOR_KEY]
    task, why = await asyncio.gather(inspector.task(queue, task_id), inspector.explain(queue, task_id))
    if task is None:
        raise web.HTTPNotFound(text=f"404: no task {task_id!r} in queue {queue!r}\n")
    links = request.app[PLUGINS_KEY].task_links(task, request.app[SETTINGS_KEY])  # e.g. the trace (otel)
    return {"task": task, "queue": queue, "links": links, "why": why}


async def task_page(request: web.Request) -> web.Response:
    return render_html(request, "task.html", {**await task_context(request), "notice": notice(request)})


async def task_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/task.html", await task_context(request))


# -- one dead letter ------------------------------------------------------------------------------------------------


async def dead_letter_page(request: web.Request) -> web.Response:
    queue = queue_param(request)
    entry_id = request.match_info["entry_id"]
    letter = await request.app[INSPECTOR_KEY].dead_letter(queue, entry_id)
    if letter is None:
        raise web.HTTPNotFound(text=f"404: no dead letter {entry_id!r} in queue {queue!r}\n")
    context = {"queue": queue, "letter": letter, "entry": {"id": letter.id, **letter.entry}, "notice": notice(request)}
    try:
        command = await render_command(request.app[INSPECTOR_KEY], request.app[PLUGINS_KEY], queue, entry_id)
        edit = json.dumps(await editable(request.app[INSPECTOR_KEY], queue, entry_id), indent=2, ensure_ascii=False)
    except NotFound:  # not a JSON task (or only a prefix of one): nothing to copy or edit
        command, edit = None, None
    return render_html(request, "dead_letter.html", {**context, "command": command, "editable": edit})


async def dead_letter_raw(request: web.Request) -> web.Response:
    """The dead letter's stored bytes, masked, as a download (see `raw_download`)."""
    queue = queue_param(request)
    entry_id = request.match_info["entry_id"]
    raw = await request.app[INSPECTOR_KEY].dead_letter_raw(queue, entry_id)
    if raw is None:
        raise web.HTTPNotFound(text=f"404: no dead letter {entry_id!r} in queue {queue!r}\n")
    return raw_download(raw, entry_id)


def raw_download(raw: bytes, entry_id: str) -> web.Response:
    """Stored bytes as an attachment, never rendered: a browser saves them (`nosniff` is on every answer), so a
    producer's bytes cannot run as a page of this site. They are what the dead letter keeps: at most
    `worker.max_payload_bytes`, or the prefix kept of a `too_large` task (its entry has the full size and SHA-256)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", entry_id)[:100] or "dead-letter"
    return web.Response(
        body=raw,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}.raw"'},
    )


# -- workers --------------------------------------------------------------------------------------------------------


async def workers_context(request: web.Request) -> dict[str, Any]:
    inspector = request.app[INSPECTOR_KEY]
    names = await inspector.queue_names()
    lists = await per_queue(inspector.workers, names)
    return {"groups": [(name, workers) for name, workers in zip(names, lists, strict=True) if workers]}


async def workers_page(request: web.Request) -> web.Response:
    return render_html(request, "workers.html", await workers_context(request))


async def workers_fragment(request: web.Request) -> web.Response:
    return render_html(request, "fragments/workers.html", await workers_context(request))


def setup(app: web.Application) -> None:
    add = app.router.add_get
    add("/", overview, name="overview")
    add("/fragments/overview", overview_fragment, name="overview_fragment")
    add("/workers", workers_page, name="workers")
    add("/fragments/workers", workers_fragment, name="workers_fragment")
    add("/queues/{queue}", queue_page, name="queue")
    add("/fragments/queues/{queue}", queue_fragment, name="queue_fragment")
    add("/queues/{queue}/tasks/{task_id}", task_page, name="task")
    add("/fragments/queues/{queue}/tasks/{task_id}", task_fragment, name="task_fragment")
    add("/queues/{queue}/dead/{entry_id}", dead_letter_page, name="dead_letter")
    add("/queues/{queue}/dead/{entry_id}/raw", dead_letter_raw, name="dead_letter_raw")
