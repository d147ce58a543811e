"""Events and the event bus that hands them to sinks without ever blocking the worker loop.

Each sink gets its own bounded buffer and its own consumer task: a slow or broken sink fills (and overflows)
only its own buffer, and the worker goes on. `emit` costs one dict lookup when no sink wants the event.
What a sink drops (buffer full) or fails on (its `handle` raised) is counted, logged, and summed up when the
worker stops.
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

from gopherq.core import codec
from gopherq.core.masking import Masker
from gopherq.core.tracecontext import trace_id

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
    "task.cancelled",
    "worker.started",
    "worker.quiet",
    "worker.stopping",
    "worker.stopped",
)


#: Seconds between two "sink is full" warnings of one sink.
DROP_LOG_INTERVAL = 10.0

#: Seconds a sink's task waits, once woken by a first event, for more to arrive before it hands over a batch
#: smaller than `batch_size`: a worker emits several events per task, and waking the sink for each would cost
#: the worker more than the sink's work itself.
LINGER = 0.05


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
    #: The trace the task belongs to (from its envelope's `trace` field), when it has one.
    trace_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name, "timestamp": self.timestamp}
        for key in ("worker", "queue", "task_id", "task_type", "attempt", "duration", "error", "trace_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.data:
            out["data"] = self.data
        return out

    def to_text(self) -> str:
        """One human-readable line (`task.succeeded task=... type=... attempt=1 duration=1.2ms ... queue=...
        worker=...`), for the logging sink and `gopherq events`."""
        parts = [self.name]
        if self.task_id is not None:
            parts.append(f"task={self.task_id}")
        if self.task_type is not None:
            parts.append(f"type={self.task_type}")
        if self.attempt is not None:
            parts.append(f"attempt={self.attempt}")
        if self.duration is not None:
            parts.append(f"duration={self.duration * 1000:.1f}ms")
        if self.error:
            parts.append(f"error={self.error.get('reason')}: {self.error.get('message')}")
        parts += [f"{key}={value}" for key, value in self.data.items()]
        if self.trace_id is not None:
            parts.append(f"trace_id={self.trace_id}")
        parts.append(f"queue={self.queue} worker={self.worker}")
        return " ".join(parts)

    def to_json(self) -> bytes:
        """`to_dict()` as compact JSON (UTF-8 bytes); values JSON cannot represent are written as strings."""
        return codec.dumps(self.to_dict())


@runtime_checkable
class Sink(Protocol):
    """Receives events in batches, from its own buffer and task. `handle` may be `async def` or plain `def`
    (run in a thread); an exception from it is logged and counted, and the next batch comes anyway.

    Optional extras, each sync or async: `open()` runs in the worker's event loop before the first batch (a
    sink whose `open` fails gets no events: they are counted as dropped); `close()` runs at shutdown after
    the last batch; `stats()` returns a dict of the sink's own counters, logged with the bus's at shutdown.
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


#: An event not built yet: (name, timestamp, bus defaults, worker, queue, task_id, task_type, attempt, duration,
#: error, data, trace). Emitting stores this flat tuple, and the Event is made only when a sink takes it: an event
#: that a full buffer drops (a dead sink) is never built, and what waits in a buffer is small.
PendingEvent = tuple[str, float, dict[str, Any], Any, Any, Any, Any, Any, Any, Any, Any, Any]


def build_event(item: Event | PendingEvent) -> Event:
    if isinstance(item, Event):
        return item
    name, timestamp, defaults, worker, queue, task_id, task_type, attempt, duration, error, data, trace = item
    return Event(
        name,
        timestamp,
        defaults.get("worker") if worker is None else worker,
        defaults.get("queue") if queue is None else queue,
        task_id,
        task_type,
        attempt,
        duration,
        error,
        {} if data is None else data,
        trace_id(trace),  # read here, in the sink's task, not where the event is emitted
    )


class SinkChannel:
    """One sink's bounded buffer and consumer task. When the buffer is full the oldest event is dropped."""

    def __init__(self, name: str, sink: Sink, accepts: EventFilter, buffer_size: int, batch_size: int) -> None:
        self.name = name
        self.sink = sink
        self.accepts = accepts
        self._queue: collections.deque[Event | PendingEvent] = collections.deque(maxlen=buffer_size)
        self.batch_size = batch_size
        self.dropped = 0
        self.failed_batches = 0
        self.failed_events = 0
        self.delivered = 0
        self._capacity = buffer_size
        self._handle_is_async = inspect.iscoroutinefunction(sink.handle)
        self._wakeup = asyncio.Event()
        self._idle = True  # the consumer waits on _wakeup: the next put must set it
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._broken = False
        self._next_drop_log = 0.0

    @property
    def buffer(self) -> list[Event]:
        """The events waiting for the sink, oldest first (a snapshot, for inspection)."""
        return [build_event(item) for item in self._queue]

    def put(self, event: Event | PendingEvent) -> None:
        """Buffer an event (on the emitter's hot path: kept to a few attribute reads)."""
        queue = self._queue
        if len(queue) == self._capacity:
            self.dropped += 1
            if self.dropped & 255 == 1:  # look at the clock now and then, not on every drop
                self._drop_warning()
        queue.append(event)
        if self._idle:
            self._idle = False
            self._wakeup.set()

    def _drop_warning(self) -> None:
        """At most one line per DROP_LOG_INTERVAL, however fast events come."""
        now = time.monotonic()
        if now >= self._next_drop_log:
            self._next_drop_log = now + DROP_LOG_INTERVAL
            log.warning("event sink %s is full: %d events dropped so far", self.name, self.dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gopherq-sink-{self.name}")

    async def _open(self) -> None:
        opener = getattr(self.sink, "open", None)
        if opener is None:
            return
        try:
            await call_maybe_async(opener)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._broken = True
            log.exception("event sink %s failed to open: its events will be dropped", self.name)

    async def _run(self) -> None:
        await self._open()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                self._idle = True
                await self._wakeup.wait()
                if len(self._queue) < self.batch_size and not self._closing:
                    await asyncio.sleep(LINGER)
                continue
            queue = self._queue
            items = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            if self._broken:
                self.dropped += len(items)
                continue
            try:
                batch = [build_event(item) for item in items]
                if self._handle_is_async:
                    await self.sink.handle(batch)
                else:
                    await call_maybe_async(self.sink.handle, batch)
                self.delivered += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed_batches += 1
                self.failed_events += len(items)
                if self.failed_batches <= 3 or self.failed_batches % 100 == 0:
                    log.exception(
                        "event sink %s failed on a batch of %d events (%d failed batches so far)",
                        self.name,
                        len(items),
                        self.failed_batches,
                    )

    async def close(self, timeout: float) -> None:
        """Deliver what is buffered (within `timeout`), then close the sink."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
                left = len(self._queue)
                if left:
                    self.dropped += left
                    log.warning("event sink %s: %d events not delivered at shutdown", self.name, left)
        closer = getattr(self.sink, "close", None)
        if closer is not None:
            try:
                await asyncio.wait_for(call_maybe_async(closer), timeout)
            except Exception:
                log.exception("event sink %s failed to close", self.name)

    def stats(self) -> dict[str, Any]:
        """This channel's counters, plus the sink's own `stats()` when it has one."""
        out: dict[str, Any] = {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "failed_batches": self.failed_batches,
            "failed_events": self.failed_events,
        }
        own = getattr(self.sink, "stats", None)
        if callable(own):
            try:
                out.update(own())
            except Exception:
                log.exception("event sink %s: stats() failed", self.name)
        return out


class EventBus:
    """Routes events to the sinks that want them. Routing is cached per event name."""

    def __init__(self) -> None:
        self.channels: list[SinkChannel] = []
        self._routes: dict[str, Sequence[SinkChannel]] = {}
        self.defaults: dict[str, Any] = {}
        #: Masks the `error` and `data` of every event before a sink sees it (set by the worker and the client).
        self.masker: Masker | None = None

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

    def emit(
        self,
        name: str,
        *,
        task_id: str | None = None,
        task_type: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        error: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        queue: str | None = None,
        worker: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        """Hand an event (the fields of `Event`; `worker` and `queue` default to the bus's `defaults`; `trace` is
        the task's `trace` field, whose trace id becomes the event's `trace_id`) to every sink that wants it; never
        blocks. Explicit keywords rather than **fields: this runs several times per task
        and must cost next to nothing, whether a sink wants the event or not."""
        route = self._routes.get(name)
        if route is None:
            route = self._route(name)
        if not route:
            return
        data = data or None  # an empty dict need not wait in a buffer
        if self.masker is not None and (error is not None or data is not None):
            error, data = self.masker.value(error), self.masker.value(data)
        pending = (
            name,
            time.time(),
            self.defaults,
            worker,
            queue,
            task_id,
            task_type,
            attempt,
            duration,
            error,
            data,
            trace,
        )
        for channel in route:
            channel.put(pending)

    def publish(self, event: Event) -> None:
        """Hand a ready-made event to every sink that wants it (`emit` builds the event itself)."""
        for channel in self._route(event.name):
            channel.put(event)

    def start(self) -> None:
        for channel in self.channels:
            channel.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Drain and close every sink (in parallel, each within `timeout`), then log what each handled."""
        await asyncio.gather(*(channel.close(timeout) for channel in self.channels))
        for channel in self.channels:
            stats = channel.stats()
            level = logging.WARNING if channel.dropped or channel.failed_batches else logging.INFO
            log.log(level, "event sink %s: %s", channel.name, " ".join(f"{k}={v}" for k, v in stats.items()))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per sink: events delivered, dropped (buffer full or sink broken), failed, and the sink's own."""
        return {c.name: c.stats() for c in self.channels}
