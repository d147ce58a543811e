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
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gopherq.core import codec
from gopherq.core.loglines import escape_controls
from gopherq.core.masking import Masker
from gopherq.core.tracecontext import trace_id

if TYPE_CHECKING:
    from gopherq.core.eventlog import EventLog

log = logging.getLogger(__name__)

#: Every event the core and the built-in plugins emit (plugins may emit their own), and when; `data` keys in
#: parentheses. This catalogue is what docs/reference.md lists (docs/gen_reference.py renders it).
EVENTS: dict[str, str] = {
    "task.enqueued": "a client enqueued the task (only clients created with `sinks=True` feed sinks; `data.eta` when "
    "it is delayed)",
    "task.dequeued": "a worker claimed the task and it passed validation",
    "task.started": "an attempt starts",
    "task.succeeded": "the attempt succeeded and its result is stored (`data` holds the executor's "
    "`context.event_data`, e.g. `http_status`)",
    "task.failed": "the attempt failed (`error` says why); a `task.retrying` or `task.dead_lettered` follows",
    "task.retrying": "the task is scheduled for another attempt (`data.delay`, `data.retry_at`)",
    "task.dead_lettered": "the task went to the dead-letter queue (`data.reason`; `data.entry_id` when the bytes "
    "never became a task); its result record's status is `dead`",
    "task.recovered": "a task held by a dead worker, or whose lease expired, was put back (`data.recoveries`)",
    "task.requeued": "a dead letter was requeued (`data.entry_id`)",
    "task.released": "a running task was put back at shutdown (no attempt counted)",
    "task.cancelled": "the task was cancelled on request (`data.running`: whether an attempt was cut short)",
    "task.throttled": "flow control deferred the task, no attempt counted (`data.flow_key`, `data.until`, `data.why`: "
    "rate, concurrency or circuit)",
    "operator.action": "an operator acted on a task or queue (`data.action`: pause, resume, cancel, requeue, delete, "
    "purge or edit_requeue; `data.actor`: token role, dashboard user or CLI user@host; `data.source`: dashboard, api "
    "or cli); one per task touched, with its id (see core/audit.py)",
    "host.circuit_opened": "a flow key's circuit breaker opened (`data.key`, `data.until`)",
    "host.circuit_half_open": "a flow key's circuit lets a trial task through (`data.key`, `data.probe`)",
    "host.circuit_closed": "a flow key's circuit closed again (`data.key`)",
    "host.rate_lowered": "a 429/503 lowered a flow key's shared rate (`data.key`, `data.rate_factor`)",
    "host.rate_restored": "a flow key's shared rate is back to its limit (`data.key`, `data.rate_factor`: 1.0)",
    "flow.started": "the first outcome of a flow's members was recorded (`data.flow`)",
    "flow.succeeded": "every member of a flow is final and no failure was left untolerated (`data.flow`)",
    "flow.failed": "a flow failed: a fail_fast join's parent failed, a quorum went out of reach or a member no join "
    "depends on failed (`data.flow`, `data.halted`)",
    "flow.cancelled": "a flow was cancelled on request (`data.flow`)",
    "flow.repaired": "the flow reconciler found and repaired counts that differed from its members' states "
    "(`data.flow`, `data.mismatches`)",
    "worker.started": "a worker started (`data.concurrency`)",
    "worker.quiet": "a worker stopped fetching (SIGTSTP); it finishes what it runs",
    "worker.stopping": "a worker is shutting down (`data.running`: tasks still running)",
    "worker.stopped": "a worker stopped (`data` has its counters)",
}

#: Every event name the core emits (plugins may emit their own).
EVENT_NAMES = tuple(EVENTS)

#: Outcomes that follow a `task.failed` of the same attempt: their text line names the error's reason only.
FOLLOWS_FAILED_ATTEMPT = frozenset({"task.retrying", "task.dead_lettered"})


#: Seconds between two "sink is full" warnings of one sink.
DROP_LOG_INTERVAL = 10.0

#: Seconds a sink's task waits, once woken by a first event, for more to arrive before it hands over a batch
#: smaller than `batch_size`: a worker emits several events per task, and waking the sink for each would cost
#: the worker more than the sink's work itself.
LINGER = 0.05


@dataclass(slots=True)
class Event:
    """Something that happened. Task events carry the task fields; `data` holds the rest (e.g. retry delay)."""

    #: What happened: one of the names of EVENTS (e.g. `task.succeeded`), or a plugin's own.
    name: str
    #: When, in Unix seconds.
    timestamp: float
    #: The worker that emitted it; None for a client's events.
    worker: str | None = None
    #: The queue it concerns.
    queue: str | None = None
    #: The task it concerns (task events).
    task_id: str | None = None
    #: The task's type (task events).
    task_type: str | None = None
    #: The attempt's number (attempt events).
    attempt: int | None = None
    #: Seconds the attempt took (outcome events of an attempt).
    duration: float | None = None
    #: Why the attempt failed: `{"reason", "message", "details"}`, masked.
    error: dict[str, Any] | None = None
    #: The rest, by event (see EVENTS), masked; e.g. `delay` and `retry_at` of `task.retrying`.
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
        worker=...`), for the logging sink and `gopherq events`; what the event does not have is left out (a
        client's events have no worker).

        A failed attempt is one line with its error: `task.failed`. The outcome that follows it (`task.retrying`,
        or `task.dead_lettered` of a task that ran) names only the error's reason, so a log does not repeat the
        message; a task dead-lettered without running (bad input) shows the message there, its only line."""
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
            if self.name in FOLLOWS_FAILED_ATTEMPT and self.duration is not None:
                parts.append(f"error={self.error.get('reason')}")
            else:
                parts.append(f"error={self.error.get('reason')}: {self.error.get('message')}")
        parts += [f"{key}={value}" for key, value in self.data.items()]
        if self.trace_id is not None:
            parts.append(f"trace_id={self.trace_id}")
        if self.queue is not None:
            parts.append(f"queue={self.queue}")
        if self.worker is not None:
            parts.append(f"worker={self.worker}")
        return escape_controls(" ".join(parts))  # one line, whatever a producer put in the id or the error

    def to_json(self) -> bytes:
        """`to_dict()` as compact JSON (UTF-8 bytes); values JSON cannot represent are written as strings."""
        return codec.dumps(self.to_dict())


@runtime_checkable
class Sink(Protocol):
    """Receives events in batches (`handle(events)`), from its own buffer and task, one batch at a time; an
    exception from `handle` is logged and counted, and the next batch comes anyway.

    Where it runs: `async def` methods are awaited on the worker's event loop (never block in them). Plain `def`
    methods (`open`, `handle`, `close`) all run in one thread of the sink's own, one call at a time: what `open`
    makes (a sqlite3 connection, which refuses other threads) works in `handle`, and a slow sink blocks neither
    the loop nor the other sinks.

    Optional extras, each sync or async: `open()` runs before the first batch (a sink whose `open` fails gets no
    events: they are counted as dropped); `close()` runs at shutdown after the last batch; `stats()` (plain
    `def`, called on the loop) returns a dict of the sink's own counters, logged with the bus's at shutdown.
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


async def call_maybe_async(func: Callable[..., Any], *args: Any, thread: Executor | None = None) -> Any:
    """Await `func(*args)` when it is a coroutine function; run it in `thread` (default: the loop's default pool)
    otherwise."""
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await asyncio.get_running_loop().run_in_executor(thread, functools.partial(func, *args))
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
    """One sink's bounded buffer and consumer task. When the buffer is full the oldest event is dropped. The
    sink's plain `def` methods run in a thread of the channel's own (see `Sink`)."""

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
        #: The queue event log this sink writes (its `event_log`, see core/eventlog.py), when it is the log's writer.
        self.event_log: EventLog | None = getattr(sink, "event_log", None)
        self._handle_is_async = inspect.iscoroutinefunction(sink.handle)
        self._wakeup = asyncio.Event()
        self._idle = True  # the consumer waits on _wakeup: the next put must set it
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._broken = False
        self._next_drop_log = 0.0
        self._handling = 0  # events of the batch the sink is handling now
        #: The thread of the sink's plain methods: made when the first of them is called.
        self._thread: ThreadPoolExecutor | None = None

    async def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run one of the sink's methods: awaited when async, in the sink's own thread when plain."""
        if inspect.iscoroutinefunction(func):
            return await func(*args)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"gopherq-sink-{self.name}")
        return await call_maybe_async(func, *args, thread=self._thread)

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
            await self._call(opener)
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
            self._handling = len(items)
            try:
                batch = [build_event(item) for item in items]
                if self._handle_is_async:
                    await self.sink.handle(batch)
                else:
                    await self._call(self.sink.handle, batch)
                self.delivered += len(batch)
                self._handling = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                self._handling = 0
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
                left = len(self._queue) + self._handling  # the batch the sink held (e.g. retrying) too
                if left:
                    self.dropped += left
                    log.warning("event sink %s: %d events not delivered at shutdown", self.name, left)
        closer = getattr(self.sink, "close", None)
        if closer is not None:
            try:
                await asyncio.wait_for(self._call(closer), timeout)
            except Exception:
                log.exception("event sink %s failed to close", self.name)
        if self._thread is not None:
            self._thread.shutdown(wait=False)  # its last call has returned, or timed out and is abandoned
            self._thread = None

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
        self._unlogged: dict[str, Sequence[SinkChannel]] = {}  # the routes of events already in the event log
        self.defaults: dict[str, Any] = {}
        #: Masks the `error` and `data` of every event before a sink sees it (set by the worker and the client).
        self.masker: Masker | None = None

    def add_sink(
        self, name: str, sink: Sink, events: Iterable[str] = ("*",), buffer_size: int = 10000, batch_size: int = 100
    ) -> SinkChannel:
        channel = SinkChannel(name, sink, EventFilter(events), buffer_size, batch_size)
        self.channels.append(channel)
        self._routes.clear()
        self._unlogged.clear()
        return channel

    @property
    def log_writer(self) -> SinkChannel | None:
        """The channel of the sink that writes the queue's event log (the `stream` sink), if one is attached: the
        settle script writes the events it accepts (`log_writer.accepts`) into `log_writer.event_log` itself."""
        return next((channel for channel in self.channels if channel.event_log is not None), None)

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
        timestamp: float | None = None,
        logged: bool = False,
    ) -> None:
        """Hand an event (the fields of `Event`; `worker` and `queue` default to the bus's `defaults`; `trace` is
        the task's `trace` field, whose trace id becomes the event's `trace_id`; `timestamp` defaults to now) to
        every sink that wants it; never blocks. `logged`: the event, masked, is already in the queue's event log
        (the settle script wrote it), so the log's writer does not get it and it is not masked again. Explicit
        keywords rather than **fields: this runs several times per task and must cost next to nothing, whether a
        sink wants the event or not."""
        if logged:
            route = self._unlogged.get(name)
            if route is None:
                route = self._unlogged[name] = tuple(c for c in self._route(name) if c.event_log is None)
        else:
            route = self._routes.get(name)
            if route is None:
                route = self._route(name)
        if not route:
            return
        data = data or None  # an empty dict need not wait in a buffer
        if self.masker is not None and not logged and (error is not None or data is not None):
            error, data = self.masker.value(error), self.masker.value(data)
        pending = (
            name,
            time.time() if timestamp is None else timestamp,
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
            if level == logging.INFO and not channel.delivered:
                level = logging.DEBUG  # nothing happened: a command that emitted nothing prints nothing
            log.log(level, "event sink %s: %s", channel.name, " ".join(f"{k}={v}" for k, v in stats.items()))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per sink: events delivered, dropped (buffer full or sink broken), failed, and the sink's own."""
        return {c.name: c.stats() for c in self.channels}
