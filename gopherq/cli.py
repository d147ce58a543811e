"""The `gopherq` command line: parses arguments, loads settings and plugins, calls the core, prints."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gopherq.client import AsyncClient
from gopherq.core.embedded import EmbeddedRedis
from gopherq.core.errors import BrokerUnavailable, ConfigError, PluginError, TaskRejected
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.runner import configure_logging, run_worker
from gopherq.core.settings import Settings, load_settings
from gopherq.core.task import parse_json

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

config_option = click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="GOPHERQ_CONFIG",
    help="TOML config file (default: none; settings from the environment)",
)
queue_option = click.option("--queue", "-q", default=None, help="queue name (default: queue.name)")
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable JSON output")


def fail(message: str, status: int) -> None:
    click.echo(f"gopherq: error: {message}", err=True)
    sys.exit(status)


def handle_errors(func: F) -> F:
    """Map GoPherQ errors to one line on stderr: status 2 for bad settings, plugins or input, 1 for Redis
    (unreachable, or the embedded server cannot start)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, PluginError) as exc:
            fail(str(exc), 2)
        except TaskRejected as exc:
            fail(f"{exc.reason}: {exc.message}", 2)
        except BrokerUnavailable as exc:
            fail(str(exc), 1)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            fail(f"Redis unavailable: {exc}", 1)

    return wrapper  # type: ignore[return-value]


def settings_from(config: str | None, **flags: Any) -> Settings:
    overrides: dict[str, Any] = {}
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    settings = load_settings(config, overrides)
    configure_logging(settings.logging.level)
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def with_client(
    settings: Settings,
    queue: str | None,
    action: Callable[[AsyncClient], Coroutine[Any, Any, T]],
    *,
    sinks: bool = False,
) -> T:
    async with AsyncClient(settings, queue=queue, sinks=sinks) as client:
        return await action(client)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.version_option(package_name="gopherq")
def cli() -> None:
    """GoPherQ: a task queue on Redis whose first-class task is an HTTP call."""


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
@queue_option
@click.option("--url", required=True, help="URL to call")
@click.option("--method", "-X", default="GET", show_default=True)
@click.option("--header", "-H", "headers", multiple=True, help="'Name: value' (repeatable)")
@click.option("--body", default=None, help="request body (text)")
@click.option("--json-body", default=None, help="request body (JSON)")
@click.option("--id", "task_id", default=None, help="task id (default: generated)")
@click.option("--delay", type=float, default=None, help="run after this many seconds")
@click.option("--max-attempts", type=int, default=None)
@click.option("--timeout", type=float, default=None, help="time limit of one attempt, seconds")
@click.option("--wait", "wait", type=float, default=None, help="wait this many seconds for the result")
@handle_errors
def enqueue(
    config: str | None,
    queue: str | None,
    url: str,
    method: str,
    headers: tuple[str, ...],
    body: str | None,
    json_body: str | None,
    task_id: str | None,
    delay: float | None,
    max_attempts: int | None,
    timeout: float | None,
    wait: float | None,
) -> None:
    """Enqueue an HTTP task and print its id (with --wait, then its result)."""
    settings = settings_from(config)
    parsed_headers: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {header!r}", param_hint="--header")
        parsed_headers[name.strip()] = value.strip()
    if body is not None and json_body is not None:
        raise click.UsageError("give --body or --json-body, not both")
    payload: Any = body
    if json_body is not None:
        payload = parse_json(json_body)  # rejected exactly as a worker would reject it

    async def action(client: AsyncClient) -> Any:
        task = client.http(
            url,
            method,
            headers=parsed_headers,
            body=payload,
            id=task_id,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        await client.enqueue_many([task])
        click.echo(task.id)
        if wait is not None:
            return await client.wait(task.id, wait)
        return None

    record = run_async(with_client(settings, queue, action))
    if wait is not None:
        if record is None or not record.status.final:
            fail(f"no final result within {wait}s", 1)
        else:
            echo_json(record.to_dict())
            sys.exit(0 if record.status.value == "succeeded" else 1)


@cli.command()
@config_option
@queue_option
@click.argument("task_id")
@json_option
@handle_errors
def result(config: str | None, queue: str | None, task_id: str, as_json: bool) -> None:
    """Show a task's result (exit 1 when unknown or not finished)."""
    settings = settings_from(config)
    record = run_async(with_client(settings, queue, lambda client: client.result(task_id)))
    if record is None:
        fail(f"no result for task {task_id} (unknown, not run yet, or expired)", 1)
        return
    if as_json:
        echo_json(record.to_dict())
    else:
        line = f"{record.id}: {record.status.value} after {record.attempts} attempt(s)"
        if record.error:
            line += f" - {record.error.reason}: {record.error.message}"
        if isinstance(record.result, dict) and "status_code" in record.result:
            line += f" - HTTP {record.result['status_code']}"
        click.echo(line)
    if not record.status.final:
        sys.exit(1)


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


@cli.group()
def dlq() -> None:
    """Inspect and manage the dead-letter queue."""


def when(stamp: Any) -> str:
    """A Unix time as local ISO-8601 (seconds), for human-readable listings."""
    if not isinstance(stamp, (int, float)):
        return "-"
    return datetime.fromtimestamp(stamp).isoformat(timespec="seconds")


@dlq.command("list")
@config_option
@queue_option
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True, help="skip this many (newest first)")
@json_option
@handle_errors
def dlq_list(config: str | None, queue: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    settings = settings_from(config)

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
@json_option
@handle_errors
def dlq_requeue(
    config: str | None, queue: str | None, entry_ids: tuple[str, ...], requeue_all: bool, as_json: bool
) -> None:
    """Requeue dead letters at the tail of the queue (attempts reset, task id kept). Exit 1 when an id is not
    a dead letter."""
    if bool(entry_ids) == requeue_all:
        raise click.UsageError("give entry ids or --all")
    settings = settings_from(config)
    ids = None if requeue_all else list(entry_ids)
    moved = run_async(with_client(settings, queue, lambda client: client.dead_letters.requeue(ids), sinks=True))
    missing = 0 if requeue_all else len(entry_ids) - moved
    if as_json:
        echo_json({"requeued": moved, "not_found": missing})
    else:
        click.echo(f"requeued {moved}" + (f" ({missing} not found)" if missing else ""))
    if missing:
        sys.exit(1)


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


@cli.group()
def server() -> None:
    """The embedded redis-server (used when no Redis is configured)."""


@server.command("status")
@config_option
@handle_errors
def server_status(config: str | None) -> None:
    """Say whether the embedded server runs, and where."""
    settings = settings_from(config)
    embedded = EmbeddedRedis(settings.data_dir, settings.redis.server_binary)
    if embedded.is_running():
        click.echo(f"running (pid {embedded.pid()}) on {embedded.socket}")
    else:
        click.echo(f"not running ({embedded.socket})")
        sys.exit(1)


@server.command("stop")
@config_option
@handle_errors
def server_stop(config: str | None) -> None:
    """Stop the embedded server (its data is kept in the data directory)."""
    settings = settings_from(config)
    stopped = EmbeddedRedis(settings.data_dir, settings.redis.server_binary).stop()
    click.echo("stopped" if stopped else "not running")


def _add_plugin_commands() -> None:
    """Let plugins add commands. A plugin that fails to load is reported by the command that needs it."""
    try:
        settings = load_settings(None)
        manager = PluginManager()
        manager.discover(settings.disabled_plugins, settings.pinned_plugins)
        manager.register_commands(cli)
    except Exception as exc:
        if os.environ.get("GOPHERQ_DEBUG"):
            click.echo(f"gopherq: plugin commands not loaded: {exc}", err=True)


def main() -> None:
    _add_plugin_commands()
    cli()


if __name__ == "__main__":
    main()
