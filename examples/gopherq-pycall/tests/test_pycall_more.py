"""More of the pycall executor: what test_pycall.py (the guide's) does not show, and finding the installed
distribution through its entry point."""

from __future__ import annotations

import threading

import pycall_targets
import pytest
from gopherq.testing import PluginHarness, RedisQueue

import gopherq_pycall


def harness(**settings: object) -> PluginHarness:
    return PluginHarness({"pycall": gopherq_pycall}, settings={"plugins": {"pycall": settings}})


def pycall(function: str, *args: object, **kwargs: object) -> dict[str, object]:
    return {"type": "pycall", "function": function, "args": list(args), "kwargs": kwargs}


async def test_keyword_arguments_are_passed() -> None:
    async with harness() as h:
        run = await h.run(pycall("pycall_targets:greet", "ada", punctuation="?"))
    assert run.succeeded, run.error
    assert run.result == "hello ada?"


async def test_async_callables_are_awaited_and_qualnames_resolve() -> None:
    async with harness() as h:
        assert (await h.run(pycall("pycall_targets:add_async", 2, 3))).result == 5
        assert (await h.run(pycall("pycall_targets:Jobs.double", 21))).result == 42


@pytest.mark.parametrize(("threads", "in_main_thread"), [(True, False), (False, True)])
async def test_threads_setting_chooses_where_plain_callables_run(threads: bool, in_main_thread: bool) -> None:
    async with harness(threads=threads) as h:
        run = await h.run(pycall("pycall_targets:thread_name"))
    assert (run.result == threading.main_thread().name) is in_main_thread


def test_sync_tests_can_use_run_sync() -> None:
    assert harness().run_sync(pycall("operator:mul", 6, 7)).result == 42


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"type": "pycall"}, "field 'function' is required"),
        ({"type": "pycall", "function": "os.path.join"}, "field 'function'"),
        ({"type": "pycall", "function": "os:getcwd", "args": "x"}, "field 'args'"),
        ({"type": "pycall", "function": "os:getcwd", "color": "red"}, "field 'color' is not a field"),
    ],
)
async def test_bad_payloads_are_rejected_naming_the_field(task: dict[str, object], message: str) -> None:
    async with harness() as h:
        run = await h.run(task)
    assert run.status == "rejected"
    assert run.error is not None and run.error.reason == "schema_invalid"
    assert message in run.error.message


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        ("no_such_module_xyz:f", "bad_function"),
        ("pycall_targets:missing", "bad_function"),
        ("pycall_targets:NOT_CALLABLE", "bad_function"),
        ("pycall_targets:not_json", "bad_result"),
        ("pycall_targets:give_up", "failed"),
    ],
)
async def test_what_retrying_cannot_fix_fails_permanently(function: str, reason: str) -> None:
    async with harness() as h:
        run = await h.run(pycall(function))
    assert run.status == "failed" and run.retryable is False
    assert run.error is not None and run.error.reason == reason, run.error


async def test_exceptions_fail_the_attempt_and_may_ask_for_a_delay() -> None:
    async with harness() as h:
        boom = await h.run(pycall("pycall_targets:boom"))
        later = await h.run(pycall("pycall_targets:slow_down"))
    assert boom.status == "failed" and boom.retryable is True
    assert boom.error is not None and boom.error.message == "ValueError: boom"
    assert later.retryable is True and later.delay == 7.5


async def test_resolved_callables_are_cached() -> None:
    async with harness() as h:
        await h.run(pycall("pycall_targets:record", "a"))
        executor = h.plugins.executors["pycall"].executor
        cached = executor._cache["pycall_targets:record"]
        await h.run(pycall("pycall_targets:record", "b"))
        assert executor._cache["pycall_targets:record"] is cached
    assert pycall_targets.calls[-2:] == ["a", "b"]


async def test_a_real_worker_finds_the_plugin_by_its_entry_point(gopherq_queue: RedisQueue) -> None:
    async with gopherq_queue.worker(load=["pycall"]) as running:
        assert running.plugins.info["pycall"].distribution == "gopherq-pycall"
        task_id = await running.client.enqueue("pycall", function="operator:add", args=[20, 22])
        record = await running.client.wait(task_id, timeout=15)
    assert record is not None and record.status.value == "succeeded", record
    assert record.result == 42
