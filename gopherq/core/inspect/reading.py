"""Decoding what Redis returns, for the inspection layer."""

from __future__ import annotations

from typing import Any

from gopherq.core import codec
from gopherq.core.task import DEFAULT_TYPE


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def number(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def integer(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def decode(raw: Any) -> Any:
    """Parsed JSON, or None when `raw` is not JSON."""
    if raw is None:
        return None
    try:
        return codec.loads(raw)
    except (codec.JSONDecodeError, TypeError):
        return None


def task_type(envelope: Any, result: Any, dead: Any, events: list[Any]) -> str | None:
    """A task's type from the first of its records that names one: the result record, the dead letter, the
    envelope (whose `type` defaults to `http`, so it is asked only when it parsed as a task), the events."""
    for record, key in ((result, "type"), (dead, "type")):
        if isinstance(record, dict) and isinstance(record.get(key), str):
            return str(record[key])
    if isinstance(envelope, dict) and "raw" not in envelope:
        kind = envelope.get("type", DEFAULT_TYPE)
        return kind if isinstance(kind, str) else None
    return next((event.task_type for event in events if event.task_type), None)
