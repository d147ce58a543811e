"""The `gopherq` command line: parses arguments, loads settings and plugins, calls the core, prints.

Each module of this package attaches its commands to the one group in `root`; importing them here is what
registers them. A command parses, calls the client or the core, and prints: it holds no logic of its own.
"""

from __future__ import annotations

import os

import click

from gopherq.cli import (  # noqa: F401  (they register their commands)
    api,
    check,
    control,
    dlq,
    hosts,
    inspect,
    server,
    tasks,
    web,
    worker,
)
from gopherq.cli.root import cli
from gopherq.core.plugins import PluginManager
from gopherq.core.settings import load_settings

__all__ = ["cli", "main"]


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
