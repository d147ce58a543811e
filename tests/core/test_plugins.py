"""The plugin manager with plugin objects: registration errors (one line, naming the plugin), hooks that take
fewer arguments, and, on a real worker, executor and sink failures that are recorded and never stop it."""

from __future__ import annotations

import logging
import threading
import types
from typing import Any

import click
import pytest

from gopherq import (
    AsyncClient,
    Event,
    ExecutionContext,
    PluginError,
    PluginSettings,
    RegisterExecutor,
    RegisterSettings,
    RegisterSink,
    Settings,
    Task,
    hookimpl,
)
from gopherq.cli.root import LazyGroup
from gopherq.core.errors import ConfigError
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.settings import load_settings
from gopherq.testing import EventRecorder
from tests.support.common import async_wait_until


def plugin(**hooks: Any) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(func) for name, func in hooks.items()})


def load(*, settings: dict[str, Any] | None = None, **extra: Any) -> PluginManager:
    return load_plugins(load_settings(None, settings or {}, environ={}), extra=extra, sinks=True)


class Echo:
    def execute(self, task: Task, context: ExecutionContext) -> Any:
        return task.fields


def test_a_duplicate_executor_name_stops_start_up_unless_replace_is_asked() -> None:
    def steal(register: RegisterExecutor) -> None:
        register("http", Echo())

    with pytest.raises(PluginError) as caught:
        load(thief=plugin(gopherq_register_executors=steal))
    assert str(caught.value) == (
        "plugin 'thief' (no distribution, types): executor 'http' is already registered by plugin 'http' "
        "(pass replace=True to override)"
    )

    def replace(register: RegisterExecutor) -> None:
        register("http", Echo(), replace=True)

    manager = load(mine=plugin(gopherq_register_executors=replace))
    assert manager.executors["http"].plugin == "mine" and isinstance(manager.executors["http"].executor, Echo)


def test_a_duplicate_plugin_name_stops_start_up() -> None:
    with pytest.raises(PluginError, match="duplicate plugin name: 'http' is already plugin 'http'"):
        load(http=plugin())


def test_a_duplicate_settings_table_or_a_non_model_stops_start_up() -> None:
    class Model(PluginSettings):
        x: int = 1

    def claim_http(register: RegisterSettings) -> None:
        register(Model, name="http")

    with pytest.raises(PluginError, match="settings table 'http' is already registered by 'http'"):
        load(claimer=plugin(gopherq_register_settings=claim_http))

    def not_a_model(register: Any) -> None:
        register(dict)

    with pytest.raises(PluginError, match="must be a pydantic model class"):
        load(odd=plugin(gopherq_register_settings=not_a_model))


def test_a_hook_with_arguments_the_spec_lacks_is_one_line() -> None:
    def wrong(register: Any, settings: Any, extra: Any) -> None:
        pass

    with pytest.raises(PluginError) as caught:
        load(wrong=plugin(gopherq_register_executors=wrong))
    assert str(caught.value) == (
        "plugin 'wrong' (no distribution, types): hook gopherq_register_executors takes argument(s) {'extra'} "
        "that it is not given (it is given: register, settings)"
    )


def test_an_unknown_hook_on_a_plugin_object_stops_start_up() -> None:
    with pytest.raises(PluginError, match=r"implements unknown hook gopherq_starup \(did you mean gopherq_startup\?\)"):
        load(typo=plugin(gopherq_starup=lambda worker: None))


def test_a_hook_that_raises_names_the_plugin_and_the_hook() -> None:
    def explode(register: Any) -> None:
        raise RuntimeError("no config\nsecond line")

    with pytest.raises(PluginError) as caught:
        load(bad=plugin(gopherq_register_sinks=explode))
    assert str(caught.value) == (
        "plugin 'bad' (no distribution, types): gopherq_register_sinks failed: RuntimeError: no config second line"
    )


def test_a_sink_without_handle_or_with_a_zero_buffer_is_refused() -> None:
    with pytest.raises(PluginError, match="sink 'nothing' has no handle"):
        load(s=plugin(gopherq_register_sinks=lambda register: register("nothing", object())))
    recorder = EventRecorder()
    with pytest.raises(PluginError, match="buffer_size and batch_size must be at least 1"):
        load(s=plugin(gopherq_register_sinks=lambda register: register("r", recorder, buffer_size=0)))


def test_hooks_may_take_fewer_arguments_than_their_spec() -> None:
    manager = load(small=plugin(gopherq_register_executors=lambda register: register("echo", Echo())))
    assert "echo" in manager.executors


def test_a_table_no_plugin_owns_is_an_error_with_a_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"plugins.htp: no loaded plugin has settings named 'htp' \(did you mean"):
        load(settings={"plugins": {"htp": {"body_limit": 1}}})


def test_a_plugin_command_may_not_replace_a_builtin_one() -> None:
    group = click.Group()

    @group.command("run")
    def run() -> None:
        pass

    def hijack(cli: click.Group) -> None:
        @cli.command("run")
        def evil() -> None:
            pass

    manager = load(hijack=plugin(gopherq_register_commands=hijack))
    with pytest.raises(PluginError, match="replaces the command 'run'"):
        manager.register_commands(group)


def test_a_plugin_command_may_not_take_a_builtin_name_the_gopherq_group_has_not_loaded_yet() -> None:
    group = LazyGroup()  # lists every built-in command; loads one only when it runs

    def hijack(cli: click.Group) -> None:
        @cli.command("result")
        def evil() -> None:
            pass

    assert "result" not in group.commands
    manager = load(hijack=plugin(gopherq_register_commands=hijack))
    with pytest.raises(PluginError, match="replaces the command 'result'"):
        manager.register_commands(group)


class Flaky:
    """Raises on tasks whose `explode` field is set; records the threads sync executions ran in."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def execute(self, task: Task, context: ExecutionContext) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        if task.fields.get("explode"):
            raise ValueError("boom")
        return {"ok": True}

    @hookimpl
    def gopherq_register_executors(self, register: RegisterExecutor) -> None:
        register("flaky", self)


async def test_an_executor_exception_fails_the_task_with_its_error_recorded_and_the_worker_goes_on(
    make_settings: Any, start_worker: Any
) -> None:
    settings: Settings = make_settings(queue={"max_attempts": 1})
    flaky = Flaky()
    recorder = EventRecorder(events=["task.*"])
    await start_worker(settings, extra_plugins={"flaky": flaky, "recorder": recorder})
    async with AsyncClient(settings, plugins=load_plugins(settings, extra={"flaky": Flaky()})) as client:
        bad = await client.enqueue("flaky", explode=True)
        failed = await client.wait(bad, timeout=15)
        good = await client.enqueue("flaky")
        succeeded = await client.wait(good, timeout=15)
    assert failed is not None and failed.status.value == "dead"
    assert failed.error is not None
    assert (failed.error.reason, failed.error.message) == ("exception", "ValueError: boom")
    assert "ValueError: boom" in failed.error.details["traceback"]
    assert failed.dead_reason == "retries_exhausted"
    assert succeeded is not None and succeeded.status.value == "succeeded" and succeeded.result == {"ok": True}
    assert threading.main_thread().name not in flaky.threads  # a plain `def execute` runs in a thread
    failed_event = (await recorder.wait_for("task.failed", task_id=bad))[0]
    assert failed_event.error is not None and failed_event.error["message"] == "ValueError: boom"


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def handle(self, events: list[Event]) -> None:  # a sync sink: runs in a thread
        self.calls += 1
        raise OSError("disk full")

    @hookimpl
    def gopherq_register_sinks(self, register: RegisterSink) -> None:
        register("broken", self, events=["task.*"], batch_size=1)


async def test_a_sink_exception_is_logged_and_counted_and_nothing_else_notices(
    make_settings: Any, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings: Settings = make_settings()
    broken, recorder = BrokenSink(), EventRecorder(events=["task.*"])
    with caplog.at_level(logging.ERROR, logger="gopherq.core.events"):
        running = await start_worker(settings, extra_plugins={"flaky": Flaky(), "broken": broken, "recorder": recorder})
        async with AsyncClient(settings, plugins=load_plugins(settings, extra={"flaky": Flaky()})) as client:
            ids = [await client.enqueue("flaky") for _ in range(3)]
            for task_id in ids:
                record = await client.wait(task_id, timeout=15)
                assert record is not None and record.status.value == "succeeded"
        await recorder.wait_for("task.succeeded", count=3)
        await async_wait_until(lambda: running.worker.bus.stats()["broken"]["failed_batches"] >= 9)
        stats = running.worker.bus.stats()
    assert stats["broken"]["delivered"] == 0 and stats["broken"]["failed_events"] >= 9
    assert stats["recorder"]["failed_batches"] == 0
    assert "event sink broken failed on a batch of 1 events" in caplog.text
    assert "OSError: disk full" in caplog.text
    # Only the first failures carry a traceback, so a sink failing on every batch cannot flood the log.
    assert caplog.text.count("Traceback") == 3


async def test_a_failing_startup_hook_is_logged_and_the_worker_runs(
    make_settings: Any, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def startup(worker: Any) -> None:
        raise RuntimeError("cannot warm cache")

    async def shutdown(worker: Any) -> None:
        seen.append(worker.id)

    settings: Settings = make_settings()
    with caplog.at_level(logging.ERROR, logger="gopherq.core.plugins"):
        running = await start_worker(
            settings,
            extra_plugins={"life": plugin(gopherq_startup=startup, gopherq_shutdown=shutdown), "flaky": Flaky()},
        )
        async with AsyncClient(settings, plugins=load_plugins(settings, extra={"flaky": Flaky()})) as client:
            record = await client.wait(await client.enqueue("flaky"), timeout=15)
        assert record is not None and record.status.value == "succeeded"
        await running.stop()
    assert "plugin 'life' (no distribution, types): gopherq_startup failed" in caplog.text
    assert seen == [running.worker.id]


async def test_events_take_the_bus_defaults_unless_they_say_otherwise() -> None:
    from gopherq.core.events import EventBus

    recorder = EventRecorder()
    bus = EventBus()
    bus.defaults = {"worker": "w", "queue": "q"}
    bus.add_sink("recorder", recorder)
    bus.start()
    bus.emit("task.started", task_id="t1", queue="other")
    bus.emit("custom.thing", data={"colour": "red"})  # plugins may emit events of their own
    await recorder.wait_for("custom.thing")
    await bus.close()
    started, custom = recorder.events
    assert (started.worker, started.queue, started.data) == ("w", "other", {})
    assert (custom.worker, custom.queue, custom.data) == ("w", "q", {"colour": "red"})


class Wrappers:
    """Attempt wrappers of both kinds (`gopherq_wrap_attempt`): a plain function that hands back the attempt's own
    awaitable, and an async one around it; either raises for a task with `wrapper_fails`, before or after."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    @hookimpl
    def gopherq_wrap_attempt(self, run: Any) -> Any:
        async def around(entry: Any, task: Task, context: ExecutionContext) -> Any:
            outcome = await run(entry, task, context)
            if task.fields.get("wrapper_fails") == "after":
                raise RuntimeError("after the attempt")
            return outcome

        def plain(entry: Any, task: Task, context: ExecutionContext) -> Any:
            self.seen.append((entry.name, entry.runs_application_code))
            if task.fields.get("wrapper_fails") == "before":
                raise RuntimeError("before the attempt")
            return (
                run(entry, task, context)
                if task.fields.get("wrapper_fails") != "after"
                else around(entry, task, context)
            )

        return plain


class Opaque(Echo):
    """An executor that declares its attempts run no application code."""

    runs_application_code = False


async def test_an_attempt_wrapper_that_raises_fails_the_attempt_and_the_worker_goes_on(
    make_settings: Any, start_worker: Any
) -> None:
    """A wrapper's own exception (raised when it is called, or from what it returns) is a failed attempt with
    reason `exception`, as an executor's would be, never a crash of the worker; a plain-function wrapper that
    returns the attempt's own awaitable works as an async one does, and sees the executor's declaration."""
    settings: Settings = make_settings(queue={"max_attempts": 1})
    wrappers = Wrappers()

    def executors(register: RegisterExecutor) -> None:
        register("echo", Echo())
        register("opaque", Opaque())

    extra = {"types": plugin(gopherq_register_executors=executors)}
    await start_worker(settings, extra_plugins={**extra, "wrappers": wrappers})
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=extra)) as client:
        ids = {fails: await client.enqueue("echo", wrapper_fails=fails) for fails in ("before", "after", "no")}
        opaque = await client.enqueue("opaque", n=1)
        records = {fails: await client.wait(task_id, timeout=15) for fails, task_id in ids.items()}
        opaque_record = await client.wait(opaque, timeout=15)
    for fails in ("before", "after"):
        record = records[fails]
        assert record is not None and record.status.value == "dead" and record.error is not None
        assert (record.error.reason, record.error.message) == (
            "exception",
            f"attempt wrapper failed: RuntimeError: {fails} the attempt",
        )
    done = records["no"]
    assert done is not None and done.status.value == "succeeded" and done.result == {"wrapper_fails": "no"}
    assert opaque_record is not None and opaque_record.result == {"n": 1}
    assert ("echo", True) in wrappers.seen and ("opaque", False) in wrappers.seen


def test_runs_application_code_is_a_bool_declared_by_the_executor() -> None:
    from gopherq.core.executor import ExecutorEntry

    assert ExecutorEntry("echo", Echo(), "t").runs_application_code is True
    assert ExecutorEntry("opaque", Opaque(), "t").runs_application_code is False
    assert load().executors["http"].runs_application_code is False

    class Unclear(Echo):
        runs_application_code = "no"

    with pytest.raises(TypeError, match="runs_application_code must be True or False"):
        ExecutorEntry("unclear", Unclear(), "t")
