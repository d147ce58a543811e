"""The `dlq` command group: list, show, requeue and purge dead letters."""

from __future__ import annotations

import sys
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
    when,
    with_client,
)
from gopherq.cli.dead_filters import filter_options, run_bulk, where_from
from gopherq.cli.root import cli
from gopherq.client import AsyncClient
from gopherq.core.audit import Actor


@cli.group()
def dlq() -> None:
    """Inspect and manage the dead-letter queue."""


@dlq.command("list")
@config_option
@queue_option
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True, help="skip this many (newest first)")
@filter_options
@click.option("--cursor", type=float, default=None, help="with a filter: go on from this `next_cursor`")
@json_option
@handle_errors
def dlq_list(
    config: str | None, queue: str | None, limit: int, offset: int, cursor: float | None, as_json: bool, **filters: Any
) -> None:
    """List dead letters, newest first; with filter options, the matching ones among the next 1,000 (the line on
    stderr says the --cursor to go on with)."""
    settings = settings_from(config)
    where = where_from(filters)
    if not where.empty:
        name = queue or settings.queue.name
        page = run_async(with_client(settings, queue, lambda c: c.inspect.dead(name, 0, limit, where, cursor)))
        if as_json:
            echo_json(page.to_dict())
            return
        for line in page.items:
            status = f"  HTTP {line.status}" if line.status else ""
            click.echo(
                f"{line.entry_id}  {when(line.died_at)}  {line.reason}  {line.host or '-'}{status}  {line.error}"
            )
        more = f"; go on with --cursor {page.next_cursor}" if page.next_cursor is not None else ""
        click.echo(f"{len(page.items)} matching dead letter(s){more}", err=True)
        return

    async def action(client: AsyncClient) -> tuple[list[dict[str, Any]], int, int]:
        dead = client.dead_letters
        return await dead.list(limit, offset), await dead.count(), await dead.trimmed()

    entries, total, trimmed = run_async(with_client(settings, queue, action))
    if as_json:
        echo_json(entries)
        return
    for entry in entries:
        message = str(entry.get("error", {}).get("message", ""))
        click.echo(
            f"{entry['id']}  {when(entry.get('dead_at'))}  {entry['reason']}  attempts={entry['attempts']}  "
            f"{message[:160]}"
        )
    note = f", {trimmed} older ones trimmed" if trimmed else ""
    click.echo(f"{len(entries)} of {total} dead letters shown{note}", err=True)


@dlq.command("show")
@config_option
@queue_option
@click.argument("entry_id")
@json_option
@handle_errors
def dlq_show(config: str | None, queue: str | None, entry_id: str, as_json: bool) -> None:
    """Show one dead letter in full: why it died, the last error, and the task as received."""
    settings = settings_from(config)
    entry = run_async(with_client(settings, queue, lambda client: client.dead_letters.get(entry_id)))
    if entry is None:
        fail(f"no dead letter {entry_id}", 1)
        return
    if as_json:
        echo_json(entry)
        return
    error = entry.get("error") or {}
    for label, value in (
        ("id", entry["id"]),
        ("task", entry.get("task_id") or "-"),
        ("type", entry.get("type") or "-"),
        ("reason", entry["reason"]),
        ("attempts", entry.get("attempts")),
        ("dead at", when(entry.get("dead_at"))),
        ("worker", entry.get("worker") or "-"),
        ("error", f"{error.get('reason')}: {error.get('message')}"),
    ):
        click.echo(f"{label + ':':10} {value}")
    details = error.get("details") or {}
    if "status_code" in details:
        click.echo(f"{'response:':10} HTTP {details['status_code']}")
        if details.get("body"):
            click.echo(f"{'body:':10} {details['body']}")
    click.echo(f"{'raw:':10} {entry.get('raw', '(base64) ' + str(entry.get('raw_base64', '')))}")


@dlq.command("requeue")
@config_option
@queue_option
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "requeue_all", is_flag=True, help="requeue every dead letter")
@filter_options
@json_option
@handle_errors
def dlq_requeue(
    config: str | None,
    queue: str | None,
    entry_ids: tuple[str, ...],
    requeue_all: bool,
    as_json: bool,
    **filters: Any,
) -> None:
    """Requeue dead letters at the tail of the queue (attempts reset, task id kept): the given ids, --all, or every
    one matching the filter options. Exit 1 when an id is not a dead letter, or is one that cannot be requeued (a
    too_large task: only a prefix of it was kept)."""
    where = where_from(filters)
    if bool(entry_ids) + requeue_all + (not where.empty) != 1:
        raise click.UsageError("give entry ids or --all (or filter options: --reason, --host, --status, --text, ...)")
    if not where.empty:
        run_bulk(config, queue, "requeue", where, as_json)
        return
    settings = settings_from(config)
    name = queue or settings.queue.name
    ids = None if requeue_all else list(entry_ids)
    show_progress = not as_json and sys.stdout.isatty()

    async def action(client: AsyncClient) -> int:
        operator = client.inspect.operator(Actor.cli(), client.bus)
        if not show_progress:
            return await operator.requeue(name, ids)
        total = len(ids) if ids is not None else await client.dead_letters.count()
        with click.progressbar(length=total, label="requeueing", file=sys.stderr) as bar:
            return await operator.requeue(name, ids, progress=bar.update)

    moved = run_async(with_client(settings, queue, action, sinks=True))
    missing = 0 if requeue_all else len(entry_ids) - moved
    report_count("requeued", moved, missing, as_json, "not found, or too large to requeue")


@dlq.command("purge")
@config_option
@queue_option
@click.option("--yes", is_flag=True, help="do not ask")
@json_option
@handle_errors
def dlq_purge(config: str | None, queue: str | None, yes: bool, as_json: bool) -> None:
    """Delete every dead letter of the queue."""
    if not yes:
        click.confirm("delete every dead letter?", abort=True)
    settings = settings_from(config)
    count = run_async(with_client(settings, queue, lambda client: client.dead_letters.purge()))
    if as_json:
        echo_json({"purged": count})
    else:
        click.echo(f"purged {count}")
