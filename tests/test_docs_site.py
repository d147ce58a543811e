"""The documentation site builds with `mkdocs build --strict` (a broken link or anchor, or a missing page fails
it), with the README as its home page, every docs page in it, and the generated API reference; and every core
setting has its row in docs/configuration.md."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gopherq.core.settings import Settings
from tests.support.common import REPO


def nav_pages(nav: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [str(value)])
    return pages


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')"
)
def test_mkdocs_build_strict_passes_and_publishes_every_page(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]

    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    for page in nav_pages(config["nav"]):
        assert page == "index.md" or (REPO / "docs" / page).is_file(), f"nav names a missing page {page}"
    for page in (REPO / "docs").glob("*.md"):
        assert (site / page.stem / "index.html").is_file(), f"{page.name} was not published"

    home = (site / "index.html").read_text()
    assert "Quickstart" in home and 'href="deployment/"' in home  # the README, its docs/ links rewritten
    reference = (site / "reference" / "index.html").read_text()  # generated Markdown (docs/gen_reference.py)
    for name in ("asyncclient", "task", "gopherq_startup", "the-events", "pluginharness"):
        assert f'id="{name}"' in reference, name


def test_every_core_setting_has_a_row_in_configuration_md() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        for key in getattr(model, "model_fields", {}):
            table = text.partition(f"### `[{section}]`")[2].partition("\n### ")[0]
            if f"| `{key}` |" not in table:
                missing.append(f"{section}.{key}")
    assert missing == [], f"settings without a row in docs/configuration.md: {missing}"
