"""The Python client: enqueue tasks (one or many in one round trip), read results, manage dead letters, inspect.

`AsyncClient` is the implementation; `Client` is the same API for synchronous code, running the async client
on a private event loop thread. Tasks are validated here exactly as a worker would validate them (the envelope
is encoded and decoded as it will travel), so a bad task is refused before it reaches Redis, with the message
the worker would have put in its dead letter. With `sinks=True` the client feeds the configured sink plugins
`task.enqueued` and `task.requeued` events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, NamedTuple, TypeVar

from gopherq.blocking import Blocking
from gopherq.core.admission import admit
from gopherq.core.broker import Broker, SpecialPush, now_ms
from gopherq.core.connection import RedisConnection
from gopherq.core.deadletters import DeadLetters
from gopherq.core.errors import TaskRejected
from gopherq.core.events import EventBus
from gopherq.core.inspect import Inspector
from gopherq.core.jsontext import NESTED_TOO_DEEPLY
from gopherq.core.masking import Masker
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.redis_client import RedisClient
from gopherq.core.registry import QueueRegistry
from gopherq.core.results import TaskResult
from gopherq.core.settings import Settings, load_settings
from gopherq.core.task import RetryBackoff, Task, decode_task, new_task_id, parse_backoff
from gopherq.flowclient import AsyncFlows

T = TypeVar("T")


#: The events a client emits; its sinks are only attached when one of them wants one of these.
CLIENT_EVENTS = ("task.enqueued", "task.requeued", "task.cancelled", "operator.action")


class Enqueued(NamedTuple):
    """What became of one task handed to `submit`: its id, or, when `duplicate`, the id of the unique task with
    the same key that is already ready, delayed or running (nothing was enqueued)."""

    id: str
    duplicate: bool = False


class AsyncClient:
    """Enqueue tasks and read results. Use as `async with AsyncClient(config="gopherq.toml") as client:`.

    `sinks=True` loads the sink plugins and feeds them this client's events (`task.enqueued`, `task.requeued`);
    their buffers are flushed, within `sink_flush_timeout` seconds, by `close()`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config: str | None = None,
        queue: str | None = None,
        plugins: PluginManager | None = None,
        sinks: bool = False,
        sink_flush_timeout: float = 5.0,
        redis: RedisClient | None = None,
    ) -> None:
        self.settings = settings or load_settings(config)
        self.queue = queue or self.settings.queue.name
        self.plugins = plugins or load_plugins(self.settings, sinks=sinks)
        self._sinks = sinks
        self._sink_flush_timeout = sink_flush_timeout
        self.bus: EventBus | None = None
        self._connection = RedisConnection(self.settings, "client")
        self._brokers: dict[str, Broker] = {}
        self.masker = Masker.from_settings(self.settings)
        #: A Redis client given by the caller (e.g. the web server's) is used as is and never closed here.
        self._borrowed = redis
        self.redis: RedisClient | None = redis
        self._inspector: Inspector | None = None
        #: Where this client's tasks come from, for the plugins' `gopherq_before_enqueue` ("client"; the command
        #: line sets "cli").
        self.origin = "client"
        self._registry: QueueRegistry | None = None

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self.redis is None:
            self.redis = await self._connection.open()
            if self._sinks and self.plugins.sinks:
                bus = EventBus()
                bus.masker = self.masker
                self.plugins.attach_sinks(bus)
                if any(bus.wants(name) for name in CLIENT_EVENTS):
                    bus.start()
                    self.bus = bus

    async def close(self) -> None:
        """Flush the sinks (bounded by `sink_flush_timeout`) and release Redis."""
        try:
            if self.bus is not None:
                bus, self.bus = self.bus, None
                await bus.close(self._sink_flush_timeout)
        finally:
            if self._borrowed is None:
                await self._connection.close()
                self.redis = None
                self._inspector = None
                self._registry = None
                self._brokers.clear()

    def connected(self) -> RedisClient:
        """The Redis client; RuntimeError when this client is not connected."""
        if self.redis is None:
            raise RuntimeError("client is not connected: use `async with` or await connect()")
        return self.redis

    def broker(self, queue: str | None = None) -> Broker:
        name = queue or self.queue
        if name not in self._brokers:
            self._brokers[name] = Broker(self.connected(), name)
        return self._brokers[name]

    @property
    def dead_letters(self) -> DeadLetters:
        """Dead-letter operations on the client's queue (a requeue emits `task.requeued` to the sinks)."""
        return DeadLetters(self.broker(), self.bus, self.masker)

    @property
    def registry(self) -> QueueRegistry:
        """Where the queues this client enqueues to are noted, so inspection lists them (see core/registry.py)."""
        if self._registry is None:
            self._registry = QueueRegistry(self.connected())
        return self._registry

    @property
    def inspect(self) -> Inspector:
        """The inspection API (queues, workers, tasks, pages, events, pause/resume) on this client's Redis."""
        if self._inspector is None:
            self._inspector = Inspector(self.connected(), self.settings)
        return self._inspector

    @property
    def flows(self) -> AsyncFlows:
        """Flows (DAGs of tasks): create, read, wait for, cancel, list (see gopherq/flowclient.py)."""
        return AsyncFlows(self)

    # -- building ----------------------------------------------------------------------------------------------

    def task(
        self,
        type: str = "http",
        *,
        id: str | None = None,
        queue: str | None = None,
        delay: float | None = None,
        eta: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        backoff: dict[str, float] | tuple[float, float] | RetryBackoff | None = None,
        priority: str | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
        trace: dict[str, str] | None = None,
        fair_key: str | None = None,
        **fields: Any,
    ) -> Task:
        """Build and validate a task (the executor's own fields go in `fields`); raises TaskRejected.

        `backoff`: `{"min": s, "max": s}` or `(min, max)`, as in an envelope. `priority`: "high", "default" or
        "low". `unique_for` (seconds) and/or `unique_key`: while a task with the same key is ready, delayed or
        running, enqueueing another is refused (see `submit`); without `unique_key` the key is made from the type
        and fields (by the envelope's rule, `task_from_dict`). `trace`: the W3C trace context to keep with the task
        (`{"traceparent": ..., "tracestate": ..., "baggage": ...}`); the `otel` plugin, when enabled, fills it from
        the current span. `fair_key`: the tenant the task belongs to (see Fair keys in docs/tasks.md): within its
        priority level, keys with waiting tasks take turns, and each key may have limits of its own."""
        if delay is not None:
            eta = time.time() + delay
        task = Task(
            id=id or new_task_id(),
            type=type,
            fields=fields,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            deadline=deadline,
            eta=eta,
            created_at=time.time(),
            backoff=parse_backoff(backoff),
            priority=None if priority == "default" else priority,
            unique_key=unique_key,
            unique_for=unique_for,
            trace=trace,
            fair_key=fair_key,
        )
        hook = self.plugins.before_enqueue
        if hook is not None:
            hook(task, queue or self.queue, self.origin)
        task.envelope = self.validate(task)
        return task

    def http(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Any = None,
        **control: Any,
    ) -> Task:
        """Build an `http` task."""
        fields: dict[str, Any] = {"method": method, "url": url}
        if headers:
            fields["headers"] = headers
        if body is not None:
            fields["body"] = body
        return self.task("http", **control, **fields)

    def validate(self, task: Task) -> bytes:
        """Check a built task as a worker will check it; returns its envelope, or raises TaskRejected. The task
        gets the uniqueness key the envelope's rule makes when it has `unique_for` without `unique_key`."""
        try:
            envelope = task.encode()
        except TypeError as exc:  # orjson's encode error: the nesting limit, or a value JSON cannot carry
            if "recursion" in str(exc).lower():
                raise TaskRejected("parse_error", NESTED_TOO_DEEPLY) from None
            raise TaskRejected("schema_invalid", f"task {task.id} cannot be encoded as JSON: {exc}") from None
        checked = self.check_envelope(envelope)
        task.payload = checked.payload
        if task.unique_key is None and checked.unique_key is not None:
            # Made from the envelope that is pushed, so the worker makes the same key from the same bytes.
            task.unique_key = checked.unique_key
        return envelope

    def check_envelope(self, envelope: bytes) -> Task:
        """Decode and validate an envelope from a producer exactly as a worker does before running it (size, JSON,
        control fields, deadline and horizon, type, the executor's payload), refusing also the fields GoPherQ
        keeps (`attempt`, `recoveries`, ...); returns the task or raises TaskRejected with the reason and message
        its dead letter would carry."""
        return self.check_task(decode_task(envelope, self.settings.worker.max_payload_bytes, producer=True))

    def check_task(self, task: Task) -> Task:
        """Validate a decoded task as a worker does (core.admission.admit: deadline, horizon, type, the
        executor's payload): sets its payload and returns it, or raises TaskRejected."""
        admit(task, self.plugins, time.time(), self.settings.queue.max_horizon)
        return task

    # -- enqueueing --------------------------------------------------------------------------------------------

    async def enqueue(self, type: str = "http", **kwargs: Any) -> str:
        """Validate and enqueue one task; returns its id."""
        return (await self.enqueue_many([self.task(type, **kwargs)]))[0]

    async def enqueue_http(self, url: str, method: str = "GET", **kwargs: Any) -> str:
        return (await self.enqueue_many([self.http(url, method, **kwargs)]))[0]

    async def enqueue_raw(self, envelope: bytes | str, queue: str | None = None) -> str:
        """Validate and enqueue an envelope given as JSON (e.g. the seed's format); returns the task id.

        The bytes are pushed as given; an envelope without an id gets one first (so this returns it).
        """
        raw = envelope.encode() if isinstance(envelope, str) else bytes(envelope)
        task = self.check_envelope(raw)
        if queue is not None:
            task.queue = queue
        hook = self.plugins.before_enqueue
        if hook is not None:
            hook(task, task.queue or self.queue, self.origin)
        changed = task.id_assigned or hook is not None
        return (await self._push([task], [task.encode() if changed else raw]))[0].id

    async def create(self, tasks: list[Task], window: int) -> list[Enqueued]:
        """Enqueue built tasks idempotently (the HTTP API): a task whose id was created this way within `window`
        seconds is not enqueued again, and is reported as a duplicate of itself; a unique task's duplicate names
        the holder of its key. An id assigned here, not given by the producer, is not remembered."""
        return await self._push(tasks, [task.envelope or task.encode() for task in tasks], seen_for=window)

    async def enqueue_many(self, tasks: Iterable[Task]) -> list[str]:
        """Enqueue built tasks in one round trip (per queue); delayed ones go to the delayed set. A unique task
        refused as a duplicate gives the id of the task that holds its key (`submit` says which were)."""
        return [item.id for item in await self.submit(tasks)]

    async def submit(self, tasks: Iterable[Task]) -> list[Enqueued]:
        """`enqueue_many`, saying for each task whether it was refused as a duplicate of a unique task."""
        tasks = list(tasks)
        return await self._push(tasks, [task.envelope or task.encode() for task in tasks])

    async def _push(self, tasks: list[Task], envelopes: list[bytes], seen_for: int | None = None) -> list[Enqueued]:
        """Push in one round trip per kind; with `seen_for`, every task whose producer gave its id is created at
        most once within that many seconds (see `create`). Keeps no per-task object but the pushes themselves
        while Redis works: the HTTP API has tens of thousands of tasks in flight, and every object alive across a
        garbage collection costs the collector's time."""
        await self.connect()
        ready: dict[str, list[bytes]] = {}
        delayed: dict[str, list[tuple[bytes, int]]] = {}
        ready_ids: dict[str, list[str]] = {}  # the tasks' ids, for their whereabouts (core/whereabouts.py)
        delayed_ids: dict[str, list[str]] = {}
        special: dict[str, tuple[list[int], list[SpecialPush]]] = {}
        now = now_ms()
        result_ttl = self.settings.queue.result_ttl
        for index, task in enumerate(tasks):
            queue = task.queue or self.queue
            due = int(task.eta * 1000) if task.eta is not None and task.eta * 1000 > now else None
            seen = seen_for if seen_for and not task.id_assigned else None
            special_push = task.priority is not None or task.unique_key is not None or task.fair_key is not None
            if special_push or seen is not None:
                lock_ms = 0
                if task.unique_key is not None:
                    window = task.unique_for if task.unique_for is not None else result_ttl
                    lock_ms = max(1, int(window * 1000))
                push = SpecialPush(task.id, envelopes[index], due, task.priority, task.unique_key, lock_ms, seen)
                indexes, pushes = special.setdefault(queue, ([], []))
                indexes.append(index)
                pushes.append(push)  # one script call per queue (enqueue.lua)
            elif due is not None:
                delayed.setdefault(queue, []).append((envelopes[index], due))
                delayed_ids.setdefault(queue, []).append(task.id)
            else:
                ready.setdefault(queue, []).append(envelopes[index])
                ready_ids.setdefault(queue, []).append(task.id)
        registry = self.registry
        if ready or delayed:
            async with self.connected().pipeline(transaction=False) as pipe:
                for queue, batch in ready.items():
                    self.broker(queue).stage_push(pipe, batch, ready_ids[queue])
                for queue, due_at in delayed.items():
                    self.broker(queue).stage_delayed(pipe, due_at, delayed_ids[queue])
                # The queue registry's note (once a minute per queue) rides along; its own failure is ignored.
                noted = registry.stage(pipe, [*ready, *delayed, *special])
                replies = await pipe.execute(raise_on_error=not noted)
            for reply in replies[:-1] if noted else ():
                if isinstance(reply, Exception):
                    raise reply
        elif special:
            await registry.note(*special)
        duplicates: dict[int, str] = {}
        for queue, (indexes, pushes) in special.items():
            holders = await self.broker(queue).push_special(pushes)
            for index, holder in zip(indexes, holders, strict=True):
                if holder is not None:
                    duplicates[index] = holder
        bus = self.bus
        if bus is not None and bus.wants("task.enqueued"):
            for index, task in enumerate(tasks):
                if index in duplicates:
                    continue
                data = {"eta": task.eta} if task.eta is not None and task.eta * 1000 > now else None
                bus.emit(
                    "task.enqueued",
                    queue=task.queue or self.queue,
                    task_id=task.id,
                    task_type=task.type,
                    data=data,
                    trace=task.trace,
                )
        return [
            Enqueued(duplicates[index], duplicate=True) if index in duplicates else Enqueued(task.id)
            for index, task in enumerate(tasks)
        ]

    async def schedules(self) -> list[dict[str, Any]]:
        """The configured periodic schedules with their last slot and next run time (Unix seconds)."""
        await self.connect()
        return await self.inspect.schedules(self.queue)

    # -- cancelling --------------------------------------------------------------------------------------------

    async def cancel(self, task_id: str, queue: str | None = None) -> str:
        """Cancel a task: 'cancelled' (it was delayed, and is removed), 'requested' (a worker records it as
        cancelled when it claims it, or cancels its running attempt within a second), or 'finished' (it already
        ended; nothing done). See `Broker.cancel`."""
        await self.connect()
        outcome = await self.broker(queue).cancel(task_id, self.settings.queue.result_ttl)
        if outcome == "cancelled" and self.bus is not None:
            self.bus.emit("task.cancelled", queue=queue or self.queue, task_id=task_id, data={"running": False})
        return outcome

    # -- results -----------------------------------------------------------------------------------------------

    async def result(self, task_id: str, queue: str | None = None) -> TaskResult | None:
        """The task's latest result record, or None when there is none (unknown, not yet run, or expired). Secrets
        in it (a response's Set-Cookie, credentials in a URL of an error message) are masked (`[masking]`)."""
        await self.connect()
        data = await self.broker(queue).get_result(task_id)
        return None if data is None else TaskResult.from_dict(self.masker.value(data))

    async def wait(self, task_id: str, timeout: float, queue: str | None = None) -> TaskResult | None:
        """Poll until the task has a final result or `timeout` seconds pass; returns the latest record."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            record = await self.result(task_id, queue)
            if (record is not None and record.status.final) or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)


class Client:
    """The synchronous face of AsyncClient: the same methods, blocking. Close it (or use `with`) when done."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gopherq-client", daemon=True)
        self._thread.start()
        self._async = AsyncClient(settings, **kwargs)
        self.settings = self._async.settings

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def task(self, type: str = "http", **kwargs: Any) -> Task:
        return self._async.task(type, **kwargs)

    def http(self, url: str, method: str = "GET", **kwargs: Any) -> Task:
        return self._async.http(url, method, **kwargs)

    def enqueue(self, type: str = "http", **kwargs: Any) -> str:
        return self._run(self._async.enqueue(type, **kwargs))

    def enqueue_http(self, url: str, method: str = "GET", **kwargs: Any) -> str:
        return self._run(self._async.enqueue_http(url, method, **kwargs))

    def enqueue_many(self, tasks: Iterable[Task]) -> list[str]:
        return self._run(self._async.enqueue_many(list(tasks)))

    def submit(self, tasks: Iterable[Task]) -> list[Enqueued]:
        return self._run(self._async.submit(list(tasks)))

    def cancel(self, task_id: str, queue: str | None = None) -> str:
        return self._run(self._async.cancel(task_id, queue))

    def schedules(self) -> list[dict[str, Any]]:
        return self._run(self._async.schedules())

    def enqueue_raw(self, envelope: bytes | str, queue: str | None = None) -> str:
        return self._run(self._async.enqueue_raw(envelope, queue))

    def validate(self, task: Task) -> bytes:
        return self._async.validate(task)

    def check_envelope(self, envelope: bytes) -> Task:
        return self._async.check_envelope(envelope)

    def result(self, task_id: str, queue: str | None = None) -> TaskResult | None:
        return self._run(self._async.result(task_id, queue))

    def wait(self, task_id: str, timeout: float, queue: str | None = None) -> TaskResult | None:
        return self._run(self._async.wait(task_id, timeout, queue))

    @property
    def dead_letters(self) -> Any:
        """Dead-letter operations on the client's queue, blocking: `client.dead_letters.list(limit=10)`."""
        return Blocking(self, "dead_letters")

    @property
    def flows(self) -> Any:
        """Flow operations, blocking: `client.flows.get(flow_id)` (see AsyncClient.flows)."""
        return Blocking(self, "flows")

    @property
    def inspect(self) -> Any:
        """The inspection API, blocking: `client.inspect.queue("my_tasks_queue")` (see AsyncClient.inspect)."""
        return Blocking(self, "inspect")
