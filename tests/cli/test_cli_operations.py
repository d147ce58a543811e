"""The console's operator commands through the real CLI: `schedule run|pause|resume`, `host close|reset`,
`run-now`, `delete-task` and `redis`; a name or id that matches nothing exits 1 with one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from gopherq.core.keys import QueueKeys


def test_operator_commands(run_gopherq: Callable[..., Any], redis_url: str, queue_name: str, tmp_path: Any) -> None:
    config = tmp_path / "gopherq.toml"
    config.write_text(
        f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"
        "[[schedules]]\nname = 'nightly'\ncron = '0 3 * * *'\ntimezone = 'Europe/Berlin'\n"
        "task = { method = 'GET', url = 'https://example.com/nightly' }\n"
    )
    client = redis.Redis.from_url(redis_url)
    keys = QueueKeys(queue_name)

    done = run_gopherq(["schedule", "run", "nightly", "-c", str(config)])
    assert done.returncode == 0 and "nightly: enqueued nightly@" in done.stdout, done.stderr
    [raw] = client.lrange(queue_name, 0, -1)
    task_id = json.loads(raw)["id"]
    assert run_gopherq(["schedule", "pause", "nightly", "-c", str(config)]).returncode == 0
    listed = run_gopherq(["schedules", "-c", str(config)])
    assert "PAUSED" in listed.stdout and client.hexists(keys.schedules_paused, "nightly")
    assert run_gopherq(["schedule", "resume", "nightly", "-c", str(config)]).returncode == 0
    assert not client.hexists(keys.schedules_paused, "nightly")
    typo = run_gopherq(["schedule", "pause", "nigthly", "-c", str(config)])
    assert typo.returncode == 1 and typo.stderr.count("\n") == 1 and "no schedule named 'nigthly'" in typo.stderr

    assert run_gopherq(["run-now", task_id, "-c", str(config)]).returncode == 0
    done = run_gopherq(["delete-task", task_id, "-c", str(config)])
    assert done.returncode == 0 and f"{task_id}: deleted" in done.stdout
    assert client.llen(queue_name) == 0 and b'"cancelled"' in client.get(keys.result(task_id))
    gone = run_gopherq(["delete-task", task_id, "-c", str(config)])
    assert gone.returncode == 1 and "is not waiting" in gone.stderr

    unknown = run_gopherq(["host", "close", "nowhere.example", "-c", str(config), "-q", queue_name])
    assert unknown.returncode == 1 and "no destination 'nowhere.example'" in unknown.stderr

    facts = run_gopherq(["redis", "-c", str(config), "--json"])
    assert facts.returncode == 0, facts.stderr
    parsed = json.loads(facts.stdout)
    assert parsed["replication"]["role"] == "master" and "maxmemory_policy" in parsed["memory"]
