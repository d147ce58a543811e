"""`gopherq keys`: list fair keys with their backlog, running tasks and limits; set, pause, resume and reset one at
run time; bad input and bad `[fair]` settings exit 2 with one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.cli.test_cli import assert_one_line_error
from tests.support.common import write_config

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_keys_lists_sets_pauses_and_resumes(
    run_gopherq: Run, tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    rules = '[fair]\ndefault_weight = 2\n[[fair.keys]]\npattern = "vip-*"\nweight = 5\nconcurrency = 3\n'
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n{rules}"))
    for key in ("vip-acme", "small"):
        proc = run_gopherq(["enqueue", "-c", config, "--url", "http://127.0.0.1:9/", "--fair-key", key])
        assert proc.returncode == 0, proc.stderr
    keys = QueueKeys(queue_name)
    # Two more of vip-acme's, pushed raw into its list as enqueue.lua leaves them.
    extra = [codec.dumps({"id": f"a{i}", "url": "http://127.0.0.1:9/", "fair_key": "vip-acme"}) for i in range(2)]
    sync_redis.rpush(keys.fair_list("d", "vip-acme"), *extra)
    assert sync_redis.zrange(keys.fair_active("d"), 0, -1) == [b"small", b"vip-acme"]

    listed = run_gopherq(["keys", "-c", config, "--json"])
    assert listed.returncode == 0, listed.stderr
    rows = {row["key"]: row for row in json.loads(listed.stdout)}
    assert rows["vip-acme"]["backlog"] == 3 and rows["vip-acme"]["weight"] == 5 and rows["vip-acme"]["concurrency"] == 3
    assert rows["small"]["backlog"] == 1 and rows["small"]["weight"] == 2 and rows["vip-acme"]["source"] == "settings"
    assert rows["vip-acme"]["oldest_wait"] is not None

    changed = run_gopherq(["keys", "set", "vip-acme", "-c", config, "--weight", "3", "--rate", "5/s", "--json"])
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout) | {} == {
        "key": "vip-acme",
        "weight": 3,
        "concurrency": 3,
        "rate": 5.0,
        "burst": 1,
        "ordered": False,
        "paused": False,
    }
    paused = run_gopherq(["keys", "pause", "vip-acme", "-c", config])
    assert paused.returncode == 0 and "PAUSED" in paused.stdout
    assert run_gopherq(["keys", "resume", "vip-acme", "-c", config]).returncode == 0
    reset = run_gopherq(["keys", "reset", "vip-acme", "-c", config, "--json"])
    assert json.loads(reset.stdout)["weight"] == 5
    assert sync_redis.hlen(keys.fair_config) == 0


def test_bad_key_rate_and_settings_exit_2(run_gopherq: Run, tmp_path: Path, redis_url: str, queue_name: str) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))
    proc = run_gopherq(["keys", "set", "bad\nkey", "-c", config, "--weight", "2"])
    assert_one_line_error(proc, 2, "fair key")
    proc = run_gopherq(["keys", "set", "k", "-c", config, "--rate", "fast"])
    assert proc.returncode == 2 and "rate" in proc.stderr
    bad = write_config(tmp_path, '[[fair.keys]]\npattern = "x*"\nrate = "5 per second"\n', name="bad.toml")
    assert_one_line_error(run_gopherq(["keys", "-c", str(bad)]), 2, "rate")
    bad = write_config(tmp_path, "[fair]\ndefault_weight = 0\n", name="bad2.toml")
    assert_one_line_error(run_gopherq(["keys", "-c", str(bad)]), 2, "default_weight")


def test_tasks_ready_lists_tasks_in_fair_keys_and_goes_on_by_cursor(
    run_gopherq: Run, tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))
    for n, key in enumerate((None, "tenant-b", "tenant-a", None, "tenant-b")):
        flags = ["--fair-key", key] if key else []
        proc = run_gopherq(["enqueue", "-c", config, "--url", "http://127.0.0.1:9/", "--id", f"t{n}", *flags])
        assert proc.returncode == 0, proc.stderr
    # Keyless first (head first), then each key's by turn: both keys started at the same turn, so by name.
    expected = [("t0", None), ("t3", None), ("t2", "tenant-a"), ("t1", "tenant-b"), ("t4", "tenant-b")]

    listed = run_gopherq(["tasks", "ready", "-c", config, "--json"])
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert [(item["id"], item["fair_key"]) for item in page["items"]] == expected
    queues = json.loads(run_gopherq(["queues", "-c", config, "--json"]).stdout)
    ready = next(info["ready"] for info in queues if info["name"] == queue_name)
    assert page["total"] == ready == 5

    first = run_gopherq(["tasks", "ready", "-c", config, "--limit", "3"])
    assert first.returncode == 0 and "in fair key tenant-a" in first.stdout
    cursor = first.stderr.rsplit("--cursor ", 1)[1].strip()
    rest = run_gopherq(["tasks", "ready", "-c", config, "--limit", "3", "--cursor", cursor, "--json"])
    assert [(item["id"], item["fair_key"]) for item in json.loads(rest.stdout)["items"]] == expected[3:]

    assert_one_line_error(run_gopherq(["tasks", "ready", "-c", config, "--cursor", "nonsense"]), 2, "cursor")
    assert_one_line_error(run_gopherq(["tasks", "running", "-c", config, "--cursor", cursor]), 2, "--cursor")
