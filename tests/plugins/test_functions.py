"""Python functions as tasks: `@app.task`, `.enqueue`/`.delay` and `.result()` round-trip arguments and return
values through a real worker (sync functions in a thread, async ones on the loop); unserialisable arguments are
refused at enqueue with the argument named; failures and unserialisable results come back as TaskFailed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from gopherq import ConfigError, Settings, TaskFailed, TaskRejected
from gopherq.functions import REGISTRY
from tests.support import function_targets as targets


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(plugins={"functions": {"modules": ["tests.support.function_targets"]}})
    targets.app.settings = settings
    return settings


async def test_the_decorator_round_trips_args_and_results(settings: Settings, start_worker: Callable[..., Any]) -> None:
    await start_worker(settings)
    handle = await targets.add.aenqueue(2, 40)
    assert await handle.aresult(timeout=10) == 42
    nested = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    handle = await targets.describe.aenqueue("x", tags=["t1", "t2"], nested=nested)
    value = await handle.aresult(timeout=10)
    assert value["name"] == "x" and value["tags"] == ["t1", "t2"] and value["nested"] == nested
    # Sync functions run in the thread pool, not on the event loop's thread.
    name = await (await targets.thread_name.aenqueue()).aresult(timeout=10)
    assert name != threading.current_thread().name
    assert targets.add(1, 2) == 3  # calling it runs it here
    assert "tests.support.function_targets:add" in REGISTRY


async def test_failures_and_unserialisable_results_come_back_as_errors(
    settings: Settings, start_worker: Callable[..., Any]
) -> None:
    await start_worker(settings)
    with pytest.raises(TaskFailed, match="ValueError: boom"):
        await (await targets.fails.aenqueue("boom")).aresult(timeout=10)
    with pytest.raises(
        TaskFailed, match=r"result of tests\.support\.function_targets:returns_a_set cannot be serialised"
    ):
        await (await targets.returns_a_set.aenqueue()).aresult(timeout=10)


def test_unserialisable_arguments_are_refused_at_enqueue(settings: Settings) -> None:
    with pytest.raises(
        TaskRejected, match=r"argument 2 of tests.support.function_targets:add cannot be serialised \(set\)"
    ):
        targets.add.enqueue(1, {2})
    with pytest.raises(TaskRejected, match=r"argument 'tags' of tests.support.function_targets:describe .*\(object\)"):
        targets.describe.delay("x", tags=object())  # type: ignore[arg-type]
    targets.app.close()


def test_the_sync_api_enqueues_with_options(settings: Settings, sync_redis: Any, queue_name: str) -> None:
    handle = targets.add.with_options(priority="high", unique_for=60).enqueue(1, 2)
    again = targets.add.with_options(priority="high", unique_for=60).enqueue(1, 2)
    assert again.duplicate and again.id == handle.id
    assert sync_redis.llen(f"gopherq:{{{queue_name}}}:ready:high") == 1
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.2)  # no worker runs here
    targets.app.close()


async def test_a_module_that_cannot_be_imported_stops_start_up(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(plugins={"functions": {"modules": ["tests.no_such_module"]}})
    with pytest.raises(ConfigError, match=r"plugins\.functions\.modules: cannot import 'tests\.no_such_module'"):
        await start_worker(settings)
