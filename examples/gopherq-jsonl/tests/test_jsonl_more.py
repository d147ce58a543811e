"""More of the JSON-lines sink: what test_jsonl.py (the guide's) does not show, and finding the installed
distribution through its entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gopherq import ExecutionContext, RegisterExecutor, Task, hookimpl
from gopherq.testing import PluginHarness, RedisQueue, make_event

import gopherq_jsonl


def harness(**settings: Any) -> PluginHarness:
    return PluginHarness({"jsonl": gopherq_jsonl}, settings={"plugins": {"jsonl": settings}})


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_switched_off_no_sink_is_registered() -> None:
    assert "jsonl" not in harness(path="x.jsonl", enabled=False).plugins.sinks


async def test_events_are_appended_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    h = harness(path=str(path), events=["task.*", "!task.started"])
    stats = await h.deliver(
        make_event("task.started", task_id="t1"),
        make_event("task.succeeded", task_id="t1", duration=0.5),
        make_event("worker.stopped"),
    )
    assert [(line["event"], line["task_id"]) for line in lines(path)] == [("task.succeeded", "t1")]
    assert lines(path)[0]["duration"] == 0.5
    assert stats["jsonl"]["delivered"] == 1
    await h.deliver(make_event("task.failed", task_id="t2"))  # appends to the same file
    assert [line["task_id"] for line in lines(path)] == ["t1", "t2"]


async def test_the_file_rotates_by_size_and_keeps_only_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    h = harness(path=str(path), max_bytes=300, backups=2, batch_size=1)
    await h.deliver(*(make_event("task.succeeded", task_id=f"t{i:03d}") for i in range(20)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for name in files:
        assert 0 < (tmp_path / name).stat().st_size <= 300
    kept = [line["task_id"] for name in reversed(files) for line in lines(tmp_path / name)]
    assert kept == sorted(kept) and kept[-1] == "t019"  # in order, the newest kept, the oldest deleted


async def test_a_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "gopherq.toml"
    config.parent.mkdir()
    config.write_text('[plugins.jsonl]\npath = "events.jsonl"\n')
    h = PluginHarness({"jsonl": gopherq_jsonl}, config=config)
    await h.deliver("task.enqueued")
    assert lines(tmp_path / "conf" / "events.jsonl")[0]["event"] == "task.enqueued"


class Noop:
    """A one-line executor plugin, so the worker has something to run."""

    async def execute(self, task: Task, context: ExecutionContext) -> str:
        return "done"

    @hookimpl
    def gopherq_register_executors(self, register: RegisterExecutor) -> None:
        register("noop", self)


async def test_a_real_worker_finds_it_by_its_entry_point(gopherq_queue: RedisQueue, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    settings = {"plugins": {"jsonl": {"path": str(path), "events": ["task.*"]}}}
    async with gopherq_queue.worker({"noop": Noop()}, load=["jsonl"], settings=settings) as running:
        task_id = await running.client.enqueue("noop")
        record = await running.client.wait(task_id, timeout=15)
        assert record is not None and record.result == "done"
    # The worker has stopped, so its sinks are drained and closed.
    events = [line["event"] for line in lines(path) if line.get("task_id") == task_id]
    assert events == ["task.dequeued", "task.started", "task.succeeded"]
