"""`gopherq plugin new`: start a plugin project (the templates and their rendering live in gopherq.scaffold)."""

from __future__ import annotations

from pathlib import Path

import click

from gopherq.cli.common import fail
from gopherq.cli.root import cli
from gopherq.scaffold import ScaffoldError, create


@cli.group()
def plugin() -> None:
    """Tools for plugin authors."""


@plugin.command("new")
@click.argument("name")
@click.option("--executor", "kind", flag_value="executor", default=True, help="an executor of task type NAME (default)")
@click.option("--sink", "kind", flag_value="sink", help="an event sink called NAME")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="where to make the project's folder",
)
def new(name: str, kind: str, directory: Path) -> None:
    """Make a plugin project, gopherq-NAME/: pyproject.toml with the entry point, a module, and tests that pass
    with gopherq.testing."""
    try:
        project = create(name, kind, directory)
    except ScaffoldError as exc:
        fail(str(exc), 2)
        return
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        click.echo(f"created {path}")
    click.echo(f"next: cd {project} && python -m pytest; a worker loads it with `gopherq --plugins-dir {project} run`")
