"""The pycall executor through gopherq.testing: a task run the way a worker runs it, then a real worker."""

from __future__ import annotations

from gopherq.testing import PluginHarness, RedisQueue

import gopherq_pycall


def harness(**settings: object) -> PluginHarness:
    return PluginHarness({"pycall": gopherq_pycall}, settings={"plugins": {"pycall": settings}})


async def test_the_result_is_the_return_value() -> None:
    async with harness() as h:
        run = await h.run({"type": "pycall", "function": "operator:add", "args": [2, 3]})
    assert run.succeeded, run.error
    assert run.result == 5


async def test_a_bad_payload_is_refused_naming_the_field() -> None:
    async with harness() as h:
        run = await h.run({"type": "pycall", "function": "os.path.join", "kwarg": {}})
    assert run.status == "rejected" and run.error is not None
    assert "field 'function'" in run.error.message
    assert "field 'kwarg' is not a field of this task type (did you mean 'kwargs'?)" in run.error.message


async def test_a_callable_that_cannot_be_loaded_fails_without_a_retry() -> None:
    async with harness() as h:
        run = await h.run({"type": "pycall", "function": "no_such_module:f"})
    assert run.status == "failed" and run.retryable is False
    assert run.error is not None and run.error.reason == "bad_function"


async def test_a_real_worker_runs_it(gopherq_queue: RedisQueue) -> None:
    """Needs a Redis (GOPHERQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/0); skipped without one."""
    async with gopherq_queue.worker({"pycall": gopherq_pycall}) as running:
        task_id = await running.client.enqueue("pycall", function="operator:add", args=[20, 22])
        record = await running.client.wait(task_id, timeout=15)
    assert record is not None and record.result == 42
