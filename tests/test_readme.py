"""The README's quickstart stays true: two set-up commands, the second is what CI runs, the first runs the
shipped config (tests/test_e2e.py runs `gopherq run -c gopherq.toml` on a copy of that file)."""

from __future__ import annotations

import re

from gopherq.core.settings import load_settings
from tests.support.common import REPO


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    run, test = commands
    assert run.endswith("gopherq run -c gopherq.toml")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = quickstart_commands()[1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_shipped_config_loads_and_uses_the_embedded_redis() -> None:
    settings = load_settings(REPO / "gopherq.toml", environ={})
    assert settings.redis.embedded
    assert settings.queue.name == "my_tasks_queue"
