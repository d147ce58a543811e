"""The top-level `gopherq` click group; every command module attaches its commands to it."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="gopherq")
def cli() -> None:
    """GoPherQ: a task queue on Redis whose first-class task is an HTTP call."""
