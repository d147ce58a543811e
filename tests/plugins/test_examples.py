"""The example plugin distributions under examples/, pip-installed and found through real entry-point discovery.

Both are installed once per session with `pip install --no-deps --target <tmpdir>`, and every process that
should see them (worker, CLI, the examples' own test suites) runs with PYTHONPATH=<tmpdir>: importlib.metadata
finds their dist-info there. Installing them into the shared virtualenv instead would load them into the plugin
manager of every other test; this way nothing outside these tests can see them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq import Client
from tests.support.common import GOPHERQ, REPO, wait_until, write_config
from tests.support.workers import WorkerProcess

EXAMPLES = REPO / "examples"
EXAMPLE_NAMES = ("gopherq-pycall", "gopherq-jsonl")
PIP_TIMEOUT = 300


@pytest.fixture(scope="session")
def examples_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding both example distributions, installed by pip (built from their pyproject.toml)."""
    target = tmp_path_factory.mktemp("example-plugins")
    # Built from copies, so that the build leaves nothing in the repository and no stale build/ can leak in.
    copies = tmp_path_factory.mktemp("example-sources")
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    sources = [str(shutil.copytree(EXAMPLES / name, copies / name, ignore=skip)) for name in EXAMPLE_NAMES]
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *sources]
    subprocess.run(command, check=True, capture_output=True, timeout=PIP_TIMEOUT)
    assert (target / "gopherq_pycall-0.1.0.dist-info" / "entry_points.txt").is_file()
    assert (target / "gopherq_jsonl-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))}
    env.update(extra)
    return env


def config_text(redis_url: str, queue: str, events_path: Path | None) -> str:
    text = f"""
[redis]
url = "{redis_url}"

[queue]
name = "{queue}"

[worker]
concurrency = 4
shutdown_timeout = 5.0
fetch_timeout = 0.2

[plugins.pycall]
threads = false
"""
    if events_path is not None:
        text += f'\n[plugins.jsonl]\npath = "{events_path}"\nevents = ["task.*"]\n'
    return text


@pytest.mark.parametrize("example", ["gopherq-pycall", "gopherq-jsonl"])
def test_the_examples_own_test_suites_pass_against_the_installed_distribution(
    example: str, examples_path: Path, redis_url: str
) -> None:
    """Each example's tests use only gopherq.testing and the public API, and pass, Redis tests included."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLES / example,
        env=clean_env(PYTHONPATH=str(examples_path), GOPHERQ_TEST_REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout


def test_a_worker_runs_a_pycall_task_and_the_jsonl_file_receives_its_events(
    examples_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    tmp_path: Path,
    worker_process: Callable[..., WorkerProcess],
    make_settings: Callable[..., Any],
) -> None:
    events_path = tmp_path / "events.jsonl"
    config = write_config(tmp_path, config_text(redis_url, queue_name, events_path))
    worker = worker_process(["run", "-c", str(config)], env={"PYTHONPATH": str(examples_path)})
    task_id = f"pycall-{uuid.uuid4().hex[:8]}"
    # A raw producer: the test process itself has no pycall plugin, Redis does not care.
    envelope = {"id": task_id, "type": "pycall", "function": "operator:add", "args": [40, 2]}
    sync_redis.rpush(queue_name, json.dumps(envelope))
    with Client(make_settings()) as client:
        record = wait_until(lambda: client.result(task_id), timeout=20, what=f"result of {task_id}\n{worker.output}")
    assert record.status.value == "succeeded", record
    assert record.result == 42

    def lines() -> list[dict[str, Any]]:
        if not events_path.exists():
            return []
        return [json.loads(line) for line in events_path.read_text().splitlines()]

    wait_until(
        lambda: any(line["event"] == "task.succeeded" and line.get("task_id") == task_id for line in lines()),
        what="task.succeeded in the JSONL file",
    )
    mine = [line for line in lines() if line.get("task_id") == task_id]
    assert [line["event"] for line in mine] == ["task.dequeued", "task.started", "task.succeeded"]
    assert all(line["task_type"] == "pycall" and line["queue"] == queue_name for line in mine)
    worker.signal(15)
    assert worker.wait(20) == 0, worker.output


def test_gopherq_plugins_lists_both_examples(examples_path: Path, redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(redis_url, "unused_queue", tmp_path / "e.jsonl"))
    env = clean_env(PYTHONPATH=str(examples_path))
    listing = subprocess.run(
        [GOPHERQ, "plugins", "--json", "-c", str(config)], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert {"http", "logging", "webhook", "pycall", "jsonl"} <= set(rows)
    pycall, jsonl = rows["pycall"], rows["jsonl"]
    assert (pycall["distribution"], pycall["version"], pycall["module"]) == (
        "gopherq-pycall",
        "0.1.0",
        "gopherq_pycall",
    )
    assert pycall["executors"] == ["pycall"] and pycall["settings"] == ["pycall"] and not pycall["builtin"]
    assert pycall["hooks"] == ["gopherq_register_executors", "gopherq_register_settings"]
    assert (jsonl["distribution"], jsonl["sinks"], jsonl["settings"]) == ("gopherq-jsonl", ["jsonl"], ["jsonl"])
    text = subprocess.run([GOPHERQ, "plugins", "-c", str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert "pycall  gopherq-pycall 0.1.0  module gopherq_pycall" in text.stdout
    assert "jsonl  gopherq-jsonl 0.1.0  module gopherq_jsonl" in text.stdout
    # Pinning the third-party set: GOPHERQ_LOAD_PLUGINS=pycall leaves jsonl installed but not loaded.
    pinned = subprocess.run(
        [GOPHERQ, "plugins", "--json"], env={**env, "GOPHERQ_LOAD_PLUGINS": "pycall"}, capture_output=True, text=True
    )
    assert pinned.returncode == 0, pinned.stderr
    names = {row["name"] for row in json.loads(pinned.stdout)}
    assert names == {"http", "functions", "logging", "webhook", "stream", "metrics", "otel", "pycall"}


def test_the_examples_are_lint_and_type_clean() -> None:
    """The guide's code is held to the project's own standard: ruff, ruff format, mypy --strict."""
    bin_dir = Path(sys.executable).parent
    sources = [str(EXAMPLES / "gopherq-pycall" / "src"), str(EXAMPLES / "gopherq-jsonl" / "src")]
    for command in (
        [str(bin_dir / "ruff"), "check", str(EXAMPLES)],
        [str(bin_dir / "ruff"), "format", "--check", str(EXAMPLES)],
        [str(bin_dir / "mypy"), *sources],
    ):
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
