"""`gopherq enqueue --type T --payload JSON|@file`: a task of any registered type from the command line, validated by
its executor as a worker would validate it (issue 21)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.common import GOPHERQ, cli_env, write_config


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GOPHERQ, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=60)


def test_enqueue_takes_any_type_with_its_payload_validated_by_its_executor(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: Any
) -> None:
    config = write_config(tmp_path, f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n')
    (tmp_path / "task.json").write_text('{"function": "tests.support.function_targets:add", "args": [2, 40]}')
    proc = _cli(["enqueue", "-c", str(config), "--type", "function", "--payload", "@task.json", "--id", "p1"], tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "p1\n"), proc.stderr
    envelope = json.loads(sync_redis.lrange(queue_name, 0, -1)[0])
    assert (envelope["type"], envelope["function"], envelope["args"]) == (
        "function",
        "tests.support.function_targets:add",
        [2, 40],
    )

    bad = _cli(
        ["enqueue", "-c", str(config), "--type", "function", "--payload", '{"functon": "m:f", "args": 1}'], tmp_path
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "field 'function' is required" in bad.stderr and "(did you mean 'function'?)" in bad.stderr
    assert sync_redis.llen(queue_name) == 1  # nothing more was enqueued


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "function", "--payload", '{"function": "m:f", "max_attempts": 2}'], "max_attempts is set with"),
        (["--type", "function", "--url", "http://127.0.0.1/", "--payload", "{}"], "make http tasks"),
        (["--url", "http://127.0.0.1/", "--payload", '{"url": "http://127.0.0.1/x"}'], "url given both"),
        (["--type", "function", "--payload", "[1]"], "must be a JSON object"),
        (["--type", "function", "--payload", "@missing.json"], "cannot read missing.json"),
        (["--type", "function", "--payload", "{nope"], "invalid JSON"),
        (["--type", "sql", "--payload", "{}"], "unknown_type: no executor for task type 'sql'"),
    ],
)
def test_enqueue_refuses_a_payload_it_cannot_use(
    tmp_path: Path, redis_url: str, queue_name: str, args: list[str], message: str
) -> None:
    config = write_config(tmp_path, f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n')
    proc = _cli(["enqueue", "-c", str(config), *args], tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
