"""docs/plugins.md is tested: each code block marked `<!-- file: PATH -->` must be exactly that file of the
repository (the example plugins are the guide's code), and the links to files must point at files that exist.

After changing an example, refresh the guide with `python -m tests.plugins.test_plugins_docs --fix`.
"""

from __future__ import annotations

import re
import sys

from tests.support.common import REPO

GUIDE = REPO / "docs" / "plugins.md"

#: A marker line, then a fenced block: the block's body is group "body".
BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n(?P<fence>```\w*)\n(?P<body>.*?)^```$", re.S | re.M)


def embedded(text: str) -> list[tuple[str, str]]:
    return [(match["path"], match["body"]) for match in BLOCK.finditer(text)]


def refreshed(text: str) -> str:
    """The guide with every marked block replaced by the current content of its file."""

    def replace(match: re.Match[str]) -> str:
        body = (REPO / match["path"]).read_text()
        return f"<!-- file: {match['path']} -->\n{match['fence']}\n{body}```"

    return BLOCK.sub(replace, text)


def test_the_guide_embeds_both_example_plugins_verbatim() -> None:
    blocks = embedded(GUIDE.read_text())
    paths = [path for path, _ in blocks]
    assert paths == [
        "examples/gopherq-pycall/pyproject.toml",
        "examples/gopherq-pycall/src/gopherq_pycall/__init__.py",
        "examples/gopherq-pycall/tests/test_pycall.py",
        "examples/gopherq-jsonl/pyproject.toml",
        "examples/gopherq-jsonl/src/gopherq_jsonl/__init__.py",
        "examples/gopherq-jsonl/tests/test_jsonl.py",
    ]
    for path, body in blocks:
        assert body == (REPO / path).read_text(), (
            f"docs/plugins.md's copy of {path} differs from the file: "
            "run `python -m tests.plugins.test_plugins_docs --fix`"
        )


def test_relative_links_in_the_guide_exist() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", GUIDE.read_text()):
        assert (GUIDE.parent / target).exists(), target


if __name__ == "__main__":
    if sys.argv[1:] == ["--fix"]:
        GUIDE.write_text(refreshed(GUIDE.read_text()))
        print(f"refreshed {len(embedded(GUIDE.read_text()))} blocks in {GUIDE.relative_to(REPO)}")
    else:
        sys.exit("usage: python -m tests.plugins.test_plugins_docs --fix")


def test_every_reason_code_is_documented_and_every_documented_one_exists() -> None:
    """docs/guarantees.md's two reason tables list exactly what the code records: dead-letter reasons, and the
    error reasons of the core and of the built-in HTTP executor (found in their source)."""
    import re

    from gopherq.core.outcomes import DEAD_REASONS

    doc = (REPO / "docs" / "guarantees.md").read_text()
    dead_table = doc[doc.index("### Reason codes") : doc.index("### Why an attempt failed")]
    error_table = doc[doc.index("### Why an attempt failed") : doc.index("## Bad input never stops")]
    row = re.compile(r"^\| `([a-z_]+)` \|", re.MULTILINE)
    assert set(row.findall(dead_table)) == set(DEAD_REASONS)
    sources = [REPO / "gopherq" / "core" / "executor.py", *sorted((REPO / "gopherq" / "plugins" / "http").glob("*.py"))]
    used = set()
    for source in sources:
        text = source.read_text()
        used |= set(re.findall(r"""reason=["']([a-z_]+)["']""", text))
        used |= set(re.findall(r"""TaskFailure\(\s*["']([a-z_]+)["']""", text))
    assert set(row.findall(error_table)) == used
