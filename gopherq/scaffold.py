"""`gopherq plugin new NAME`: a new plugin project from the templates shipped in `gopherq/templates/plugin/`.

The project is a complete distribution that works as made: `pyproject.toml` declaring the entry point, a module
with an executor or a sink, its `py.typed`, a README, and tests written with `gopherq.testing` that pass before a
line is changed (`python -m pytest` in the project: its pytest settings import the module from `src/`). A worker
loads it uninstalled with `[plugins] paths = ["<the project's folder>"]` or `gopherq --plugins-dir`, installed
with `pip install -e`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from gopherq.core.errors import GoPherQError

#: A plugin name: it becomes the entry point's name, the settings table `[plugins.<name>]` and the module name.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")

#: What a project of each kind holds: template file -> path in the project (after substitution).
LAYOUT = {
    "executor": {
        "pyproject.toml.tmpl": "pyproject.toml",
        "README.md.tmpl": "README.md",
        "executor.py.tmpl": "src/$module/__init__.py",
        "test_executor.py.tmpl": "tests/test_$name.py",
    },
    "sink": {
        "pyproject.toml.tmpl": "pyproject.toml",
        "README.md.tmpl": "README.md",
        "sink.py.tmpl": "src/$module/__init__.py",
        "test_sink.py.tmpl": "tests/test_$name.py",
    },
}

DESCRIPTIONS = {
    "executor": "A GoPherQ executor plugin: task type $name",
    "sink": "A GoPherQ event sink plugin: $name",
}


class ScaffoldError(GoPherQError):
    """The project cannot be made: a bad name, an unknown kind, or a folder that is already there."""


def project_names(name: str) -> dict[str, str]:
    """The names a plugin project derives from the plugin's name (`sql_audit`): its distribution
    (`gopherq-sql-audit`), module (`gopherq_sql_audit`) and class prefix (`SqlAudit`)."""
    if not NAME.match(name):
        raise ScaffoldError(
            f"plugin name {name!r}: use 1-40 lowercase letters, digits and underscores, starting with a letter"
            " (it names the entry point, the module and the [plugins.<name>] table)"
        )
    return {
        "name": name,
        "distribution": "gopherq-" + name.replace("_", "-"),
        "module": f"gopherq_{name}",
        "class_name": "".join(part.capitalize() for part in name.split("_")),
    }


def render(name: str, kind: str) -> dict[str, str]:
    """The project's files (path relative to the project folder -> text), not written anywhere."""
    if kind not in LAYOUT:
        raise ScaffoldError(f"unknown plugin kind {kind!r} (one of: {', '.join(LAYOUT)})")
    names = project_names(name)
    names["description"] = Template(DESCRIPTIONS[kind]).substitute(names)
    templates = resources.files("gopherq") / "templates" / "plugin"
    files = {
        Template(target).substitute(names): Template((templates / source).read_text()).substitute(names)
        for source, target in LAYOUT[kind].items()
    }
    files[f"src/{names['module']}/py.typed"] = ""
    return files


def create(name: str, kind: str, parent: Path) -> Path:
    """Write a new plugin project into `parent/<distribution>` and return that folder; refuses to touch a folder
    that already exists."""
    files = render(name, kind)
    project = parent / project_names(name)["distribution"]
    if project.exists():
        raise ScaffoldError(f"{project} already exists: choose another name, or remove it")
    for relative, text in sorted(files.items()):
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project
