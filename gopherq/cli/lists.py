"""`gopherq tasks KIND`: a page of a queue's ready, delayed (all, or retrying / scheduled / held) or running tasks,
each delayed one saying why it waits; all through the Inspector."""

from __future__ import annotations

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    handle_errors,
    json_option,
    queue_option,
    run_async,
    settings_from,
    when,
    with_client,
)
from gopherq.cli.root import cli
from gopherq.client import AsyncClient
from gopherq.core.errors import ConfigError
from gopherq.core.inspect import ORPHANED_NOTE, WAITING_KINDS, Page, TaskSummary
from gopherq.core.inspect.ready_list import ReadyCursor

KINDS = ("ready", "delayed", *WAITING_KINDS, "running")


def _why(item: TaskSummary) -> str:
    """What a delayed line waits for, in a few words."""
    if item.waiting == "retrying":
        most = f" of {item.max_attempts}" if item.max_attempts else ""
        return f"retry {item.attempt}{most} due {when(item.due_at)} after {item.last_error or '?'}"
    if item.waiting == "held" and item.held:
        return f"held by the {item.held['limit']} of {item.held['key']} until {when(item.held['until'])}"
    return f"scheduled for {when(item.due_at)}"


@cli.command("tasks")
@config_option
@queue_option
@click.argument("kind", type=click.Choice(KINDS), default="ready")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--cursor", default=None, help="ready: go on from a page's next_cursor (past many fair keys)")
@json_option
@handle_errors
def tasks_list(
    config: str | None, queue: str | None, kind: str, limit: int, offset: int, cursor: str | None, as_json: bool
) -> None:
    """A page of the queue's tasks: ready (most urgent level first; within a level the tasks without a fair key,
    then each fair key's by turn), delayed (soonest first; or only the retrying, scheduled or held ones, found among
    the first 10,000), or running."""
    settings = settings_from(config)
    name = queue or settings.queue.name
    if cursor is not None:
        if kind != "ready":
            raise ConfigError("--cursor goes with ready (a ready page's next_cursor)")
        try:
            ReadyCursor.decode(cursor)
        except ValueError as exc:
            raise ConfigError(f"--{exc}") from None

    async def action(client: AsyncClient) -> Page[TaskSummary]:
        inspect = client.inspect
        if kind == "ready":
            return await inspect.ready(name, offset, limit, cursor)
        if kind in WAITING_KINDS:
            return await inspect.delayed(name, offset, limit, kind=kind)
        read = {"delayed": inspect.delayed, "running": inspect.running}[kind]
        return await read(name, offset, limit)

    page = run_async(with_client(settings, queue, action))
    if as_json:
        echo_json(page.to_dict())
        return
    for item in page.items:
        if item.state == "delayed":
            tail = _why(item)
        elif item.state in ("running", "staged", "orphaned"):
            tail = f"{item.state} on {item.worker or '?'} since {when(item.since)}"
            tail += f" ({ORPHANED_NOTE})" if item.state == "orphaned" else ""
        else:
            tail = f"ready since {when(item.enqueued_at)}"
            tail += f" in fair key {item.fair_key}" if item.fair_key is not None else ""
        click.echo(f"{item.id or '-'}  {item.summary}  {tail}")
    more = f"; go on with --cursor {page.next_cursor}" if page.next_cursor is not None else ""
    click.echo(f"{len(page.items)} of {page.total} {kind} task(s) shown (from {page.offset}){more}", err=True)
