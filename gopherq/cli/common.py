"""What every command shares: the common options, settings loading, error mapping and output helpers."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gopherq.cli.root import plugins_dirs
from gopherq.client import AsyncClient
from gopherq.core.errors import BrokerUnavailable, ConfigError, NotFound, PluginError, TaskRejected
from gopherq.core.masking import Masker
from gopherq.core.plugin_paths import configured_paths
from gopherq.core.runner import configure_logging
from gopherq.core.settings import Settings, load_settings

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
    (unreachable, or the embedded server cannot start) and for a queue, task or dead letter that does not exist."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, PluginError) as exc:
            fail(str(exc), 2)
        except TaskRejected as exc:
            fail(f"{exc.reason}: {exc.message}", 2)
        except (BrokerUnavailable, NotFound) as exc:
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
    extra = plugins_dirs()
    if extra:  # `gopherq --plugins-dir DIR ...`: added to the configured folders
        settings.plugins["paths"] = [*map(str, configured_paths(settings)), *extra]
    configure_logging(settings.logging.level, Masker.from_settings(settings))
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


def report_count(verb: str, done: int, missing: int, as_json: bool, why: str = "not found") -> None:
    """Say how many dead letters (or tasks) an action `verb` changed and how many it could not find, as a line or as
    JSON; exit 1 when any was missing, so a script sees the typo."""
    if as_json:
        echo_json({verb: done, "not_found": missing})
    else:
        click.echo(f"{verb} {done}" + (f" ({missing} {why})" if missing else ""))
    if missing:
        sys.exit(1)


def when(stamp: Any) -> str:
    """A Unix time as local ISO-8601 (seconds), for human-readable listings."""
    if not isinstance(stamp, (int, float)):
        return "-"
    return datetime.fromtimestamp(stamp).isoformat(timespec="seconds")


def bind_options(func: F) -> F:
    """`--host` and `--port` of the commands that serve HTTP (`web`, `api`): they override `web.host`/`web.port`."""
    func = click.option("--port", type=int, default=None, help="TCP port (web.port, default 8765)")(func)
    return click.option("--host", default=None, help="address to bind (web.host, default 127.0.0.1)")(func)
