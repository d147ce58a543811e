"""`dlq delete` (by id or by filter), and a dead task copied (`dlq curl`) or edited and requeued (`dlq edit`); every
change is recorded with `user@host` as its actor (core/audit.py)."""

from __future__ import annotations

import json
from typing import Any

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    fail,
    handle_errors,
    json_option,
    queue_option,
    report_count,
    run_async,
    settings_from,
    with_client,
)
from gopherq.cli.dead_filters import filter_options, run_bulk, where_from
from gopherq.cli.dlq import dlq
from gopherq.client import AsyncClient
from gopherq.core import codec
from gopherq.core.audit import Actor
from gopherq.core.inspect.editing import editable, render_command


@dlq.command("delete")
@config_option
@queue_option
@click.argument("entry_ids", nargs=-1)
@filter_options
@click.option("--yes", is_flag=True, help="do not ask")
@json_option
@handle_errors
def dlq_delete(
    config: str | None, queue: str | None, entry_ids: tuple[str, ...], yes: bool, as_json: bool, **filters: Any
) -> None:
    """Delete dead letters: the given ids, or every one matching the filter options. Exit 1 when a given id is
    not a dead letter."""
    where = where_from(filters)
    if bool(entry_ids) == (not where.empty):
        raise click.UsageError("give entry ids or filter options (--reason, --host, --status, --text, ...)")
    if not where.empty:
        if not yes:
            click.confirm(f"delete every dead letter matching {where.to_dict()}?", abort=True)
        run_bulk(config, queue, "delete", where, as_json)
        return
    settings = settings_from(config)
    name = queue or settings.queue.name

    async def action(client: AsyncClient) -> int:
        return await client.inspect.operator(Actor.cli(), client.bus).delete(name, list(entry_ids))

    count = run_async(with_client(settings, queue, action, sinks=True))
    report_count("deleted", count, len(entry_ids) - count, as_json)


@dlq.command("curl")
@config_option
@queue_option
@click.argument("entry_id")
@handle_errors
def dlq_curl(config: str | None, queue: str | None, entry_id: str) -> None:
    """Print a dead task as the command that repeats it (for an HTTP task: curl), secrets masked. Exit 1 when its
    executor renders none."""
    settings = settings_from(config)
    name = queue or settings.queue.name

    async def action(client: AsyncClient) -> str | None:
        return await render_command(client.inspect, client.plugins, name, entry_id)

    command = run_async(with_client(settings, queue, action))
    if command is None:
        fail(f"dead letter {entry_id}: its task type renders no command", 1)
        return
    click.echo(command)


@dlq.command("edit")
@config_option
@queue_option
@click.argument("entry_id")
@click.option("--from", "source", type=click.File("r"), default=None, help="the edited task (JSON) from a file, or -")
@json_option
@handle_errors
def dlq_edit(config: str | None, queue: str | None, entry_id: str, source: Any, as_json: bool) -> None:
    """Edit a dead task and enqueue the edit as a new task; the dead letter is kept. Opens $EDITOR on the task
    (secrets masked: values left masked keep their stored secret), or reads the edit from --from."""
    settings = settings_from(config)
    name = queue or settings.queue.name
    if source is not None:
        text = source.read()
    else:
        shown = run_async(with_client(settings, queue, lambda client: editable(client.inspect, name, entry_id)))
        text = click.edit(json.dumps(shown, indent=2), extension=".json") or ""
        if not text.strip():
            fail("nothing saved: no task enqueued", 1)
            return
    try:
        edited = codec.loads(text)
    except codec.JSONDecodeError as exc:
        fail(f"the edited task is not JSON: {exc}", 2)
        return

    async def action(client: AsyncClient) -> str:
        async def submit(envelope: dict[str, Any]) -> str:
            return await client.enqueue_raw(codec.dumps(envelope), name)

        return await client.inspect.operator(Actor.cli(), client.bus).edit_requeue(name, entry_id, edited, submit)

    new_id = run_async(with_client(settings, queue, action, sinks=True))
    if as_json:
        echo_json({"id": new_id, "edited_from": entry_id})
    else:
        click.echo(f"enqueued {new_id} (an edit of dead letter {entry_id}, which is kept)")
