"""Events and the event bus that hands them to sinks without ever blocking the worker loop.

Each sink gets its own bounded buffer and its own consumer task: a slow or broken sink fills (and overflows)
only its own buffer, and the worker goes on. `emit` costs one dict lookup when no sink wants the event.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

#: Every event name the core emits (plugins may emit their own).
EVENT_NAMES = (
    "task.enqueued",
    "task.dequeued",
    "task.started",
    "task.succeeded",
    "task.failed",
    "task.retrying",
    "task.dead_lettered",
    "task.recovered",
    "task.requeued",
    "task.released",
    "worker.started",
    "worker.quiet",
    "worker.stopping",
    "worker.stopped",
)


@dataclass(slots=True)
class Event:
    """Something that happened. Task events carry the task fields; `data` holds the rest (e.g. retry delay)."""

    name: str
    timestamp: float
    worker: str | None = None
    queue: str | None = None
    task_id: str | None = None
    task_type: str | None = None
    attempt: int | None = None
    duration: float | None = None
    error: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name, "timestamp": self.timestamp}
        for key in ("worker", "queue", "task_id", "task_type", "attempt", "duration", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.data:
            out["data"] = self.data
        return out


@runtime_checkable
class Sink(Protocol):
    """Receives events in batches. `handle` may be `async def` or plain `def` (run in a thread).

    Optionally `close()` (sync or async) is called at shutdown after the last batch.
    """

    def handle(self, events: list[Event]) -> Any: ...


class EventFilter:
    """Glob patterns over event names (`task.*`, `task.failed`, `*`); a leading `!` excludes."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.include = [p for p in patterns if not p.startswith("!")]
        self.exclude = [p[1:] for p in patterns if p.startswith("!")]

    def __call__(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )


async def call_maybe_async(func: Callable[..., Any], *args: Any) -> Any:
    """Await `func(*args)` when it is a coroutine function; run it in a thread otherwise."""
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await asyncio.to_thread(func, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class SinkChannel:
    """One sink's bounded buffer and consumer task. When the buffer is full the oldest event is dropped."""

    def __init__(self, name: str, sink: Sink, accepts: EventFilter, buffer_size: int, batch_size: int) -> None:
        self.name = name
        self.sink = sink
        self.accepts = accepts
        self.buffer: collections.deque[Event] = collections.deque(maxlen=buffer_size)
        self.batch_size = batch_size
        self.dropped = 0
        self.failed_batches = 0
        self.delivered = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def put(self, event: Event) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event sink %s is full: %d events dropped so far", self.name, self.dropped)
        self.buffer.append(event)
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gopherq-sink-{self.name}")

    async def _run(self) -> None:
        while True:
            if not self.buffer:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
            try:
                await call_maybe_async(self.sink.handle, batch)
                self.delivered += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed_batches += 1
                log.exception("event sink %s failed on a batch of %d events", self.name, len(batch))

    async def close(self, timeout: float) -> None:
        """Deliver what is buffered (within `timeout`), then close the sink."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
                left = len(self.buffer)
                if left:
                    self.dropped += left
                    log.warning("event sink %s: %d events not delivered at shutdown", self.name, left)
        closer = getattr(self.sink, "close", None)
        if closer is not None:
            try:
                await asyncio.wait_for(call_maybe_async(closer), timeout)
            except Exception:
                log.exception("event sink %s failed to close", self.name)


class EventBus:
    """Routes events to the sinks that want them. Routing is cached per event name."""

    def __init__(self) -> None:
        self.channels: list[SinkChannel] = []
        self._routes: dict[str, Sequence[SinkChannel]] = {}
        self.defaults: dict[str, Any] = {}

    def add_sink(
        self, name: str, sink: Sink, events: Iterable[str] = ("*",), buffer_size: int = 10000, batch_size: int = 100
    ) -> SinkChannel:
        channel = SinkChannel(name, sink, EventFilter(events), buffer_size, batch_size)
        self.channels.append(channel)
        self._routes.clear()
        return channel

    def wants(self, name: str) -> bool:
        return bool(self._route(name))

    def _route(self, name: str) -> Sequence[SinkChannel]:
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = tuple(c for c in self.channels if c.accepts(name))
        return route

    def emit(self, name: str, **fields: Any) -> None:
        """Hand an event to every sink that wants it; never blocks, never raises."""
        route = self._routes.get(name)
        if route is None:
            route = self._route(name)
        if not route:
            return
        event = Event(name, time.time(), **self.defaults, **fields)
        for channel in route:
            channel.put(event)

    def start(self) -> None:
        for channel in self.channels:
            channel.start()

    async def close(self, timeout: float = 5.0) -> None:
        await asyncio.gather(*(channel.close(timeout) for channel in self.channels))

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            c.name: {"delivered": c.delivered, "dropped": c.dropped, "failed_batches": c.failed_batches}
            for c in self.channels
        }
