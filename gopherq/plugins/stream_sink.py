"""The built-in `stream` sink: every event of a queue, masked, appended to the capped Redis stream
`gopherq:{Q}:events`, which `gopherq events`, task timelines and the dashboard's live view read.

A batch of events is one pipeline of `XADD ... MAXLEN ~ <maxlen>` (one round trip per batch, never per event).
Each stream entry holds the fields of `Event.to_dict()` (`event`, `timestamp`, `worker`, `queue`, `task_id`,
`task_type`, `attempt`, `duration`, `error`, `data`), every value JSON-encoded, `error` and `data` masked. The
sink opens its own Redis connection (a `gopherq.RedisConnection` on the same settings), so it works the same in a
worker and in a client with `sinks=True`, and it never shares the worker's connection with the hot path.

What was written survives a SIGKILLed worker; what still waited in the sink's buffer does not (see the bus's
`dropped` count). A batch that fails on a Redis error is retried a few times, then dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gopherq import Event, Masker, QueueKeys, RedisConnection, Settings, SinkSettings, hookimpl

log = logging.getLogger(__name__)

#: Tries per batch when Redis errors, and the pause before each retry (seconds, doubled each time).
ATTEMPTS = 3
RETRY_DELAY = 0.2


class StreamSinkSettings(SinkSettings):
    """`[plugins.stream]`: on by default; `maxlen` caps each queue's stream (approximately, as Redis trims)."""

    maxlen: int = Field(100_000, ge=1, description="events kept per queue stream (XADD MAXLEN ~)")
    events: list[str] = Field(
        default_factory=lambda: ["*", "!task.dequeued"],
        description="event-name globs; '!x' excludes (task.dequeued, a moment before task.started, is left out)",
    )
    batch_size: int = Field(500, ge=1, description="most events written in one pipeline")


def entry_fields(event: Event, masker: Masker) -> dict[str, bytes]:
    """One stream entry: each field of the event JSON-encoded, the free-form ones (`error`, `data`) masked."""
    out: dict[str, bytes] = {}
    for key, value in event.to_dict().items():
        if key == "error" or key == "data":
            value = masker.value(value)
        out[key] = orjson.dumps(value, default=str)
    return out


class StreamSink:
    """Appends events to their queue's stream, one pipeline per batch."""

    def __init__(self, settings: Settings, config: StreamSinkSettings) -> None:
        self.settings = settings
        self.maxlen = config.maxlen
        self.masker = Masker.from_settings(settings)
        self.connection = RedisConnection(settings, "stream")
        self.redis: Any = None
        self.keys: dict[str, str] = {}
        self.written = 0
        self.skipped = 0

    async def open(self) -> None:
        self.redis = await self.connection.open()

    def _key(self, queue: str) -> str:
        key = self.keys.get(queue)
        if key is None:
            key = self.keys[queue] = QueueKeys(queue).events
        return key

    async def handle(self, events: list[Event]) -> None:
        entries = []
        for event in events:
            if event.queue is None:
                self.skipped += 1
                continue
            entries.append((self._key(event.queue), entry_fields(event, self.masker)))
        if not entries:
            return
        delay = RETRY_DELAY
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key, fields in entries:
                        pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
                break
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == ATTEMPTS:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        self.written += len(entries)

    async def close(self) -> None:
        await self.connection.close()

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "skipped_without_queue": self.skipped}


@hookimpl
def gopherq_register_settings(register: Any) -> None:
    register(StreamSinkSettings)


@hookimpl
def gopherq_register_sinks(register: Any, settings: Settings) -> None:
    config: StreamSinkSettings = settings.plugin("stream")
    if config.enabled:
        register("stream", StreamSink(settings, config), **config.register_kwargs())
