"""The top-level `gopherq` click group; every command module attaches its commands to it.

A command's module is imported when the command runs (or a help page lists it), not at start-up: the modules
between them import the client, the core, the dashboard and aiohttp, and `gopherq result` should not wait for the
dashboard to load. `COMMANDS` says which modules make each command; a test checks it against the modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import click

#: Each built-in command and the modules of this package that make it (a group's subcommands may come from more
#: than one module).
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "api": ("api",),
    "cancel": ("control",),
    "check": ("check",),
    "config": ("worker",),
    "delete-task": ("operations",),
    "dlq": ("dlq", "dlq_select"),
    "enqueue": ("tasks",),
    "events": ("inspect",),
    "flow": ("flows",),
    "flows": ("flows",),
    "host": ("operations",),
    "hosts": ("hosts",),
    "keys": ("keys",),
    "pause": ("inspect",),
    "ping": ("check",),
    "plugin": ("plugin",),
    "plugins": ("worker",),
    "queues": ("inspect",),
    "redis": ("operations",),
    "result": ("tasks",),
    "resume": ("inspect",),
    "run": ("worker",),
    "run-now": ("operations",),
    "schedule": ("operations",),
    "schedules": ("control",),
    "server": ("server",),
    "task": ("inspect",),
    "tasks": ("lists",),
    "web": ("web",),
    "workers": ("inspect",),
}


class LazyGroup(click.Group):
    """A group whose built-in commands (`COMMANDS`) are imported on first use; commands added any other way (a
    plugin's) are there from the start. Every built-in name is listed, loaded or not, so a plugin cannot take one
    (`PluginManager.register_commands` compares the listed names)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            load(cmd_name)
        return self.commands.get(cmd_name)


def load(name: str) -> None:
    """Import the modules that make the built-in command `name` (each attaches its commands to `cli`)."""
    for module in COMMANDS[name]:
        importlib.import_module(f"{__package__}.{module}")


def command_line(argv: list[str]) -> tuple[list[Path], str | None]:
    """The `--plugins-dir` folders and the command's name of a command line (`argv` without the program), read
    before click parses it: the folders are options of the group, so they come before the name, which is the first
    argument that is neither an option nor a folder."""
    folders: list[Path] = []
    folder_next = False
    for arg in argv:
        if folder_next:
            folders.append(Path(arg).resolve())
            folder_next = False
        elif arg == "--plugins-dir":
            folder_next = True
        elif arg.startswith("--plugins-dir="):
            folders.append(Path(arg.partition("=")[2]).resolve())
        elif not arg.startswith("-"):
            return folders, arg
    return folders, None


@click.group(cls=LazyGroup)
@click.version_option(package_name="gopherq")
@click.option(
    "--plugins-dir",
    "plugins_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, resolve_path=True),
    help="load plugins from this folder without installing them (repeatable; added to plugins.paths)",
)
def cli(plugins_dirs: tuple[str, ...]) -> None:
    """GoPherQ: a task queue on Redis whose first-class task is an HTTP call."""


def plugins_dirs() -> list[str]:
    """The `--plugins-dir` folders given to the running `gopherq` command (none outside one)."""
    context = click.get_current_context(silent=True)
    return list(context.find_root().params.get("plugins_dirs") or ()) if context is not None else []
