"""The operator commands as an on-call engineer types them (the real `gopherq` command): a typo in pause, resume or
cancel is one line and exit 1 with nothing changed, `task --explain`, the delayed split in `queues` and `tasks`,
dead letters by filter, `dlq curl` and `dlq edit`, and each change in the task's timeline with `user@host`."""

from __future__ import annotations

import getpass
import json
import socket
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.support.common import async_wait_until
from tests.support.faces import Faces, write_ops_config


def one_line_error(done: Any, *parts: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gopherq: error: "), done.stderr
    for part in parts:
        assert part in lines[0]


async def add_dead(redis: aioredis.Redis, queue: str, task: dict[str, Any], status: int, age: float) -> None:
    k = QueueKeys(queue)
    entry = {
        "task_id": task["id"],
        "reason": "retries_exhausted",
        "error": {"reason": "http_status", "message": f"HTTP {status}", "details": {"status_code": status}},
        "attempts": 3,
        "dead_at": time.time() - age,
        "raw": codec.dumps(task).decode(),
        "type": "http",
    }
    await redis.hset(k.dead, task["id"], codec.dumps(entry))
    await redis.zadd(k.dead_index, {task["id"]: (time.time() - age) * 1000})


async def test_typos_are_one_line_and_exit_1_and_change_nothing(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis
) -> None:
    async with Faces(write_ops_config(tmp_path, redis_url, queue_name), aredis) as faces:
        one_line_error(await faces.cli("pause", f"{queue_name}_typo"), f"no queue '{queue_name}_typo'")
        one_line_error(await faces.cli("resume", f"{queue_name}_typo"), "no queue")
        assert not await aredis.exists(QueueKeys(f"{queue_name}_typo").paused)
        one_line_error(await faces.cli("cancel", "no-such-task"), "no task 'no-such-task'")
        assert await aredis.zcard(QueueKeys(queue_name).cancels) == 0
        done = await faces.cli("pause", queue_name)  # the configured queue is known, even when empty
        assert done.returncode == 0 and done.stdout.strip() == f"{queue_name}: paused"


async def test_explain_lists_filters_curl_edit_and_the_audit_trail(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis
) -> None:
    config = write_ops_config(tmp_path, redis_url, queue_name, '[masking]\nheaders = ["X-Api-Key"]\n')
    async with Faces(config, aredis) as faces:
        async with AsyncClient(faces.settings) as client:
            await client.enqueue_http("https://example.com/later", id="later", delay=600)
        done = await faces.cli("task", "later", "--explain")
        assert done.returncode == 0 and done.stdout.startswith("later (delayed): scheduled: eta ")
        why = json.loads((await faces.cli("task", "later", "--explain", "--json")).stdout)
        assert why["waiting_for"] == "scheduled"
        listed = await faces.cli_queue(queue_name)
        assert listed is not None and (listed["retrying"], listed["scheduled"], listed["held"]) == (0, 1, 0)
        done = await faces.cli("queues")
        assert "RETRYING" in done.stdout and "HELD" in done.stdout
        done = await faces.cli("tasks", "scheduled")
        assert done.returncode == 0 and done.stdout.startswith("later  GET https://example.com/later  scheduled for")

        secret = {"X-Api-Key": "k-hunter2"}
        for n, (host, status) in enumerate([("a.example", 503), ("b.example", 503), ("a.example", 404)]):
            task = {"id": f"dead{n}", "type": "http", "method": "GET", "url": f"https://{host}/x", "headers": secret}
            await add_dead(aredis, queue_name, task, status, age=600 + n)
        done = await faces.cli("dlq", "list", "--host", "a.example", "--status", "503")
        assert done.returncode == 0 and done.stdout.split()[0] == "dead0" and "dead2" not in done.stdout
        bad = await faces.cli("dlq", "list", "--older-than", "soon")
        assert bad.returncode == 2 and "older_than" in bad.stderr
        done = await faces.cli("dlq", "curl", "dead1")
        assert done.stdout.strip() == "curl --request GET --header 'X-Api-Key: ********' https://b.example/x"
        edit = tmp_path / "edit.json"
        fixed = {"type": "http", "url": "https://b.example/fixed", "headers": {"X-Api-Key": "********"}}
        edit.write_text(json.dumps(fixed))
        done = await faces.cli("dlq", "edit", "dead1", "--from", str(edit), "--json")
        assert done.returncode == 0, done.stderr
        new_id = json.loads(done.stdout)["id"]
        ready = await aredis.lrange(queue_name, 0, -1)
        copy = next(codec.loads(raw) for raw in ready if codec.loads(raw).get("id") == new_id)
        assert copy["headers"]["X-Api-Key"] == "k-hunter2" and copy["url"] == "https://b.example/fixed"
        done = await faces.cli("dlq", "requeue", "--host", "a.example", "--json")
        assert json.loads(done.stdout) == {"requeued": 2, "matched": 2, "scanned": 3}
        done = await faces.cli("dlq", "delete", "--reason", "retries_exhausted", "--yes")
        assert done.returncode == 0 and done.stdout.startswith("deleted 1 of 1 matching")
        assert await aredis.zcard(QueueKeys(queue_name).dead_index) == 0

        actor = f"{getpass.getuser()}@{socket.gethostname()}"

        async def audited() -> bool:
            async with AsyncClient(faces.settings) as client:
                info = await client.inspect.task(queue_name, "dead0")
            found = [e.data for e in (info.events if info else []) if e.name == "operator.action"]
            return any(d["action"] == "requeue" and d["actor"] == actor and d["source"] == "cli" for d in found)

        await async_wait_until(audited, what="the requeue with its actor in dead0's timeline")
