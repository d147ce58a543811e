"""Plugin objects for in-process workers: `start_worker(settings, extra_plugins={"name": plugin})`."""

from __future__ import annotations

import asyncio
from typing import Any

from gopherq.core.errors import PermanentFailure
from gopherq.core.events import Event
from gopherq.core.hookspecs import hookimpl
from tests.support.common import async_wait_until


class NoopExecutor:
    """The cheapest possible task: whatever a test measures or observes around it shows."""

    async def execute(self, task: Any, context: Any) -> None:
        return None


class ExecutorPlugin:
    """A plugin object registering one executor, for `start_worker(..., extra_plugins={"name": plugin})`."""

    def __init__(self, task_type: str, executor: Any) -> None:
        self.task_type = task_type
        self.executor = executor

    @hookimpl
    def gopherq_register_executors(self, register: Any, settings: Any) -> None:
        register(self.task_type, self.executor)


class CaptureSink:
    """A sink that keeps every event it gets, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handle(self, events: list[Event]) -> None:
        self.events.extend(events)

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.name == name]

    async def wait_named(self, name: str, count: int = 1, timeout: float = 5.0) -> list[Event]:
        """The events called `name`, once at least `count` have arrived. Events reach a sink through its own
        buffer after the settle that records the outcome, so a test that has seen a result waits for them."""
        await async_wait_until(lambda: len(self.named(name)) >= count, timeout=timeout, what=f"{count} {name} event(s)")
        return self.named(name)


class SinkPlugin:
    """A plugin object registering a CaptureSink under `name`."""

    def __init__(self, sink: Any, name: str = "capture") -> None:
        self.sink = sink
        self.name = name

    @hookimpl
    def gopherq_register_sinks(self, register: Any, settings: Any) -> None:
        register(self.name, self.sink)


class GateExecutor:
    """Holds every task until `gate` opens; counts the attempts it started."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def execute(self, task: Any, context: Any) -> None:
        self.started += 1
        await self.gate.wait()


class FailExecutor:
    """Fails every attempt for good (reason `refused`)."""

    async def execute(self, task: Any, context: Any) -> None:
        raise PermanentFailure("no such thing", reason="refused")
