"""Decoding what Redis returns, and the bounded searches a task lookup makes in unindexed places."""

from __future__ import annotations

import re
from typing import Any

from gopherq.core import codec
from gopherq.core.redis_client import RedisClient
from gopherq.core.task import DEFAULT_TYPE

#: Most entries of one unindexed place (ready list, in-flight hash, delayed set) a task lookup reads.
SEARCH_LIMIT = 10_000


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


def id_pattern(task_id: str) -> re.Pattern[bytes]:
    """Finds `"id": "<task_id>"` in envelope bytes, however the producer spaced its JSON."""
    return re.compile(rb'"id"\s*:\s*' + re.escape(codec.dumps(task_id)))


async def find_in_hash(redis: RedisClient, key: str, pattern: re.Pattern[bytes]) -> tuple[str, bytes] | None:
    """(field, value) of the first value of hash `key` matching `pattern`, among its first SEARCH_LIMIT."""
    cursor, seen = 0, 0
    while True:
        cursor, batch = await redis.hscan(key, cursor, count=1000)
        for field, raw in batch.items():
            if pattern.search(raw):
                return text(field), raw
        seen += len(batch)
        if not cursor or seen >= SEARCH_LIMIT:
            return None


async def find_in_zset(redis: RedisClient, key: str, pattern: re.Pattern[bytes]) -> bytes | None:
    """The first member of sorted set `key` matching `pattern`, among its first SEARCH_LIMIT."""
    cursor, seen = 0, 0
    while True:
        cursor, batch = await redis.zscan(key, cursor, count=1000)
        for raw, _score in batch:
            if pattern.search(raw):
                return bytes(raw)
        seen += len(batch)
        if not cursor or seen >= SEARCH_LIMIT:
            return None


async def find_in_list(redis: RedisClient, key: str, pattern: re.Pattern[bytes]) -> bytes | None:
    """The first item of list `key` matching `pattern`, among its first SEARCH_LIMIT (from the head)."""
    for start in range(0, SEARCH_LIMIT, 1000):
        batch = await redis.lrange(key, start, start + 999)
        for raw in batch:
            if pattern.search(raw):
                return bytes(raw)
        if len(batch) < 1000:
            return None
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
