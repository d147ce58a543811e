"""The top-level `gopherq` click group; every command module attaches its commands to it."""

from __future__ import annotations

import click


@click.group()
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
