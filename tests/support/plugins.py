"""Plugin objects for in-process workers: `start_worker(settings, extra_plugins={"name": plugin})`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gopherq import ExecutionContext, Task
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


class Sleeper:
    """Sleeps `seconds` and returns; counts its runs by task id."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    async def execute(self, task: Task, context: ExecutionContext) -> dict[str, Any]:
        self.runs[task.id] = self.runs.get(task.id, 0) + 1
        start = time.monotonic()
        self.started.setdefault(task.id, time.time())
        await asyncio.sleep(float(task.payload.get("seconds", 0)))
        self.spans[task.id] = (start, time.monotonic())
        return {"slept": task.payload.get("seconds", 0)}

    def most_at_once(self) -> int:
        """The most attempts that ran at the same time."""
        edges = sorted([(s, 1) for s, _ in self.spans.values()] + [(e, -1) for _, e in self.spans.values()])
        running = most = 0
        for _, step in edges:  # (an end sorts before a start at the same instant)
            running += step
            most = max(most, running)
        return most

    def overlaps(self, task_id: str) -> list[str]:
        start, end = self.spans[task_id]
        return [other for other, (s, e) in self.spans.items() if other != task_id and s < end and start < e]


def sleeper_plugins(sleeper: Sleeper, sink: CaptureSink | None = None) -> dict[str, Any]:
    plugins: dict[str, Any] = {"sleeper": ExecutorPlugin("sleep", sleeper)}
    if sink is not None:
        plugins["capture"] = SinkPlugin(sink)
    return plugins
