"""The built-in plugins are written as a third-party plugin would be: they reach the core only through the public
`gopherq` module (docs/plugins.md), never by importing `gopherq.core`'s internals, so what they need is what every
plugin author is offered."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.common import REPO

PLUGINS = REPO / "gopherq" / "plugins"


def core_imports(source: str) -> list[str]:
    """The `gopherq.core` modules a module's source imports (at any depth: a function's own imports too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name == "gopherq.core" or name.startswith("gopherq.core.")]
    return found


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda path: str(path.relative_to(PLUGINS)))
def test_a_built_in_plugin_imports_nothing_from_the_core(path: Path) -> None:
    assert core_imports(path.read_text()) == []


def test_the_check_sees_an_import_of_the_core_at_any_depth() -> None:
    source = "import gopherq\nfrom gopherq import Task\ndef f():\n    from gopherq.core.executor import time_limit\n"
    assert core_imports(source) == ["gopherq.core.executor"]
    assert core_imports("import gopherq.core.codec as codec\n") == ["gopherq.core.codec"]
    assert core_imports("from gopherq.plugins.http import wire\nimport gopherq_core\n") == []
