"""Reading a queue's event stream (written by the `stream` sink): pages, the latest events, and following."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gopherq.core.bounds import EVENT_FIELD, EVENT_TEXT, Cuts, bounded
from gopherq.core.inspect.models import StreamEvent
from gopherq.core.inspect.reading import decode, number, text
from gopherq.core.keys import QueueKeys
from gopherq.core.masking import Masker
from gopherq.core.redis_client import RedisClient

#: Most recent stream entries a task's timeline (or a filtered event read) looks through.
EVENT_SCAN_LIMIT = 10_000


class EventReader:
    """The Inspector's event methods (a mixin; needs `redis`, `masker` and `keys`)."""

    redis: RedisClient
    masker: Masker

    def keys(self, queue: str) -> QueueKeys:
        raise NotImplementedError

    def _event(self, entry_id: Any, fields: dict[Any, Any]) -> StreamEvent:
        """A stream entry as the `stream` sink writes it (one field `event`, the whole event as JSON), or with
        one JSON-valued field per event attribute (as another writer may)."""
        values = {text(key): decode(value) for key, value in fields.items()}
        if isinstance(values.get("event"), dict):
            values = values["event"]
        cuts: Cuts = {}
        if sum(len(value) for value in fields.values() if isinstance(value, bytes)) > EVENT_FIELD:
            # Another writer's event, or one written before the stream sink bounded them: bounded here.
            values = bounded(values, text=EVENT_TEXT, total=EVENT_FIELD, cuts=cuts)
        data = self.masker.value(values.get("data")) if isinstance(values.get("data"), dict) else {}
        error = self.masker.value(values.get("error")) if isinstance(values.get("error"), dict) else None
        attempt = values.get("attempt")
        return StreamEvent(
            id=text(entry_id),
            name=str(values.get("event") or ""),
            timestamp=number(values.get("timestamp")),
            task_id=None if values.get("task_id") is None else str(values["task_id"]),
            worker=values.get("worker"),
            queue=values.get("queue"),
            data=data,
            task_type=values.get("task_type"),
            attempt=attempt if isinstance(attempt, int) else None,
            duration=number(values.get("duration")),
            error=error,
            truncated=cuts,
            trace_id=values.get("trace_id") if isinstance(values.get("trace_id"), str) else None,
        )

    async def events(
        self,
        queue: str,
        after: str = "-",
        count: int = 100,
        task_id: str | None = None,
        *,
        latest: bool = False,
    ) -> list[StreamEvent]:
        """Events of the queue's stream, oldest first: at most `count` after the entry id `after` ("-": from the
        oldest kept), or with `latest=True` the last `count`. `task_id` keeps that task's events only (looking
        through at most EVENT_SCAN_LIMIT entries), in the order they happened: stream order is write order, and a
        producer's `task.enqueued` can be written after a worker's first events of the task. To wait for new
        events, use `follow`."""
        key = self.keys(queue).events
        count = max(1, count)
        if latest:
            found = list(reversed(await self._scan(key, "+", count, task_id, newest_first=True)))
        else:
            start = "-" if after in ("-", "") else f"({after}"
            found = await self._scan(key, start, count, task_id, newest_first=False)
        if task_id is not None:
            found.sort(key=lambda event: (event.timestamp or 0.0, event.id))
        return found

    async def _scan(
        self, key: str, bound: str, count: int, task_id: str | None, *, newest_first: bool
    ) -> list[StreamEvent]:
        """Up to `count` events from `bound` on, oldest first (XRANGE) or newest first (XREVRANGE). Filtered by
        `task_id`, it reads on in chunks of 1,000 until it has `count` or has looked through EVENT_SCAN_LIMIT."""
        out: list[StreamEvent] = []
        scanned = 0
        while len(out) < count and scanned < EVENT_SCAN_LIMIT:
            chunk = count if task_id is None else 1000
            if newest_first:
                entries = await self.redis.xrevrange(key, bound, "-", count=chunk)
            else:
                entries = await self.redis.xrange(key, bound, "+", count=chunk)
            if not entries:
                break
            scanned += len(entries)
            for entry_id, fields in entries:
                event = self._event(entry_id, fields)
                if task_id is None or event.task_id == task_id:
                    out.append(event)
            bound = f"({text(entries[-1][0])}"
            if task_id is None:
                break
        return out[:count]

    async def last_event_id(self, queue: str) -> str:
        """The id of the newest event in the queue's stream ("0-0" when it is empty): where a follower starts."""
        entries = await self.redis.xrevrange(self.keys(queue).events, "+", "-", count=1)
        return text(entries[0][0]) if entries else "0-0"

    async def follow(
        self,
        queue: str,
        after: str | None = None,
        task_id: str | None = None,
        block: float = 0.5,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield the queue's events as they are written, after the entry id `after` (default: from now on),
        only `task_id`'s when given; waits on the stream (XREAD BLOCK, `block` seconds at a time) until `stop` is
        set (checked between reads: the end comes within `block` seconds, without cancelling a blocked read).
        Keep `block` under half of `redis.command_timeout` (1 s at the least): a read blocked longer would time out."""
        key = self.keys(queue).events
        last = after if after not in (None, "", "$") else await self.last_event_id(queue)
        while stop is None or not stop.is_set():
            read = await self.redis.xread({key: last}, count=1000, block=max(1, int(block * 1000)))
            for entry_id, fields in read[0][1] if read else []:
                last = text(entry_id)
                event = self._event(entry_id, fields)
                if task_id is None or event.task_id == task_id:
                    yield event
