"""Plugins loaded from folders, without installing them (`[plugins] paths`, `GOPHERQ_PLUGIN_PATHS`, `gopherq
--plugins-dir`): for trying a plugin out, or for plugins that live in an application's own repository.

A folder is read one of two ways:

- it holds a `pyproject.toml` declaring `[project.entry-points.gopherq]` (a plugin project, such as the one
  `gopherq plugin new` makes): each of those entry points is a plugin, imported from the project's `src/`
  folder (or the project folder itself when it has no `src/`), exactly as it would be once installed;
- otherwise every module in it (`name.py`, or a package `name/__init__.py`; names starting with `_` are skipped)
  is a plugin named after the module, without a `gopherq_` prefix: `plugins/gopherq_sql.py` is plugin `sql`,
  `plugins/audit.py` is plugin `audit` (as datasette's `--plugins-dir` does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gopherq.core.errors import ConfigError

if TYPE_CHECKING:
    from gopherq.core.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The entry-point group a plugin project declares (the same as an installed plugin's).
GROUP = "gopherq"


@dataclass(frozen=True)
class LocalPlugin:
    """A plugin found in a folder: its name, what to import (an entry-point value, `module` or `module:attr`),
    the folder it came from, and the folder that goes on `sys.path` to import it."""

    name: str
    target: str
    origin: Path
    import_root: Path

    def load(self) -> Any:
        """Import the plugin (its import root first on `sys.path`) and return the plugin object."""
        root = str(self.import_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        return EntryPoint(self.name, self.target, GROUP).load()


def configured_paths(settings: Settings) -> list[Path]:
    """The folders `[plugins] paths` / GOPHERQ_PLUGIN_PATHS name (a list, or one string of folders separated by
    commas or the OS path separator); relative ones resolve against the config file's folder, like every relative
    path of the settings."""
    value = settings.plugins.get("paths")
    if value is None:
        return []
    parts = value.replace(os.pathsep, ",").split(",") if isinstance(value, str) else value
    if not isinstance(parts, list):
        raise ConfigError(f"plugins.paths: a list of folders, got {value!r}")
    return [(settings.base_dir / str(part).strip()).resolve() for part in parts if str(part).strip()]


def find_local_plugins(paths: Iterable[Path]) -> list[LocalPlugin]:
    """The plugins of every folder in `paths`, in order; a folder that is missing, or a project that declares no
    gopherq entry point, is a ConfigError naming it."""
    found: list[LocalPlugin] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"plugins.paths: {path}: not a directory")
        project = path / "pyproject.toml"
        found.extend(_project_plugins(path, project) if project.is_file() else _module_plugins(path))
    return found


def _project_plugins(path: Path, project: Path) -> list[LocalPlugin]:
    try:
        data = tomllib.loads(project.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"plugins.paths: {project}: cannot be read: {exc}") from None
    entry_points = data.get("project", {}).get("entry-points", {}).get(GROUP)
    if not isinstance(entry_points, dict) or not entry_points:
        raise ConfigError(
            f"plugins.paths: {project} declares no [project.entry-points.{GROUP}]: it is not a GoPherQ plugin project"
        )
    root = path / "src" if (path / "src").is_dir() else path
    return [LocalPlugin(str(name), str(target), path, root) for name, target in entry_points.items()]


def _module_plugins(path: Path) -> list[LocalPlugin]:
    plugins = []
    for child in sorted(path.iterdir()):
        if child.name.startswith(("_", ".")):
            continue
        if child.suffix == ".py" and child.is_file():
            module = child.stem
        elif child.is_dir() and (child / "__init__.py").is_file():
            module = child.name
        else:
            continue
        name = module.removeprefix("gopherq_") or module
        plugins.append(LocalPlugin(name, module, path, path))
    return plugins
