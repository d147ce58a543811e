"""The built-in `logging` sink: one log line per event, naming the event and the task (text or JSON lines)."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator

from gopherq import Event, RegisterSettings, RegisterSink, Settings, SinkSettings, hookimpl

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
    """Writes events to the `gopherq.events` logger."""

    def __init__(self, settings: LoggingSinkSettings) -> None:
        self.level = level_number(settings.level)
        self.json = settings.format == "json"

    async def handle(self, events: list[Event]) -> None:
        for event in events:
            line = event.to_json().decode() if self.json else event.to_text()
            log.log(self.level, "%s", line)


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
