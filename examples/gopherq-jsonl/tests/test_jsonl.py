"""The JSON-lines sink through gopherq.testing: events fed through a real sink buffer, then a real worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gopherq import ExecutionContext, RegisterExecutor, Task, hookimpl
from gopherq.testing import PluginHarness, RedisQueue, make_event

import gopherq_jsonl


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_events_are_appended_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    harness = PluginHarness({"jsonl": gopherq_jsonl}, settings={"plugins": {"jsonl": {"path": str(path)}}})
    stats = await harness.deliver(make_event("task.succeeded", task_id="t1"), make_event("task.failed", task_id="t2"))
    assert [line["task_id"] for line in lines(path)] == ["t1", "t2"]
    assert lines(path)[1]["event"] == "task.failed"
    assert stats["jsonl"]["delivered"] == 2


def test_without_a_path_no_sink_is_registered() -> None:
    assert "jsonl" not in PluginHarness({"jsonl": gopherq_jsonl}).plugins.sinks


class Noop:
    """A one-line executor plugin, so that the worker has a task to run."""

    async def execute(self, task: Task, context: ExecutionContext) -> str:
        return "done"

    @hookimpl
    def gopherq_register_executors(self, register: RegisterExecutor) -> None:
        register("noop", self)


async def test_a_real_worker_writes_its_events(gopherq_queue: RedisQueue, tmp_path: Path) -> None:
    """Needs a Redis (GOPHERQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/0); skipped without one."""
    path = tmp_path / "events.jsonl"
    settings = {"plugins": {"jsonl": {"path": str(path), "events": ["task.*"]}}}
    async with gopherq_queue.worker({"noop": Noop(), "jsonl": gopherq_jsonl}, settings=settings) as running:
        task_id = await running.client.enqueue("noop")
        assert await running.client.wait(task_id, timeout=15)
    # The worker has stopped, so its sinks are drained and closed.
    events = [line["event"] for line in lines(path) if line.get("task_id") == task_id]
    assert events == ["task.dequeued", "task.started", "task.succeeded"]
