"""The `gopherq` group imports a built-in command's modules when the command runs: `root.COMMANDS` names every
command each module makes, a built-in command loads neither the dashboard nor the plugins (and a worker's plugins
load without the dashboard), and a plugin still cannot take a built-in command's name, loaded or not
(tests/core/test_plugins.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gopherq.cli.root import COMMANDS, command_line
from tests.support.common import REPO

#: Run in a fresh interpreter: import each command module of gopherq.cli alone, in turn, and print which top-level
#: commands each one made or added subcommands to.
MAKERS = """
import importlib, json, pkgutil, click, gopherq.cli
from gopherq.cli.root import cli

def tree(group):
    return {name: tree(sub) if isinstance(sub, click.Group) else None for name, sub in group.commands.items()}

made, seen = {}, {}
for info in pkgutil.iter_modules(gopherq.cli.__path__):
    importlib.import_module(f"gopherq.cli.{info.name}")
    now = tree(cli)
    for name in sorted(name for name in now if seen.get(name, "new") != now[name]):
        made.setdefault(name, []).append(info.name)
    seen = now
print(json.dumps(made))
"""

#: Run in a fresh interpreter with the command line `argv`: which heavy modules the command imported.
LOADED = """
import json, sys
from gopherq.cli import main
sys.argv = ["gopherq", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
heavy = {"gopherq.web.app", "gopherq.plugins.http", "gopherq.cli.worker", "gopherq.cli.tasks"}
print(json.dumps(sorted(name for name in sys.modules if name in heavy)))
"""


def python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_table_names_every_module_that_makes_each_command() -> None:
    made = json.loads(python(MAKERS))
    assert {name: tuple(modules) for name, modules in made.items()} == dict(COMMANDS)


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["result", "--help"], ["gopherq.cli.tasks"]),
        (["--plugins-dir", str(REPO), "enqueue", "--help"], ["gopherq.cli.tasks"]),
        (["--help"], ["gopherq.cli.tasks", "gopherq.cli.worker", "gopherq.plugins.http", "gopherq.web.app"]),
    ],
)
def test_a_builtin_command_imports_only_its_own_modules(argv: list[str], loaded: list[str]) -> None:
    assert json.loads(python(LOADED, json.dumps(argv))) == loaded


def test_the_command_line_is_read_before_click_parses_it(tmp_path: Path) -> None:
    argv = ["--plugins-dir", str(tmp_path / "a"), f"--plugins-dir={tmp_path / 'b'}", "run", "-c", "x"]
    assert command_line(argv) == ([tmp_path / "a", tmp_path / "b"], "run")
    assert command_line(["--version"]) == ([], None)
    assert command_line(["--plugins-dir"]) == ([], None)


def test_a_workers_plugins_load_without_the_dashboard() -> None:
    code = "import sys, gopherq.plugins.metrics_sink, gopherq.plugins.http; print('gopherq.web.app' in sys.modules)"
    assert python(code) == "False"
    assert python("from gopherq.web import AREAS, create_app; print(callable(create_app) and bool(AREAS))") == "True"
