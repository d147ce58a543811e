"""Reading a queue's event log (core/eventlog.py): pages of its stream, the latest events, following, and a task's
timeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gopherq.core.bounds import EVENT_FIELD, EVENT_TEXT, Cuts, bounded
from gopherq.core.eventlog import TIMELINE_MAX
from gopherq.core.inspect.models import StreamEvent
from gopherq.core.inspect.reading import decode, number, text
from gopherq.core.keys import QueueKeys
from gopherq.core.masking import Masker
from gopherq.core.redis_client import RedisClient

#: Most events a task's timeline read returns (its whole timeline: one bounded LRANGE).
TIMELINE_READ = TIMELINE_MAX


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
        written = values.get("truncated")
        if isinstance(written, dict):  # what its writer cut (a long error, or the timeline's shorter copy)
            cuts.update({str(path): cut for path, cut in written.items() if isinstance(cut, dict)})
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
        oldest kept), or with `latest=True` the last `count`. With `task_id`, that task's events come from its
        timeline (see `timeline`) instead, whatever the stream has taken since. To wait for new events, use
        `follow`."""
        count = max(1, count)
        if task_id is not None:
            found = await self.timeline(queue, task_id, TIMELINE_READ)
            if not latest and after not in ("-", ""):
                found = [event for event in found if _entry_order(event.id) > _entry_order(after)]
            return found[-count:] if latest else found[:count]
        key = self.keys(queue).events
        if latest:
            entries = await self.redis.xrevrange(key, "+", "-", count=count)
            return [self._event(entry_id, fields) for entry_id, fields in reversed(entries)]
        start = "-" if after in ("-", "") else f"({after}"
        entries = await self.redis.xrange(key, start, "+", count=count)
        return [self._event(entry_id, fields) for entry_id, fields in entries]

    async def timeline(self, queue: str, task_id: str, count: int = TIMELINE_READ) -> list[StreamEvent]:
        """A task's newest events (at most `count`, and at most what its timeline keeps), in the order they
        happened (by timestamp: a producer's `task.enqueued` can be written after a worker's first events of the
        task). Kept with the task's result, written by the scripts that write the stream: its list (one LRANGE of
        at most TIMELINE_MAX entries of 2 KiB each, whatever the queue's traffic) and the outcome event the settle
        wrote with its result, in the hash of its period (two HGETs: this period's and the one before; see
        core/eventlog.py). Each event's `id` is its stream entry's."""
        k = self.keys(queue)
        count = max(1, min(count, TIMELINE_MAX))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.timeline(task_id), -count, -1)
            pipe.get(k.outcome_width)
            raw, width = await pipe.execute()
        raw = list(raw)
        if width is not None and width.isdigit() and int(width) > 0:
            period = int(time.time()) // int(width)
            async with self.redis.pipeline(transaction=False) as pipe:
                for back in (1, 0):
                    pipe.hget(k.outcome_events(int(width), period - back), task_id)
                raw += [entry for entry in await pipe.execute() if entry is not None and entry not in raw]
        found = []
        for item in raw:
            entry_id, _, line = item.partition(b" ")
            found.append(self._event(entry_id, {b"event": line}))
        found.sort(key=lambda event: (event.timestamp or 0.0, _entry_order(event.id)))
        return found[-count:]

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


def _entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ('<ms>-<seq>') as a sortable pair; (0, 0) when it is not one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
