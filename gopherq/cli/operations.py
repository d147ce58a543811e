"""Operator commands of the console's pages: a schedule's run now / pause / resume, a destination's close circuit /
reset rate, run now / delete of one waiting task, and the Redis server's facts. Each calls the inspection layer the
dashboard and the API call (gopherq/core/inspect): each action through its Operator, recorded as an `operator.action`
event naming `user@host` (core/audit.py); a name or id that matches nothing exits 1 with one line."""

from __future__ import annotations

from typing import Any

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
    with_client,
)
from gopherq.cli.root import cli
from gopherq.core.audit import Actor


@cli.command()
@config_option
@json_option
@click.argument("action", type=click.Choice(["run", "pause", "resume"]))
@click.argument("name")
@handle_errors
def schedule(config: str | None, as_json: bool, action: str, name: str) -> None:
    """Run a schedule's task once now, or pause / resume the schedule (its slots pass without a task meanwhile)."""
    settings = settings_from(config)

    async def act(client: Any) -> str | None:
        operator = client.inspect.operator(Actor.cli(), client.bus)
        if action == "run":
            return await operator.run_schedule(name)  # type: ignore[no-any-return]
        await operator.pause_schedule(name, action == "pause")
        return None

    task_id = run_async(with_client(settings, None, act, sinks=True))
    if as_json:
        echo_json({"name": name, "action": action, "id": task_id})
    elif action == "run":
        if task_id is None:
            fail(f"schedule {name!r}: not enqueued: its unique task is still queued or running", 1)
        click.echo(f"{name}: enqueued {task_id}")
    else:
        click.echo(f"{name}: {action}d")


@cli.command()
@config_option
@queue_option
@click.argument("action", type=click.Choice(["close", "reset"]))
@click.argument("key")
@handle_errors
def host(config: str | None, queue: str | None, action: str, key: str) -> None:
    """Close a destination's circuit now (`close`), or put it back at its full configured rate (`reset`), on the
    queue given with -q or on every queue that knows it."""
    settings = settings_from(config)

    async def act(client: Any) -> list[str]:
        operator = client.inspect.operator(Actor.cli(), client.bus)
        method = operator.close_circuit if action == "close" else operator.reset_rate
        return await method(key, queue)  # type: ignore[no-any-return]

    queues = run_async(with_client(settings, queue, act, sinks=True))
    if not queues:
        fail(f"no destination {key!r} on {queue or 'any queue'} (see `gopherq hosts`)", 1)
    done = "circuit closed" if action == "close" else "rate reset"
    click.echo(f"{key}: {done} on {', '.join(queues)}")


def _task_command(name: str, action: str, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
    @config_option
    @queue_option
    @click.argument("task_id")
    @handle_errors
    def command(config: str | None, queue: str | None, task_id: str) -> None:
        settings = settings_from(config)

        async def act(client: Any) -> str:
            operator = client.inspect.operator(Actor.cli(), client.bus)
            method = operator.run_now if action == "run" else operator.delete_task
            return await method(client.queue, task_id)  # type: ignore[no-any-return]

        if run_async(with_client(settings, queue, act, sinks=True)) != "done":
            fail(f"task {task_id!r} is not waiting (not ready or delayed: it runs, ended or never was)", 1)
        click.echo(f"{task_id}: " + ("moved to the head of its ready list" if action == "run" else "deleted"))


_task_command("run-now", "run", "Move a ready or delayed task to the head of its ready list (exit 1: not waiting).")
_task_command("delete-task", "delete", "Delete a ready or delayed task, recorded as cancelled (exit 1: not waiting).")


@cli.command(name="redis")
@config_option
@json_option
@handle_errors
def redis_info(config: str | None, as_json: bool) -> None:
    """The Redis server: version, role, memory and maxmemory policy, clients, persistence, and the risks `check`
    warns of."""
    settings = settings_from(config)
    facts = run_async(with_client(settings, None, lambda client: client.inspect.server()))
    if as_json:
        echo_json(facts)
        return
    for section in ("server", "replication", "memory", "clients", "persistence", "stats"):
        values = facts.get(section, {})
        click.echo(f"{section}: " + ", ".join(f"{key}={value}" for key, value in values.items()))
    for warning in facts.get("warnings", []):
        click.echo(f"warning: {warning}")
