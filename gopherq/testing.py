"""Helpers for testing GoPherQ plugins; also a pytest plugin (entry point `pytest11`) that adds three fixtures.

- `PluginHarness`: a plugin manager holding the built-in plugins plus the plugins under test, with settings,
  that runs one task through the worker's own execution path (payload validation, the sync-to-thread wrapper,
  the time limit, result serialisation) without Redis, and feeds events to the registered sinks through their
  real buffers.
- `EventRecorder`: a sink (and a plugin registering it) that keeps every event it gets; fixture
  `gopherq_events`.
- `RedisQueue`: a fresh queue on a real Redis, with a real in-process worker and client; fixture
  `gopherq_queue`. It uses `GOPHERQ_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0) and skips the test
  when no Redis answers there.

Loading this module costs next to nothing and the fixtures do nothing unless a test asks for them, so any
test suite of a project that merely has GoPherQ installed is unaffected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from gopherq.core.hookspecs import hookimpl

if TYPE_CHECKING:
    import asyncio

    from gopherq.client import AsyncClient
    from gopherq.core.events import Event
    from gopherq.core.plugins import PluginManager
    from gopherq.core.results import ErrorInfo
    from gopherq.core.settings import Settings
    from gopherq.core.task import Task
    from gopherq.core.worker import Worker

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: The built-in sink that writes to Redis: a PluginHarness leaves it out unless the test switches it on.
REDIS_SINK = "stream"

#: Worker timings that make retries and recovery happen within a test's lifetime.
FAST_WORKER = {
    "lease_timeout": 2.0,
    "heartbeat_interval": 0.5,
    "reaper_interval": 0.5,
    "promote_interval": 0.05,
    "shutdown_timeout": 5.0,
    "fetch_timeout": 0.2,
}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: tables merge, other values replace."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_settings(
    settings: Settings | Mapping[str, Any] | None = None, config: str | os.PathLike[str] | None = None
) -> Settings:
    """Settings from a ready `Settings`, or from a TOML file and/or nested overrides such as
    `{"plugins": {"pycall": {"threads": False}}}`. The process's `GOPHERQ_*` variables are not read."""
    from gopherq.core.settings import Settings, load_settings

    if isinstance(settings, Settings):
        return settings
    return load_settings(config, dict(settings or {}), environ={})


def build_plugins(
    settings: Settings, plugins: Mapping[str, Any] | None = None, load: Iterable[str] = (), *, sinks: bool = True
) -> PluginManager:
    """The built-in plugins, the installed plugins named in `load` (through their entry points), and the
    plugin objects in `plugins` (by name), with settings validated and executors (and sinks) registered."""
    from gopherq.core.plugins import load_plugins

    pinned = [*load, *(settings.pinned_plugins or [])]
    return load_plugins(settings, extra=plugins, sinks=sinks, pinned=pinned)


def make_event(name: str, **fields: Any) -> Event:
    """An event as a worker would emit it (`make_event("task.failed", task_id="t1", error={...})`)."""
    from gopherq.core.events import Event

    fields.setdefault("worker", "test-worker")
    fields.setdefault("queue", "test")
    return Event(name, fields.pop("timestamp", time.time()), **fields)


@dataclass
class TaskRun:
    """What one attempt of a task did: `status` is "succeeded", "failed" (the executor raised; see
    `retryable` and `delay`) or "rejected" (unknown type or invalid payload: the worker would dead-letter it
    without running it). `result` is the result as stored, i.e. after a JSON round trip."""

    status: str
    result: Any = None
    error: ErrorInfo | None = None
    retryable: bool | None = None
    delay: float | None = None
    duration: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class PluginHarness:
    """The plugins under test, loaded with the built-ins and settings as a worker would load them.

    `plugins` maps a plugin name (its entry-point name, which is also the name of its `[plugins.<name>]`
    table) to the plugin object (usually its module); `load` names installed plugins to load through their
    entry points instead; `settings` is nested overrides or a `Settings`. Use it as `async with
    PluginHarness(...) as harness:` (executors are opened on first use and closed at the end), or call
    `run_sync` from synchronous tests.

    A harness touches no Redis: the built-in `stream` sink, which writes events to Redis (and would start an
    embedded redis-server where none is configured), is left out unless the test's settings switch it on
    explicitly (`{"plugins": {"stream": {"enabled": True}}}`, with a `[redis]` to write to). For a real queue,
    use the `gopherq_queue` fixture.
    """

    def __init__(
        self,
        plugins: Mapping[str, Any] | None = None,
        *,
        load: Iterable[str] = (),
        settings: Settings | Mapping[str, Any] | None = None,
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = build_settings(settings, config)
        self.plugins = build_plugins(self.settings, plugins, load)
        self._opened: set[str] = set()
        if self.settings.plugin_table(REDIS_SINK).get("enabled") is not True:
            entry = self.plugins.sinks.get(REDIS_SINK)
            if entry is not None and entry.plugin == REDIS_SINK:
                del self.plugins.sinks[REDIS_SINK]
                self.plugins.info[REDIS_SINK].sinks.remove(REDIS_SINK)

    async def __aenter__(self) -> PluginHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the executors that were opened."""
        for name in sorted(self._opened):
            await self.plugins.executors[name].close()
        self._opened.clear()

    def task(self, envelope: Mapping[str, Any] | Task) -> Task:
        """A Task from an envelope dict (as it would come from Redis) or a Task."""
        from gopherq.core.task import Task, task_from_dict

        return envelope if isinstance(envelope, Task) else task_from_dict(dict(envelope))

    async def run(
        self, envelope: Mapping[str, Any] | Task, *, timeout: float | None = None, attempt: int | None = None
    ) -> TaskRun:
        """Run one attempt of a task the way a worker does, and report what it did."""
        from gopherq.core import codec
        from gopherq.core.admission import admit
        from gopherq.core.errors import TaskRejected
        from gopherq.core.executor import ExecutionContext, run_attempt
        from gopherq.core.results import ErrorInfo

        task = self.task(envelope)
        if attempt is not None:
            task.attempt = attempt
        try:  # the checks a worker makes before it runs a task
            entry = admit(task, self.plugins, time.time(), self.settings.queue.max_horizon)
        except TaskRejected as exc:
            return TaskRun("rejected", error=ErrorInfo(exc.reason, exc.message))
        if entry.name not in self._opened:
            await entry.open()
            self._opened.add(entry.name)
        limit = timeout or task.timeout or self.settings.worker.task_timeout
        context = ExecutionContext(
            worker_id="test-worker",
            queue=self.settings.queue.name,
            attempt=task.attempt,
            max_attempts=task.max_attempts or self.settings.queue.max_attempts,
            timeout=limit,
            deadline=task.deadline,
            log=logging.LoggerAdapter(logging.getLogger("gopherq.testing"), {"task_id": task.id}),
        )
        outcome = await run_attempt(entry, task, context)
        duration = outcome.finished - outcome.started
        failure = outcome.failure
        if failure is not None:
            details = codec.loads(codec.dumps(failure.details))
            return TaskRun(
                "failed",
                error=ErrorInfo(failure.reason, failure.message, details),
                retryable=failure.retryable,
                delay=failure.delay,
                duration=duration,
            )
        return TaskRun("succeeded", result=codec.loads(codec.dumps(outcome.result)), duration=duration)

    def run_sync(self, envelope: Mapping[str, Any] | Task, **kwargs: Any) -> TaskRun:
        """`run` for synchronous tests: its own event loop, executors closed afterwards."""
        import asyncio

        async def once() -> TaskRun:
            try:
                return await self.run(envelope, **kwargs)
            finally:
                await self.close()

        return asyncio.run(once())

    async def deliver(self, *events: Event | str, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Feed events (Event objects, or names for `make_event`) to every registered sink that wants them,
        through real per-sink buffers and tasks; then drain and close the sinks as a worker's shutdown does.
        Returns the counters per sink (`delivered`, `dropped`, `failed_batches`, ... and the sink's own)."""
        from gopherq.core.events import EventBus

        bus = EventBus()
        self.plugins.attach_sinks(bus)
        bus.start()
        for event in events:
            bus.publish(make_event(event) if isinstance(event, str) else event)
        await bus.close(timeout)
        return bus.stats()


class EventRecorder:
    """A sink that keeps every event it receives, and a plugin that registers it (as sink `name`).

    Pass it as a plugin, e.g. `PluginHarness({"recorder": recorder})` or `queue.worker(plugins={"recorder":
    recorder})`, then look at `recorder.events` or `await recorder.wait_for("task.succeeded")`.
    """

    def __init__(self, events: Iterable[str] = ("*",), name: str = "recorder") -> None:
        self.patterns = list(events)
        self.name = name
        self.events: list[Event] = []
        self._changed: asyncio.Condition | None = None

    @hookimpl
    def gopherq_register_sinks(self, register: Any) -> None:
        register(self.name, self, events=self.patterns, batch_size=1000)

    async def handle(self, events: list[Event]) -> None:
        self.events.extend(events)
        if self._changed is not None:  # only set once a test waits, inside its event loop
            async with self._changed:
                self._changed.notify_all()

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def matching(self, name: str, **fields: Any) -> list[Event]:
        """The recorded events called `name` whose attributes equal `fields` (e.g. task_id="t1")."""
        return [
            event
            for event in self.events
            if event.name == name and all(getattr(event, key) == value for key, value in fields.items())
        ]

    async def wait_for(self, name: str, *, count: int = 1, timeout: float = 10.0, **fields: Any) -> list[Event]:
        """Wait until `count` matching events arrived (see `matching`); fails with AssertionError after
        `timeout` seconds, listing what did arrive."""
        import asyncio

        if self._changed is None:
            self._changed = asyncio.Condition()
        deadline = time.monotonic() + timeout
        async with self._changed:
            while len(found := self.matching(name, **fields)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"waited {timeout}s for {count} {name} event(s) {fields or ''}; got: {self.names}"
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
        return found


@dataclass
class RunningWorker:
    """A worker running in the test's event loop, and a client on the same queue and plugins."""

    worker: Worker
    client: AsyncClient
    settings: Settings
    plugins: PluginManager
    task: asyncio.Task[None] = field(repr=False)


class RedisQueue:
    """A queue of its own on a real Redis: settings pointing at it, a worker, a client; keys deleted after."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    def settings(self, overrides: Mapping[str, Any] | None = None, config: str | None = None) -> Settings:
        """Settings on this Redis and queue with fast worker timings, plus nested `overrides`."""
        base = {"redis": {"url": self.url}, "queue": {"name": self.name}, "worker": dict(FAST_WORKER)}
        return build_settings(_merge(base, overrides or {}), config)

    @contextlib.asynccontextmanager
    async def worker(
        self,
        plugins: Mapping[str, Any] | None = None,
        *,
        load: Iterable[str] = (),
        settings: Mapping[str, Any] | None = None,
        config: str | None = None,
    ) -> AsyncIterator[RunningWorker]:
        """Run a real worker (built-ins, `load`ed installed plugins, and `plugins` objects) until the block
        ends; then stop it gracefully."""
        import asyncio

        import redis.asyncio as aioredis

        from gopherq.client import AsyncClient
        from gopherq.core.worker import Worker

        effective = self.settings(settings, config)
        manager = build_plugins(effective, plugins, load)
        connection = aioredis.Redis.from_url(self.url)
        worker = Worker(effective, manager, connection)
        task = asyncio.create_task(worker.run(), name="gopherq-test-worker")
        client = AsyncClient(effective, plugins=manager)
        try:
            async with client:
                yield RunningWorker(worker, client, effective, manager, task)
        finally:
            worker.request_stop()
            try:
                await asyncio.wait_for(task, effective.worker.shutdown_timeout + 10)
            finally:
                await connection.aclose()

    async def push_raw(self, *envelopes: bytes | str | Mapping[str, Any]) -> None:
        """Push tasks onto this queue's ready list as they are, unvalidated, as a producer's `RPUSH` would: to test
        what a worker does with what no client would send. A mapping is encoded as JSON; bytes and str are pushed
        unchanged (malformed JSON included)."""
        import json

        import redis.asyncio as aioredis

        raw = [item if isinstance(item, (bytes, str)) else json.dumps(dict(item)) for item in envelopes]
        client = aioredis.Redis.from_url(self.url)
        try:
            await client.rpush(self.name, *raw)
        finally:
            await client.aclose()

    def cleanup(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            keys = [self.name, *client.scan_iter(match=f"gopherq:{{{self.name}}}:*", count=1000)]
            client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(scope="session")
def gopherq_redis_url() -> str:
    """The Redis the `gopherq_queue` fixture uses; skips the test when it does not answer."""
    import redis

    url = os.environ.get("GOPHERQ_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"no Redis at {url} ({exc}); set GOPHERQ_TEST_REDIS_URL")
    finally:
        client.close()
    return url


@pytest.fixture
def gopherq_queue(gopherq_redis_url: str) -> Iterator[RedisQueue]:
    """A fresh queue on a real Redis (skipped without one); its keys are deleted afterwards."""
    queue = RedisQueue(gopherq_redis_url, f"gq_test_{uuid.uuid4().hex[:12]}")
    yield queue
    queue.cleanup()


@pytest.fixture
def gopherq_events() -> EventRecorder:
    """An EventRecorder of every event; pass it as a plugin (e.g. `plugins={"recorder": gopherq_events}`)."""
    return EventRecorder()


__all__ = [
    "FAST_WORKER",
    "EventRecorder",
    "PluginHarness",
    "RedisQueue",
    "RunningWorker",
    "TaskRun",
    "build_plugins",
    "build_settings",
    "make_event",
]
