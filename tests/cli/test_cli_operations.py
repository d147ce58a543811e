"""The console's operator commands through the real CLI: `schedule run|pause|resume`, `host close|reset`,
`run-now`, `delete-task` and `redis`; a name or id that matches nothing exits 1 with one line; each action is an
`operator.action` event naming `user@host` and the CLI (a task's in its timeline too)."""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import redis

from gopherq.core.keys import QueueKeys
from tests.support.common import wait_until


def audited(client: redis.Redis, keys: QueueKeys, task_id: str | None = None) -> list[tuple[str, str | None]]:
    """(action, task id) of the `operator.action` events by this CLI user in the queue's stream (or in one task's
    timeline: entries are "<stream id> <event JSON>")."""
    if task_id is None:
        lines = [fields[b"event"] for _, fields in client.xrange(keys.events)]
    else:
        lines = [raw.partition(b" ")[2] for raw in client.lrange(keys.timeline(task_id), 0, -1)]
    actor = f"{getpass.getuser()}@{socket.gethostname()}"
    events = [json.loads(line) for line in lines]
    return [
        (event["data"]["action"], event.get("task_id"))
        for event in events
        if event.get("event") == "operator.action"
        and event["data"].get("actor") == actor
        and event["data"].get("source") == "cli"
    ]


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
    client.zadd(keys.flows, {"dest.example": time.time() * 1000})
    for action in ("close", "reset"):
        done = run_gopherq(["host", action, "dest.example", "-c", str(config), "-q", queue_name])
        assert done.returncode == 0 and f"on {queue_name}" in done.stdout, done.stderr

    expected = [
        ("schedule_run", task_id),
        ("schedule_pause", None),
        ("schedule_resume", None),
        ("run_now", task_id),
        ("delete_task", task_id),
        ("close_circuit", None),
        ("reset_rate", None),
    ]
    wait_until(lambda: set(expected) <= set(audited(client, keys)), timeout=10, what="the CLI's actions in the stream")
    assert {"schedule_run", "run_now", "delete_task"} <= {action for action, _ in audited(client, keys, task_id)}

    facts = run_gopherq(["redis", "-c", str(config), "--json"])
    assert facts.returncode == 0, facts.stderr
    parsed = json.loads(facts.stdout)
    assert parsed["replication"]["role"] == "master" and "maxmemory_policy" in parsed["memory"]
