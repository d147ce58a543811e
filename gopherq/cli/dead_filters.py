"""The dead-letter filter options of `dlq list`, `dlq requeue` and `dlq delete` (--reason, --host, --status, --text,
--older-than, --newer-than), and the filtered bulk actions.

A filtered action goes through the dead-letter queue one bounded window at a time (core/inspect/selection.py), so
each Redis call costs the same however many there are; every change is recorded with `user@host` as its actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from gopherq.cli.common import echo_json, run_async, settings_from, with_client
from gopherq.client import AsyncClient
from gopherq.core.audit import Actor
from gopherq.core.inspect.selection import DeadFilter

F = TypeVar("F", bound=Callable[..., Any])

#: Most windows a filtered CLI action goes through (a million dead letters at SCAN_WINDOW each: more than any cap).
_MAX_WINDOWS = 1000


def filter_options(func: F) -> F:
    """The filter options, gathered into one `where` argument (a DeadFilter; ConfigError for a bad value)."""
    options = [
        click.option("--reason", default=None, help="dead-letter reason code, e.g. retries_exhausted"),
        click.option("--host", default=None, help="host of the task's URL"),
        click.option("--status", default=None, help="HTTP status code of the last error"),
        click.option("--text", default=None, help="text in the error (case-insensitive)"),
        click.option("--older-than", default=None, help="died longer ago than this: 90s, 15m, 2h, 1d"),
        click.option("--newer-than", default=None, help="died within this: 90s, 15m, 2h, 1d"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def where_from(values: dict[str, Any]) -> DeadFilter:
    return DeadFilter.from_mapping({name: values.get(name) for name in DeadFilter.FIELDS})


async def _bulk(client: AsyncClient, queue: str, action: str, where: DeadFilter) -> dict[str, int]:
    operator = client.inspect.operator(Actor.cli(), client.bus)
    totals = {"matched": 0, "done": 0, "scanned": 0}
    cursor = None
    for _ in range(_MAX_WINDOWS):
        outcome = await operator.bulk(queue, action, where, cursor)
        for key in totals:
            totals[key] += getattr(outcome, key)
        cursor = outcome.next_cursor
        if cursor is None:
            break
    return totals


def run_bulk(config: str | None, queue: str | None, action: str, where: DeadFilter, as_json: bool) -> None:
    """Requeue or delete every dead letter matching `where`, window by window, and say how many."""
    settings = settings_from(config)
    name = queue or settings.queue.name
    totals = run_async(with_client(settings, queue, lambda client: _bulk(client, name, action, where), sinks=True))
    verb = "requeued" if action == "requeue" else "deleted"
    if as_json:
        echo_json({verb: totals["done"], "matched": totals["matched"], "scanned": totals["scanned"]})
    else:
        click.echo(f"{verb} {totals['done']} of {totals['matched']} matching ({totals['scanned']} looked at)")
