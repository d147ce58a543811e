"""A GoPherQ event sink that appends events to a JSON-lines file, rotating the file by size.

It is off until it is given a path:

    [plugins.jsonl]
    path = "events.jsonl"    # relative to the config file
    max_bytes = 10485760     # start a new file when this one would grow past it (0: never)
    backups = 5              # keep events.jsonl.1 (newest) ... events.jsonl.5; older ones are deleted
    events = ["task.*"]      # plus the keys every sink has: enabled, buffer_size, batch_size
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from gopherq import Event, RegisterSettings, RegisterSink, Settings, SinkSettings, hookimpl
from pydantic import Field

__version__ = "0.1.0"


class JsonlSettings(SinkSettings):
    """`[plugins.jsonl]`: where to write, and when to rotate."""

    path: str | None = Field(None, description="the JSON-lines file; the sink is off without one")
    max_bytes: int = Field(10 * 1024 * 1024, ge=0, description="rotate before the file grows past this (0: never)")
    backups: int = Field(5, ge=0, description="rotated files kept")


class JsonlSink:
    """Appends one JSON object per line. `handle` is a plain function: the worker runs it in a thread, so
    file I/O never blocks the event loop. Only the sink's own task calls it, one batch at a time."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: IO[bytes] | None = None

    def handle(self, events: list[Event]) -> None:
        data = b"".join(event.to_json() + b"\n" for event in events)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        size = self._file.tell()
        if self.max_bytes and size and size + len(data) > self.max_bytes:
            self._file = self._rotate(self._file)
        self._file.write(data)
        self._file.flush()

    def _rotate(self, current: IO[bytes]) -> IO[bytes]:
        """events.jsonl -> events.jsonl.1 -> events.jsonl.2 ...; the oldest beyond `backups` is deleted."""
        current.close()
        if self.backups:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        return self.path.open("ab")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(JsonlSettings)


@hookimpl
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    config: JsonlSettings = settings.plugin("jsonl")
    if config.enabled and config.path:
        path = settings.base_dir / config.path  # relative paths are relative to the config file
        register("jsonl", JsonlSink(path, config.max_bytes, config.backups), **config.register_kwargs())
