"""The built-in `stream` sink: the writer of each queue's event log in Redis, the capped stream
`gopherq:{Q}:events` and each task's timeline, which `gopherq events`, task pages and the dashboard's live view
read.

The outcome events of the tasks a worker settles are not written here: the settle script writes them itself, in the
call that records the outcome (see gopherq/core/eventlog.py), so the stream agrees with the result records. The
sink declares itself the log's writer (its `event_log`), and the event bus hands it every other event: a client's
`task.enqueued`, recoveries, requeues, cancellations, the worker's lifecycle and what plugins emit.

Each stream entry has one field, `event`, whose value is the event as one JSON object with the keys of
`Event.to_dict()`: `event` (the name), `timestamp`, `worker`, `queue`, `task_id`, `task_type`, `attempt`,
`duration` (null when absent), and `error` and `data` when the event has them, masked. A batch of events costs
one round trip and one command per queue (the `record` script, which XADDs each, appends each task event to its
task's timeline, then trims the stream once, `MAXLEN ~ <maxlen>`).

The sink opens its own Redis connection (a `gopherq.RedisConnection` on the same settings), so it works the same
in a worker and in a client with `sinks=True`, and never shares the worker's connection with the hot path. What
was written survives a SIGKILLed worker; what still waited in the sink's buffer does not (see the bus's `dropped`
count).

While Redis cannot take the events, because it is unreachable (down, restarting, loading its data) or refuses
writes (out of memory under `noeviction`, a read-only replica after a failover, a failed background save), the
batch is held and retried with jittered exponential backoff: one WARNING line when writing starts failing and one
INFO line when it works again, no traceback per batch. Meanwhile newer events wait in the sink's bounded buffer
(`buffer_size`), whose oldest are dropped, and counted (`dropped`), only when it is full. Any other error reply
(e.g. the key is not a stream) is the batch's own: it fails, and the bus logs and counts it.

An entry is bounded: an event whose JSON would be over ENTRY_BYTES (an endpoint's long error, say) has its
texts cut to TEXT_BYTES and its parts cut to fit, and says what was cut in `truncated`; so the stream takes
at most about `maxlen` x 8 KiB.
"""

from __future__ import annotations

import logging

from pydantic import Field

from gopherq import (
    Backoff,
    Event,
    EventLog,
    Masker,
    RedisClient,
    RedisConnection,
    RegisterSettings,
    RegisterSink,
    Settings,
    SinkSettings,
    hookimpl,
    redis_unavailable,
)

log = logging.getLogger(__name__)

#: Most bytes of one stream entry (the event as JSON), and of one text in it (core/eventlog.py).
ENTRY_BYTES = 8 * 1024
TEXT_BYTES = 4 * 1024

#: Pause before retrying a batch Redis could not take (seconds): growing on each failure up to RETRY_MAX, jittered.
RETRY_MIN = 0.2
RETRY_MAX = 5.0


class StreamSinkSettings(SinkSettings):
    """`[plugins.stream]`: on by default; `maxlen` caps each queue's stream (approximately, as Redis trims)."""

    maxlen: int = Field(100_000, ge=1, description="events kept per queue stream (XTRIM MAXLEN ~)")
    events: list[str] = Field(
        default_factory=lambda: ["*", "!task.dequeued", "!task.started"],
        description="event-name globs; '!x' excludes (attempt starts are left out: see docs/operations.md)",
    )
    batch_size: int = Field(500, ge=1, description="most events written in one round trip")
    timeline: int = Field(
        EventLog.DEFAULT_TIMELINE,
        ge=0,
        le=EventLog.MAX_TIMELINE,
        description="events kept per task for its timeline, expiring with its result (0: no timelines)",
    )


def entry_json(event: Event, masker: Masker) -> bytes:
    """One stream entry's value: the event as compact JSON, its `error` and `data` masked, bounded."""
    return EventLog.entry(event, masker)


class StreamSink:
    """Appends events to their queue's stream, one pipeline per batch."""

    def __init__(self, settings: Settings, config: StreamSinkSettings) -> None:
        self.settings = settings
        self.maxlen = config.maxlen
        self.masker = Masker.from_settings(settings)
        self.connection = RedisConnection(settings, "stream")
        self.redis: RedisClient | None = None
        #: Declares this sink the writer of the queue's event log: the settle script writes the outcome events the
        #: sink accepts, and the bus hands the sink only the others.
        self.event_log = EventLog(config.maxlen, config.timeline, settings.queue.result_ttl)
        self.written = 0
        self.skipped = 0
        self.retries = 0
        #: Paced retries of a held batch; logs one line when writing fails and one when it works again.
        self.backoff = Backoff("stream sink: cannot write events, holding them", RETRY_MIN, RETRY_MAX, repeat=0)

    async def open(self) -> None:
        self.redis = await self.connection.open()

    async def handle(self, events: list[Event]) -> None:
        lines: dict[str, list[tuple[bytes, str | None]]] = {}
        for event in events:
            if event.queue is None:
                self.skipped += 1
                continue
            lines.setdefault(event.queue, []).append((entry_json(event, self.masker), event.task_id))
        if not lines:
            return
        while True:
            try:
                await self._write(lines)
                break
            except Exception as exc:
                if not redis_unavailable(exc):
                    raise  # the batch's own fault: failed, logged and counted by the bus
                # Held, not dropped: the worker never waits for this sink, and while the batch waits here the
                # sink's buffer takes the newer events (dropping and counting the oldest once it is full).
                self.retries += 1
                await self.backoff.wait(exc)
        self.backoff.reset()
        self.written += sum(len(batch) for batch in lines.values())

    async def _write(self, lines: dict[str, list[tuple[bytes, str | None]]]) -> None:
        assert self.redis is not None, "the sink writes only after open()"
        if len(lines) == 1:  # a worker's events: all of one queue
            [(queue, batch)] = lines.items()
            await self.event_log.write(self.redis, queue, batch)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, batch in lines.items():
                await self.event_log.write(self.redis, queue, batch, pipe=pipe)
            await pipe.execute()

    async def close(self) -> None:
        await self.connection.close()

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "skipped_without_queue": self.skipped, "write_retries": self.retries}


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(StreamSinkSettings)


@hookimpl
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    config: StreamSinkSettings = settings.plugin("stream")
    if config.enabled:
        register("stream", StreamSink(settings, config), **config.register_kwargs())
