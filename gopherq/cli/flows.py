"""Commands for flows (DAGs of tasks): `flow ID` shows one with each member's state, `flows` lists the queue's."""

from __future__ import annotations

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    fail,
    handle_errors,
    json_option,
    queue_option,
    run_async,
    settings_from,
    when,
    with_client,
)
from gopherq.cli.root import cli


@cli.command()
@config_option
@queue_option
@click.argument("flow_id")
@json_option
@handle_errors
def flow(config: str | None, queue: str | None, flow_id: str, as_json: bool) -> None:
    """Show a flow: its state and each member's (exit 1 when there is no such flow)."""
    settings = settings_from(config)
    view = run_async(with_client(settings, queue, lambda client: client.flows.get(flow_id)))
    if view is None:
        fail(f"no flow {flow_id} (unknown, or expired after it finished)", 1)
        return
    if as_json:
        echo_json(view.to_dict())
        return
    click.echo(f"{view.id}: {view.state} - {view.size} tasks, {view.open} not final - created {when(view.created)}")
    parents = view.parents()
    for member in sorted(view.members, key=lambda m: m.node):
        after = f" after {', '.join(sorted(parents[member.node]))}" if parents[member.node] else ""
        policy = f" [{member.join.policy}]" if member.join else ""
        click.echo(f"  {member.node:<24} {member.state:<10} {member.task_id}{after}{policy}")


@cli.command()
@config_option
@queue_option
@click.option("--limit", type=int, default=100, show_default=True, help="at most this many open and finished each")
@json_option
@handle_errors
def flows(config: str | None, queue: str | None, limit: int, as_json: bool) -> None:
    """List the queue's flows, open ones first, newest first."""
    settings = settings_from(config)
    listed = run_async(with_client(settings, queue, lambda client: client.flows.list(limit=limit)))
    if as_json:
        echo_json(listed)
        return
    if not listed:
        click.echo("no flows")
    for item in listed:
        click.echo(f"{item['id']:<40} {item['state']:<10} {item['size']:>7} tasks  {when(item['created_at'])}")
