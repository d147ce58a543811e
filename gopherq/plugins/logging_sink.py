"""The built-in `logging` sink: one log line per event, naming the event and the task (text or JSON lines)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator

from gopherq import Event, RegisterSettings, RegisterSink, Settings, SinkSettings, hookimpl, log_batch_handler

log = logging.getLogger("gopherq.events")


class LoggingSinkSettings(SinkSettings):
    """`[plugins.logging]`: which events to log, at what level, in what format."""

    format: Literal["text", "json"] = "text"
    level: str = Field("INFO", description="level of the event lines")

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if not isinstance(logging.getLevelName(value), int):
            raise ValueError("must be a logging level name such as INFO or WARNING")
        return value


def level_number(name: str) -> int:
    number = logging.getLevelName(name)
    return number if isinstance(number, int) else logging.INFO


class LoggingSink:
    """Writes events to the `gopherq.events` logger, one record per event (its message is the line itself), through
    the logger's filters and handlers like any record: the handler of `configure_logging` escapes and masks it.

    A worker logs a few events per task, so a record's cost counts. `Logger.log` walks the stack for its caller
    and `LogRecord()` looks up the thread, the process and the file name again, for every record: together
    several times the cost of the line itself. So the sink checks the level once per batch, makes one record per
    batch the standard way (`Logger.makeRecord`: the current thread and process, as `Logger.log` would), and gives
    each line a copy of it with its own message and time. A record factory of one's own
    (`logging.setLogRecordFactory`) makes every record instead. When the records would reach only the handler
    GoPherQ installs (`log_batch_handler`: no handler or logger filter of the application's on the way), that
    handler writes the batch at once, through the same filters and formatter: one write instead of a walk up the
    loggers, a lock and a write per line."""

    def __init__(self, settings: LoggingSinkSettings) -> None:
        self.level = level_number(settings.level)
        self.json = settings.format == "json"

    async def handle(self, events: list[Event]) -> None:
        if not log.isEnabledFor(self.level):  # the level was raised since the sink was registered
            return
        lines = [event.to_json().decode() if self.json else event.to_text() for event in events]
        handler = log_batch_handler(log, self.level)
        if handler is not None:
            handler.emit_all(records(self.level, lines))
            return
        for record in records(self.level, lines):
            log.handle(record)


#: Where the sink's records say they come from: `handle`, as when it called `Logger.log`.
_SOURCE = (__file__, LoggingSink.handle.__code__.co_firstlineno, "handle")


def records(level: int, lines: list[str]) -> Iterator[logging.LogRecord]:
    """A record of the `gopherq.events` logger for each line, made when it is handled (so its time is when it is
    written, as with `Logger.log`)."""
    path, line_number, function = _SOURCE
    if logging.getLogRecordFactory() is not logging.LogRecord:
        for line in lines:
            yield log.makeRecord(log.name, level, path, line_number, line, (), None, function)
        return
    first = log.makeRecord(log.name, level, path, line_number, "", (), None, function)
    template, created, relative = first.__dict__, first.created, first.relativeCreated
    for line in lines:
        record = _new_record(logging.LogRecord)
        fields = template.copy()  # (one copy of the template's dict: cheaper than filling an empty one)
        now = time.time()
        fields["msg"] = line
        fields["created"] = now
        fields["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes them
        fields["relativeCreated"] = relative + (now - created) * 1000
        record.__dict__ = fields
        yield record


_new_record = logging.LogRecord.__new__


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(LoggingSinkSettings)


@hookimpl
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    config: LoggingSinkSettings = settings.plugin("logging")
    # A sink whose lines the logging configuration would discard is not registered at all, so the worker
    # does not even build those events.
    if config.enabled and log.isEnabledFor(level_number(config.level)):
        register("logging", LoggingSink(config), **config.register_kwargs())
