"""Commands that steer tasks: `cancel`, and `schedules` (the periodic tasks and their next runs)."""

from __future__ import annotations

import sys
import time

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
from gopherq.core.audit import Actor

#: What `cancel` prints for each outcome of `AsyncClient.cancel`.
CANCEL_MESSAGES = {
    "cancelled": "cancelled: it was waiting (delayed or for a retry) and is removed",
    "requested": "cancel requested: it will not start, or its running attempt stops within a second",
    "finished": "not cancelled: it had already finished",
}


@cli.command()
@config_option
@queue_option
@json_option
@click.argument("task_id")
@handle_errors
def cancel(config: str | None, queue: str | None, as_json: bool, task_id: str) -> None:
    """Cancel a ready, delayed or running task (exit 1 when it had already finished, or is not known at all)."""
    settings = settings_from(config)
    name = queue or settings.queue.name

    async def action(client: AsyncClient) -> str:
        return await client.inspect.operator(Actor.cli(), client.bus).cancel(name, task_id)

    outcome = run_async(with_client(settings, queue, action, sinks=True))
    if as_json:
        echo_json({"id": task_id, "outcome": outcome})
    else:
        click.echo(f"{task_id}: {CANCEL_MESSAGES[outcome]}")
    if outcome == "finished":
        sys.exit(1)


@cli.command()
@config_option
@json_option
@handle_errors
def schedules(config: str | None, as_json: bool) -> None:
    """List the periodic schedules with their last slot, next run time and last success (LATE when a slot came
    due more than a minute ago and no worker enqueued it)."""
    settings = settings_from(config)
    rows = run_async(with_client(settings, None, lambda client: client.schedules()))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no schedules (add [[schedules]] tables to the config)")
    for row in rows:
        late = row["next_slot"] is not None and row["next_slot"] < time.time() - 60
        click.echo(
            f"{row['name']}: {row['rule']} -> {row['queue']}, next {when(row['next_run'])}, "
            f"last {when(row['last_slot'])} ({row.get('last_outcome') or 'no result'}), "
            f"last success {when(row['last_success'])}, catch_up {row['catch_up']}"
            + ("  PAUSED" if row.get("paused") else "")
            + (f"  LATE: the slot of {when(row['next_slot'])} was not enqueued (no worker?)" if late else "")
        )
