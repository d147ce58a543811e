"""gopherq.testing, the kit for plugin authors: the harness runs tasks through the worker's execution path and
feeds sinks through real buffers; the recorder and the Redis queue fixture work; and the pytest plugin is cheap
to load, adds fixtures only, and skips cleanly without Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gopherq import Event, ExecutionContext, RegisterExecutor, RegisterSink, Task, hookimpl
from gopherq.testing import EventRecorder, PluginHarness, RedisQueue, make_event

pytest_plugins = ["pytester"]


class Kinds:
    """Executors of every shape a plugin may have."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    @hookimpl
    def gopherq_register_executors(self, register: RegisterExecutor) -> None:
        outer = self

        class Slow:
            async def execute(self, task: Task, context: ExecutionContext) -> None:
                await asyncio.sleep(5)

        class Plain:
            def execute(self, task: Task, context: ExecutionContext) -> Any:
                outer.threads.append(threading.current_thread().name)
                return {"tags": {"b", "a"} if task.fields.get("set") else [], "attempt": context.attempt}

        register("slow", Slow())
        register("plain", Plain())


def test_the_pytest_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, gopherq.testing; "
        "print(sorted(m for m in ('redis', 'pydantic', 'httpx', 'gopherq.client', 'asyncio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_the_harness_runs_an_http_task_through_validation_and_the_real_executor(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hello").respond_with_data("hi there")
    async with PluginHarness() as harness:
        run = await harness.run({"type": "http", "url": httpserver.url_for("/hello")})
        rejected = await harness.run({"type": "http", "url": "ftp://x"})
        unknown = await harness.run({"type": "nope"})
    assert run.succeeded and run.result["status_code"] == 200 and run.result["body"] == "hi there"
    assert rejected.status == "rejected" and rejected.error is not None
    assert rejected.error.reason == "schema_invalid" and "field 'url'" in rejected.error.message
    assert unknown.status == "rejected" and unknown.error is not None and unknown.error.reason == "unknown_type"


async def test_the_harness_applies_time_limits_the_thread_wrapper_and_result_serialisation() -> None:
    kinds = Kinds()
    async with PluginHarness({"kinds": kinds}) as harness:
        slow = await harness.run({"type": "slow"}, timeout=0.05)
        plain = await harness.run({"type": "plain", "set": True}, attempt=3)
    assert slow.status == "failed" and slow.retryable and slow.error is not None and slow.error.reason == "timeout"
    assert plain.succeeded and sorted(plain.result["tags"]) == ["a", "b"] and plain.result["attempt"] == 3
    assert kinds.threads and kinds.threads[0] != threading.main_thread().name


def test_run_sync_serves_synchronous_tests() -> None:
    assert PluginHarness({"kinds": Kinds()}).run_sync({"type": "plain"}).result == {"tags": [], "attempt": 1}


class SyncSink:
    def __init__(self) -> None:
        self.names: list[str] = []

    def handle(self, events: list[Event]) -> None:
        self.names.extend(event.name for event in events)

    @hookimpl
    def gopherq_register_sinks(self, register: RegisterSink) -> None:
        register("sync", self, events=["task.*"])


async def test_deliver_feeds_sinks_through_their_filters_and_buffers() -> None:
    sink, recorder = SyncSink(), EventRecorder(events=["worker.*"])
    harness = PluginHarness({"sync": sink, "recorder": recorder})
    stats = await harness.deliver("task.started", make_event("worker.started"), "task.succeeded")
    assert sink.names == ["task.started", "task.succeeded"]
    assert recorder.names == ["worker.started"]
    assert stats["sync"]["delivered"] == 2 and stats["recorder"]["delivered"] == 1


async def test_the_recorder_waits_for_events_and_says_what_it_got_when_they_do_not_come() -> None:
    recorder = EventRecorder()
    harness = PluginHarness({"recorder": recorder})
    await harness.deliver(make_event("task.failed", task_id="a"))
    assert (await recorder.wait_for("task.failed", task_id="a"))[0].task_id == "a"
    with pytest.raises(AssertionError, match=r"1 task.failed event\(s\) \{'task_id': 'b'\}; got: \['task.failed'\]"):
        await recorder.wait_for("task.failed", task_id="b", timeout=0.1)


async def test_the_queue_fixture_runs_a_real_worker(gopherq_queue: RedisQueue, sync_redis: Any) -> None:
    recorder = EventRecorder(events=["task.*"])
    async with gopherq_queue.worker({"kinds": Kinds(), "recorder": recorder}) as running:
        task_id = await running.client.enqueue("plain")
        record = await running.client.wait(task_id, timeout=15)
        await recorder.wait_for("task.succeeded", task_id=task_id)
    assert record is not None and record.result == {"tags": [], "attempt": 1}
    assert list(sync_redis.scan_iter(match=f"gopherq:{{{gopherq_queue.name}}}:*"))
    gopherq_queue.cleanup()
    assert not list(sync_redis.scan_iter(match=f"gopherq:{{{gopherq_queue.name}}}:*"))


PLAIN_SUITE = """
def test_unrelated():
    assert 1 + 1 == 2

def test_with_redis(gopherq_queue):
    assert gopherq_queue.name.startswith("gq_test_")
"""


def test_a_suite_that_merely_has_gopherq_installed_is_unaffected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLAIN_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)
    fixtures = pytester.runpytest_subprocess("--fixtures", "-p", "no:asyncio").stdout.str()
    for name in ("gopherq_queue", "gopherq_events", "gopherq_redis_url"):
        assert name in fixtures


def test_the_queue_fixture_skips_when_no_redis_answers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOPHERQ_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
    pytester.makepyfile(PLAIN_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no Redis at redis://127.0.0.1:1/0*GOPHERQ_TEST_REDIS_URL*"])
