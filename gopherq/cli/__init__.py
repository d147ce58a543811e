"""The `gopherq` command line: parses arguments, loads settings and plugins, calls the core, prints.

Each module of this package attaches its commands to the one group in `root`; importing them here is what
registers them. A command parses, calls the client or the core, and prints: it holds no logic of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gopherq.cli import (  # noqa: F401  (they register their commands)
    api,
    check,
    control,
    dlq,
    dlq_select,
    flows,
    hosts,
    inspect,
    keys,
    lists,
    operations,
    plugin,
    server,
    tasks,
    web,
    worker,
)
from gopherq.cli.root import cli
from gopherq.core.plugin_paths import configured_paths
from gopherq.core.plugins import PluginManager
from gopherq.core.settings import load_settings

__all__ = ["cli", "main"]


def _plugins_dirs_before_the_command(argv: list[str]) -> list[Path]:
    """The `--plugins-dir` folders of a command line, read before click parses it (plugin commands must exist by
    then): they are options of the `gopherq` group, so they come before the command's name."""
    found = []
    for index, arg in enumerate(argv):
        if arg == "--plugins-dir" and index + 1 < len(argv):
            found.append(Path(argv[index + 1]).resolve())
        elif arg.startswith("--plugins-dir="):
            found.append(Path(arg.partition("=")[2]).resolve())
        elif not arg.startswith("-") and (index == 0 or argv[index - 1] != "--plugins-dir"):
            break
    return found


def _add_plugin_commands() -> None:
    """Let plugins add commands. A plugin that fails to load is reported by the command that needs it."""
    try:
        settings = load_settings(None)
        paths = [*configured_paths(settings), *_plugins_dirs_before_the_command(sys.argv[1:])]
        manager = PluginManager()
        manager.discover(settings.disabled_plugins, settings.pinned_plugins, paths)
        manager.register_commands(cli)
    except Exception as exc:
        if os.environ.get("GOPHERQ_DEBUG"):
            click.echo(f"gopherq: plugin commands not loaded: {exc}", err=True)


def main() -> None:
    _add_plugin_commands()
    cli()


if __name__ == "__main__":
    main()
