"""Inspection commands: `queues`, `workers`, `task`, `events` and `pause`/`resume`, all through the Inspector."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

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
from gopherq.client import AsyncClient
from gopherq.core.audit import Actor
from gopherq.core.inspect import ORPHANED_NOTE, QueueInfo, StreamEvent, TaskInfo
from gopherq.core.whereabouts import where_text


def _age(stamp: float | None) -> str:
    return "-" if stamp is None else f"{max(0.0, time.time() - stamp):.1f}s"


def _event_line(event: StreamEvent) -> str:
    return f"{when(event.timestamp)} {event.to_text()}"


@cli.command()
@config_option
@click.option("--scan", is_flag=True, help="first register queues found by one SCAN of every key (slow on big Redis)")
@json_option
@handle_errors
def queues(config: str | None, scan: bool, as_json: bool) -> None:
    """Every queue that has anything: sizes, latency, pause state, live workers, orphaned tasks and outcome
    totals. DELAYED splits into RETRYING, SCHEDULED (an eta) and HELD (by flow control); `~` marks a split
    estimated from the soonest-due part of a very large delayed set."""
    settings = settings_from(config)

    async def action(client: AsyncClient) -> list[QueueInfo]:
        if scan:
            found = await client.inspect.discover()
            click.echo(f"--scan: {len(found)} queue(s) registered: {' '.join(found) or '-'}", err=True)
        return await client.inspect.queues()

    infos = run_async(with_client(settings, None, action))
    if as_json:
        echo_json([info.to_dict() for info in infos])
        return
    header = (
        "QUEUE READY DELAYED RETRYING SCHEDULED HELD RUNNING ORPHANED DEAD LATENCY WORKERS SUCCEEDED FAILED STATE"
    ).split()
    rows = [
        (
            info.name,
            info.ready,
            info.delayed,
            f"{info.retrying}" + ("" if info.delayed_exact else "~"),
            f"{info.scheduled}" + ("" if info.delayed_exact else "~"),
            f"{info.held}" + ("" if info.delayed_exact else "~"),
            info.running,
            info.orphaned,
            info.dead,
            f"{info.latency:.1f}s",
            info.workers,
            info.totals["succeeded"],
            info.totals["failed"],
            "paused" if info.paused else "active",
        )
        for info in infos
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for info in infos:
        if info.orphaned:
            click.echo(f"{info.name}: {info.orphaned} orphaned task(s), {ORPHANED_NOTE}", err=True)


@cli.command()
@config_option
@queue_option
@json_option
@handle_errors
def workers(config: str | None, queue: str | None, as_json: bool) -> None:
    """The queue's workers: host, pid, heartbeat age, running tasks and counters."""
    settings = settings_from(config)
    name = queue or settings.queue.name
    found = run_async(with_client(settings, queue, lambda client: client.inspect.workers(name)))
    if as_json:
        echo_json([worker.to_dict() for worker in found])
        return
    for worker in found:
        state = "alive" if worker.alive else "silent"
        click.echo(
            f"{worker.id}  {state}  host={worker.host} pid={worker.pid}  heartbeat {_age(worker.last_heartbeat)} ago  "
            f"running {worker.running_count}/{worker.concurrency}"
            + (f" (+{worker.staged_count} staged)" if worker.staged_count else "")
            + f"  up since {when(worker.started)}"
        )
        if worker.stats:
            click.echo("    " + " ".join(f"{key}={value}" for key, value in worker.stats.items()))
        for task in worker.running[:20]:
            staged = "  staged" if task.staged else ""
            click.echo(f"    {task.task_id}  token {task.token}  for {_age(task.since)}{staged}")
    click.echo(f"{len(found)} worker(s) on {name}")


@cli.command()
@config_option
@queue_option
@click.argument("task_id")
@click.option("--events", "event_count", type=int, default=20, show_default=True, help="last events to show")
@click.option("--explain", is_flag=True, help="only say the one thing the task waits for")
@json_option
@handle_errors
def task(config: str | None, queue: str | None, task_id: str, event_count: int, explain: bool, as_json: bool) -> None:
    """Everything known about one task: where it is, what it waits for, its envelope (secrets masked), result, dead
    letter and last events. Exit 1 when nothing is known."""
    settings = settings_from(config)
    name = queue or settings.queue.name
    if explain:
        why = run_async(with_client(settings, queue, lambda client: client.inspect.explain(name, task_id)))
        if why is None:
            fail(f"nothing known about task {task_id} on queue {name}", 1)
            return
        if as_json:
            echo_json(why.to_dict())
        else:
            click.echo(f"{task_id} ({why.state}): {why.message}")
        return

    async def action(client: AsyncClient) -> TaskInfo | None:
        return await client.inspect.task(name, task_id, events=event_count)

    info = run_async(with_client(settings, queue, action))
    if info is None:
        fail(f"nothing known about task {task_id} on queue {name}", 1)
        return
    if as_json:
        echo_json(info.to_dict())
        return
    click.echo(f"{'task:':10} {info.id}")
    click.echo(f"{'queue:':10} {info.queue}")
    click.echo(f"{'state:':10} {info.state}" + (f" ({ORPHANED_NOTE})" if info.state == "orphaned" else ""))
    click.echo(f"{'type:':10} {info.type or '-'}")
    if info.where is not None:
        click.echo(f"{'where:':10} {where_text(info.where, when)}")
    if info.worker:
        click.echo(f"{'worker:':10} {info.worker} (for {_age(info.since)})")
    if info.note:
        click.echo(f"{'note:':10} {info.note}")
    if info.envelope is not None:
        click.echo(f"{'envelope:':10} {json.dumps(info.envelope, default=str)}")
    call = info.call
    if call is not None:
        click.echo(f"{'called:':10} {json.dumps(call, default=str)}")
    if info.result is not None:
        click.echo(f"{'result:':10} {json.dumps(info.result, default=str)}")
    if info.dead_letter is not None:
        error = info.dead_letter.get("error") or {}
        click.echo(f"{'dead:':10} {info.dead_letter.get('reason')}: {error.get('message')}")
    for event in info.events:
        click.echo(f"  {_event_line(event)}")


@cli.command()
@config_option
@queue_option
@click.option("--task", "task_id", default=None, help="only this task's events")
@click.option("--count", "-n", type=int, default=50, show_default=True, help="how many of the latest to show")
@click.option("--follow", "-f", is_flag=True, help="then keep printing new events until interrupted")
@json_option
@handle_errors
def events(config: str | None, queue: str | None, task_id: str | None, count: int, follow: bool, as_json: bool) -> None:
    """The queue's latest events from its stream (with --follow, then new ones as they come). With --json, one
    JSON object per line."""
    settings = settings_from(config)
    name = queue or settings.queue.name

    def show(event: StreamEvent) -> None:
        click.echo(json.dumps(event.to_dict(), default=str) if as_json else _event_line(event))

    async def action(client: AsyncClient) -> None:
        # With --follow, Ctrl-C or SIGTERM ends the command between two reads (cancelling a Redis call mid-way can
        # leave its connection in a state where closing it never finishes).
        stop = asyncio.Event()
        if follow:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        inspect = client.inspect
        latest = await inspect.events(name, count=count, task_id=task_id, latest=True)
        for event in latest:
            show(event)
        if follow:
            after = latest[-1].id if latest else await inspect.last_event_id(name)
            async for event in inspect.follow(name, after=after, task_id=task_id, block=0.5, stop=stop):
                show(event)
                sys.stdout.flush()

    run_async(with_client(settings, queue, action))


def _set_paused(config: str | None, queue: str | None, paused: bool, as_json: bool) -> None:
    """Exit 1 with one line, changing nothing, when the queue is not known (a typo)."""
    settings = settings_from(config)
    name = queue or settings.queue.name

    async def action(client: AsyncClient) -> None:
        operator = client.inspect.operator(Actor.cli(), client.bus)
        await (operator.pause(name) if paused else operator.resume(name))

    run_async(with_client(settings, name, action, sinks=True))
    if as_json:
        echo_json({"queue": name, "paused": paused})
    else:
        click.echo(f"{name}: {'paused' if paused else 'resumed'}")


@cli.command()
@config_option
@click.argument("queue", required=False)
@json_option
@handle_errors
def pause(config: str | None, queue: str | None, as_json: bool) -> None:
    """Pause a queue (default: queue.name): workers stop claiming from it within a second; running tasks
    finish. Enqueueing goes on."""
    _set_paused(config, queue, True, as_json)


@cli.command()
@config_option
@click.argument("queue", required=False)
@json_option
@handle_errors
def resume(config: str | None, queue: str | None, as_json: bool) -> None:
    """Resume a paused queue: workers claim from it again within a second."""
    _set_paused(config, queue, False, as_json)
