"""The `server` command group: the embedded redis-server."""

from __future__ import annotations

import sys

import click

from gopherq.cli.common import config_option, handle_errors, settings_from
from gopherq.cli.root import cli
from gopherq.core.embedded import EmbeddedRedis


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
