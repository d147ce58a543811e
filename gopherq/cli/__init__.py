"""The `gopherq` command line: parses arguments, loads settings and plugins, calls the core, prints.

Each module of this package attaches its commands to the one group in `root`, which imports a command's modules
when the command runs (`root.COMMANDS`). A command parses, calls the client or the core, and prints: it holds no
logic of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gopherq.cli.root import COMMANDS, cli, command_line

__all__ = ["cli", "main"]


def _add_plugin_commands(folders: list[Path]) -> None:
    """Let plugins add commands (`folders`: the command line's `--plugins-dir`). A plugin that fails to load is
    reported by the command that needs it."""
    # Imported here: a built-in command does not wait for every plugin (and what they import) to load.
    from gopherq.core.plugin_paths import configured_paths
    from gopherq.core.plugins import PluginManager
    from gopherq.core.settings import load_settings

    try:
        settings = load_settings(None)
        paths = [*configured_paths(settings), *folders]
        manager = PluginManager()
        manager.discover(settings.disabled_plugins, settings.pinned_plugins, paths)
        manager.register_commands(cli)
    except Exception as exc:
        if os.environ.get("GOPHERQ_DEBUG"):
            click.echo(f"gopherq: plugin commands not loaded: {exc}", err=True)


def main() -> None:
    folders, command = command_line(sys.argv[1:])
    if command not in COMMANDS:  # a plugin's command, or the help that lists every command
        _add_plugin_commands(folders)
    cli()


if __name__ == "__main__":
    main()
