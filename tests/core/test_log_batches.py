"""The logging sink's batches: when its lines reach only the handler GoPherQ installs, that handler writes a batch
at once (`LineHandler.emit_all`); the bytes must be those that record-by-record handling writes (masked, escaped,
one line per event, in order), and any handler or filter of the application's must still see every record."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gopherq import Event, log_batch_handler
from gopherq.core.loglines import EscapingFormatter, LineHandler
from gopherq.core.masking import Masker, MaskingFilter
from gopherq.core.runner import LOG_FORMAT
from gopherq.plugins.logging_sink import LoggingSink, LoggingSinkSettings

EVENTS_LOGGER = logging.getLogger("gopherq.events")
#: "2026-12-06 20:31:34,916 ": the part of a line that differs between two writes of the same record.
STAMP = len("2026-12-06 20:31:34,916 ")


@contextmanager
def installed() -> Iterator[tuple[LineHandler, io.StringIO]]:
    """GoPherQ's handler as configure_logging installs it, the only one the `gopherq` loggers' records reach while
    the block runs (pytest's own handlers sit on the root logger and, from each test phase's start, on every logger
    that does not propagate: so this is entered in the test's body)."""
    out = io.StringIO()
    handler = LineHandler(out)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    handler.addFilter(MaskingFilter(Masker()))
    parent = logging.getLogger("gopherq")
    saved = (parent.handlers[:], parent.propagate, parent.level)
    parent.handlers, parent.propagate = [handler], False
    parent.setLevel(logging.INFO)
    try:
        yield handler, out
    finally:
        parent.handlers, parent.propagate = saved[0], saved[1]
        parent.setLevel(saved[2])


def hostile_events() -> list[Event]:
    base = {"timestamp": 1.0, "worker": "w\x1b[31m1", "queue": "q"}
    return [
        Event("task.succeeded", task_id="a\nFORGED 2099 ERROR", task_type="http", attempt=1, duration=0.01, **base),
        Event("task.failed", task_id="b%s%(x)s", error={"reason": "http_status", "message": "bad\r\u202e"}, **base),
        Event("task.retrying", task_id="c", data={"url": "https://user:hunter2@example.test/x?token=s3cret"}, **base),
        Event("worker.started", data={"concurrency": 5}, **base),
    ]


def lines_of(out: io.StringIO) -> list[str]:
    return [line[STAMP:] for line in out.getvalue().splitlines()]


async def test_a_batch_written_at_once_is_what_record_by_record_handling_writes() -> None:
    sink = LoggingSink(LoggingSinkSettings())
    with installed() as (handler, out):
        assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is handler
        await sink.handle(hostile_events())
        batched = lines_of(out)
        out.seek(0)
        out.truncate()
        EVENTS_LOGGER.addFilter(lambda record: True)  # a filter of the application's: record by record again
        try:
            assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
            await sink.handle(hostile_events())
        finally:
            EVENTS_LOGGER.filters.clear()
        assert batched == lines_of(out)
    assert len(batched) == 4 and all(line.startswith("INFO gopherq.events: ") for line in batched)
    text = "\n".join(batched)
    assert "hunter2" not in text and "s3cret" not in text  # masked by the handler's filter
    assert "a\\nFORGED" in text and "\\u001b[31m" in text and "\\r\\u202e" in text and "b%s%(x)s" in text


async def test_a_filter_on_gopherqs_handler_drops_its_records_from_a_batch_as_from_single_records() -> None:
    """emit_all runs the handler's filters itself (looked up once per batch): a record one of them refuses is not
    written, the filters after it do not see it, and the batch's other lines are written as record by record."""
    sink = LoggingSink(LoggingSinkSettings())
    seen: list[str] = []

    def watch(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    with installed() as (handler, out):
        handler.addFilter(lambda record: not record.getMessage().startswith("task.failed"))
        handler.addFilter(watch)
        await sink.handle(hostile_events())
        batched = lines_of(out)
        out.seek(0)
        out.truncate()
        for event in hostile_events():
            EVENTS_LOGGER.info("%s", event.to_text())
        single = lines_of(out)
    assert batched == single and len(batched) == 3
    assert not any("task.failed" in line for line in batched) and len(seen) == 6


def test_the_batch_path_is_taken_only_when_gopherqs_handler_is_the_only_one() -> None:
    with installed() as (handler, _):
        only_when_alone(handler)


def only_when_alone(handler: LineHandler) -> None:
    parent = logging.getLogger("gopherq")
    assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is handler
    assert log_batch_handler(EVENTS_LOGGER, logging.DEBUG) is handler  # (the logger's level is the caller's check)

    handler.setLevel(logging.WARNING)  # the handler would drop INFO records
    assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
    handler.setLevel(logging.NOTSET)

    other = logging.StreamHandler(io.StringIO())
    EVENTS_LOGGER.addHandler(other)  # a handler of the application's on the way
    try:
        assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
    finally:
        EVENTS_LOGGER.removeHandler(other)

    parent.propagate = True  # the records would reach the root logger's handlers too (pytest's here)
    assert logging.getLogger().handlers
    assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
    parent.propagate = False

    plain = logging.StreamHandler(io.StringIO())  # a handler that cannot write a batch
    parent.handlers = [plain]
    assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
    parent.handlers = [handler]

    EVENTS_LOGGER.disabled = True
    try:
        assert log_batch_handler(EVENTS_LOGGER, logging.INFO) is None
    finally:
        EVENTS_LOGGER.disabled = False


async def test_a_stream_that_fails_is_reported_by_loggings_rule_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    reported: list[logging.LogRecord] = []
    with installed() as (handler, _):
        handler.setStream(Broken())
        monkeypatch.setattr(handler, "handleError", reported.append)
        await LoggingSink(LoggingSinkSettings()).handle(hostile_events())
    assert [record.getMessage().split(" ")[0] for record in reported] == ["worker.started"]
