"""A check's regular expression must reach the end of the text, not stop before a final newline.

Python's `$` also matches just before a string's last "\\n", so `re.compile(r"^[A-Za-z]+$").match("abc\\n")`
succeeds: a header name, a header value, a queue name or a flow id ending in a newline passed its check. The
patterns end in `\\Z` (the very end) instead; the first test keeps it so for every pattern compiled in the package,
the others show the checks refusing such values (each passed before the fix). A URL is refused for any control
character: `urlsplit` drops tabs and line ends without a word, so the check passed a URL no request could be sent
to (httpx refuses it when the attempt runs).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gopherq.core.errors import ConfigError, TaskRejected
from gopherq.core.flows.members import check_flow_id, check_node
from gopherq.core.keys import validate_queue_name
from gopherq.plugins.http.checks import check_headers, check_url
from gopherq.web.sessions import well_formed
from tests.support.common import REPO


def compiled_patterns() -> list[tuple[str, int, str]]:
    """(file, line, pattern) of every `re.compile` of a literal pattern in the package."""
    found = []
    for path in sorted((REPO / "gopherq").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "compile"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((str(Path(path).relative_to(REPO)), node.lineno, node.args[0].value))
    return found


def test_no_compiled_pattern_ends_with_a_dollar() -> None:
    patterns = compiled_patterns()
    assert len(patterns) > 10  # the scan finds them
    loose = [f"{file}:{line}: {pattern!r}" for file, line, pattern in patterns if pattern.endswith("$")]
    assert not loose, "end these with \\Z (a `$` lets a final newline through):\n" + "\n".join(loose)


def refused(check: Callable[[Any], Any], value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(value)


@pytest.mark.parametrize(
    ("check", "value", "error"),
    [
        (check_headers, {"X-Name\n": "v"}, ValueError),
        (check_headers, {"X-Name": "value\n"}, ValueError),
        (check_url, "http://example.com\n/path", ValueError),
        (check_url, "http://example.com/pa\tth", ValueError),
        (validate_queue_name, "tasks\n", ConfigError),
        (check_flow_id, "flow-1\n", TaskRejected),
        (check_node, "node_1\n", TaskRejected),
    ],
    ids=["header-name", "header-value", "url-host", "url-path", "queue-name", "flow-id", "flow-node"],
)
def test_a_final_newline_is_refused(check: Callable[[Any], Any], value: Any, error: type[Exception]) -> None:
    refused(check, value, error)


def test_a_session_id_with_a_final_newline_is_not_well_formed() -> None:
    good = "A" * 43
    assert well_formed(good) and not well_formed(good + "\n")
