"""Commands that run or describe a worker: `run`, `plugins`, `config`."""

from __future__ import annotations

import sys

import click

from gopherq.cli.common import config_option, echo_json, handle_errors, json_option, queue_option, settings_from
from gopherq.cli.root import cli
from gopherq.core.plugins import load_plugins
from gopherq.core.runner import run_worker


@cli.command()
@config_option
@queue_option
@click.option("--concurrency", "-n", type=int, default=None, help="tasks in flight (worker.concurrency)")
@click.option("--processes", "-p", type=int, default=None, help="worker processes (worker.processes)")
@handle_errors
def run(config: str | None, queue: str | None, concurrency: int | None, processes: int | None) -> None:
    """Run a worker until SIGTERM/SIGINT (SIGTSTP: stop fetching).

    With --processes N, a supervisor runs N worker processes, forwards those signals and restarts a process
    that dies."""
    settings = settings_from(
        config, **{"queue.name": queue, "worker.concurrency": concurrency, "worker.processes": processes}
    )
    sys.exit(run_worker(settings))


@cli.command()
@config_option
@json_option
@handle_errors
def plugins(config: str | None, as_json: bool) -> None:
    """List loaded plugins: distribution, version, module, hooks, and what each registered."""
    settings = settings_from(config)
    manager = load_plugins(settings, sinks=True)
    manager.register_commands(click.Group())  # a scratch group: records each plugin's commands by name
    rows = [info.to_dict() for info in manager.info.values()]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        if row["path"]:
            dist = f"from {row['path']}"
        else:
            dist = f"{row['distribution']} {row['version']}" if row["distribution"] else "(source tree)"
        click.echo(f"{row['name']}  {dist}  module {row['module']}{'  [built-in]' if row['builtin'] else ''}")
        for key in ("executors", "sinks", "settings", "commands", "hooks"):
            if row[key]:
                click.echo(f"    {key}: {', '.join(row[key])}")
    for name in sorted(manager.blocked):
        click.echo(f"{name}  (installed, not loaded: disabled or not in GOPHERQ_LOAD_PLUGINS)")


@cli.command()
@config_option
@handle_errors
def config(config: str | None) -> None:
    """Print the effective settings (secrets masked) as JSON."""
    settings = settings_from(config)
    load_plugins(settings)
    echo_json(settings.redacted())
