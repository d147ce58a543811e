"""The event bus: filters, a bounded buffer per sink whose overflow is counted and logged, sink failures that
never reach the emitter; and the logging sink's one line per event (text and JSON)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest

from gopherq import Event, EventFilter
from gopherq.core.events import EventBus
from gopherq.plugins.logging_sink import LoggingSink, LoggingSinkSettings
from tests.support.common import async_wait_until


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.threads: set[str] = set()

    async def handle(self, events: list[Event]) -> None:
        self.events.extend(events)


class SyncRecorder(Recorder):
    def handle(self, events: list[Event]) -> None:  # type: ignore[override]
        self.threads.add(threading.current_thread().name)
        self.events.extend(events)


class Stuck:
    """A sink that never finishes a batch until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches = 0

    async def handle(self, events: list[Event]) -> None:
        self.batches += 1
        await self.release.wait()


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    async def handle(self, events: list[Event]) -> None:
        self.calls += 1
        raise RuntimeError("sink is broken")


@pytest.mark.parametrize(
    ("patterns", "accepted", "refused"),
    [
        (["*"], ["task.started", "worker.stopped"], []),
        (["task.*"], ["task.started", "task.failed"], ["worker.started"]),
        (["task.*", "!task.started"], ["task.failed"], ["task.started", "worker.started"]),
        (["task.failed", "worker.*"], ["task.failed", "worker.stopped"], ["task.succeeded"]),
        ([], [], ["task.started"]),
    ],
)
def test_event_filter(patterns: list[str], accepted: list[str], refused: list[str]) -> None:
    accepts = EventFilter(patterns)
    assert all(accepts(name) for name in accepted)
    assert not any(accepts(name) for name in refused)


async def test_events_reach_the_sinks_that_want_them_with_defaults() -> None:
    bus = EventBus()
    bus.defaults = {"worker": "w1", "queue": "q"}
    everything, failures = Recorder(), Recorder()
    bus.add_sink("all", everything)
    bus.add_sink("failures", failures, events=["task.failed"])
    bus.start()
    bus.emit("task.started", task_id="t1", attempt=1)
    bus.emit("task.failed", task_id="t1", error={"reason": "timeout", "message": "slow"})
    await bus.close()
    assert [(e.name, e.task_id, e.worker, e.queue) for e in everything.events] == [
        ("task.started", "t1", "w1", "q"),
        ("task.failed", "t1", "w1", "q"),
    ]
    assert [e.name for e in failures.events] == ["task.failed"]
    assert bus.stats()["all"]["delivered"] == 2


async def test_emit_never_blocks_and_overflow_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gopherq.core.events")
    bus = EventBus()
    stuck = Stuck()
    channel = bus.add_sink("stuck", stuck, buffer_size=10, batch_size=1)
    bus.start()
    for i in range(1000):  # no await in between: the sink's task cannot run, the buffer takes the load
        bus.emit("task.started", task_id=str(i))
    assert channel.dropped == 990
    assert [e.task_id for e in channel.buffer] == [str(i) for i in range(990, 1000)]  # the newest are kept
    assert any("stuck is full" in r.getMessage() for r in caplog.records)
    await async_wait_until(lambda: stuck.batches == 1, what="the sink to take a batch")
    stuck.release.set()
    await bus.close()
    assert channel.delivered == 10


async def test_a_failing_sink_is_logged_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gopherq.core.events")
    bus = EventBus()
    broken, healthy = Broken(), Recorder()
    broken_channel = bus.add_sink("broken", broken, batch_size=1)
    bus.add_sink("healthy", healthy)
    bus.start()
    for i in range(3):
        bus.emit("task.succeeded", task_id=str(i))
        await asyncio.sleep(0)
    await bus.close()
    assert broken.calls == 3  # every batch was offered despite the failures
    assert broken_channel.failed_batches == 3
    assert [e.task_id for e in healthy.events] == ["0", "1", "2"]
    assert any("sink broken failed" in r.getMessage() for r in caplog.records)


async def test_a_sync_sink_runs_in_a_thread() -> None:
    bus = EventBus()
    sink = SyncRecorder()
    bus.add_sink("sync", sink)
    bus.start()
    bus.emit("worker.started")
    await bus.close()
    assert [e.name for e in sink.events] == ["worker.started"]
    assert threading.current_thread().name not in sink.threads


async def test_close_delivers_what_is_buffered_and_closes_the_sink() -> None:
    closed: list[bool] = []

    class Closing(Recorder):
        def close(self) -> None:
            closed.append(True)

    bus = EventBus()
    sink = Closing()
    bus.add_sink("closing", sink, batch_size=2)
    bus.start()
    for i in range(7):
        bus.emit("task.started", task_id=str(i))
    await bus.close()
    assert len(sink.events) == 7
    assert closed == [True]


async def test_emit_without_a_sink_builds_nothing() -> None:
    bus = EventBus()
    bus.emit("task.started", task_id="x")  # no sink: a no-op
    assert not bus.wants("task.started")


def event(**fields: Any) -> Event:
    base: dict[str, Any] = {"name": "task.succeeded", "timestamp": 1.0, "worker": "w1", "queue": "q"}
    return Event(**{**base, **fields})


async def test_logging_sink_writes_one_text_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gopherq.events")
    sink = LoggingSink(LoggingSinkSettings())
    await sink.handle(
        [
            event(task_id="task001", task_type="http", attempt=1, duration=0.0123),
            event(name="task.failed", task_id="task002", error={"reason": "timeout", "message": "slow"}),
            event(name="worker.started", data={"concurrency": 5}),
        ]
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "gopherq.events"]
    assert len(lines) == 3
    assert lines[0].startswith("task.succeeded task=task001 type=http attempt=1 duration=12.3ms")
    assert lines[1].startswith("task.failed task=task002") and "error=timeout: slow" in lines[1]
    assert lines[2].startswith("worker.started") and "concurrency=5" in lines[2]


async def test_logging_sink_json_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gopherq.events")
    sink = LoggingSink(LoggingSinkSettings(format="json"))
    await sink.handle([event(task_id="task001", attempt=2)])
    [line] = [r.getMessage() for r in caplog.records if r.name == "gopherq.events"]
    record = json.loads(line)
    assert record["event"] == "task.succeeded"
    assert record["task_id"] == "task001"
    assert record["attempt"] == 2
    assert record["worker"] == "w1"


async def test_logging_sink_records_are_ordinary_records_of_their_own(caplog: pytest.LogCaptureFixture) -> None:
    """The sink makes one record per batch and copies it for each line: each copy has its own message and time,
    names the sink's file, and a `%` in a producer's id is text, not a format."""
    caplog.set_level(logging.INFO, logger="gopherq.events")
    sink = LoggingSink(LoggingSinkSettings())
    await sink.handle([event(task_id=f"t{n}-%s-%(x)s") for n in range(3)])
    records = [r for r in caplog.records if r.name == "gopherq.events"]
    assert [r.getMessage().split(" ")[1] for r in records] == [f"task=t{n}-%s-%(x)s" for n in range(3)]
    assert len({id(r) for r in records}) == 3 and len({id(r.__dict__) for r in records}) == 3
    assert all(r.levelno == logging.INFO and r.levelname == "INFO" and r.funcName == "handle" for r in records)
    assert all(r.filename == "logging_sink.py" and r.process and r.thread for r in records)
    created = [r.created for r in records]
    assert created == sorted(created) and all(0 <= r.msecs < 1000 for r in records)
    assert all(r.msecs == int((r.created - int(r.created)) * 1000) for r in records)


async def test_logging_sink_honours_a_record_factory_and_a_raised_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gopherq.events")
    standard = logging.getLogRecordFactory()
    made: list[str] = []

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = standard(*args, **kwargs)
        made.append(record.getMessage())
        return record

    sink = LoggingSink(LoggingSinkSettings())
    logging.setLogRecordFactory(factory)
    try:
        await sink.handle([event(task_id="a"), event(task_id="b")])
    finally:
        logging.setLogRecordFactory(standard)
    assert [m.split(" ")[1] for m in made] == ["task=a", "task=b"]  # every record made by the factory
    caplog.set_level(logging.WARNING, logger="gopherq.events")
    caplog.clear()
    await sink.handle([event(task_id="c")])  # below the logger's level now: nothing is built
    assert not [r for r in caplog.records if r.name == "gopherq.events"]
