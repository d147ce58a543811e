"""Joins the task creations of concurrent `/v1` requests into one Redis call (the API's `Coalescer`)."""

from __future__ import annotations

import asyncio

from gopherq.client import AsyncClient, Enqueued
from gopherq.core.connection import watch_writes
from gopherq.core.resilience import RETRYABLE
from gopherq.core.task import Task

#: Most tasks the coalescer puts in one Redis call by joining requests. A Lua script holds Redis for its whole run
#: (every worker's claim waits behind it), so requests are joined only up to about a thousand tasks: that already
#: shares the round trip among hundreds of single-task POSTs, while a batch request goes alone, as one call.
COALESCE_TASKS = 1000


class Coalescer:
    """Creates the tasks of the requests that arrive within one turn of the event loop in one Redis call, up to
    COALESCE_TASKS tasks: under concurrent single-task POSTs the round trip (and redis-py's work per call) is shared
    instead of paid per request. Each request still gets its own answer; a Redis error fails every request of the
    call."""

    def __init__(self, client: AsyncClient, window: int, limit: int = COALESCE_TASKS) -> None:
        self.client = client
        self.window = window
        self.limit = limit
        self.pending: list[tuple[list[Task], asyncio.Future[list[Enqueued]]]] = []
        self.pending_tasks = 0
        self.scheduled: asyncio.Handle | None = None
        self.sending: set[asyncio.Future[None]] = set()

    async def create(self, tasks: list[Task]) -> list[Enqueued]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Enqueued]] = loop.create_future()
        if self.pending and self.pending_tasks + len(tasks) > self.limit:
            self._flush()  # this request would make the call too big: send what waits, start another
        if not self.pending:
            self.scheduled = loop.call_soon(self._flush)
        self.pending.append((tasks, future))
        self.pending_tasks += len(tasks)
        return await future

    def _flush(self) -> None:
        if self.scheduled is not None:
            self.scheduled.cancel()
            self.scheduled = None
        waiting, self.pending, self.pending_tasks = self.pending, [], 0
        sending = asyncio.ensure_future(self._send(waiting))
        self.sending.add(sending)
        sending.add_done_callback(self.sending.discard)

    async def _send(self, waiting: list[tuple[list[Task], asyncio.Future[list[Enqueued]]]]) -> None:
        tasks = [task for batch, _ in waiting for task in batch]
        try:
            with watch_writes(self.client.connected()) as writes:
                try:
                    outcomes = await self.client.create(tasks, self.window)
                except RETRYABLE as exc:
                    raise CreateFailed(exc, writes.maybe_sent) from exc
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for batch, future in waiting:
            if not future.done():
                future.set_result(outcomes[start : start + len(batch)])
            start += len(batch)


class CreateFailed(Exception):
    """Redis failed a create call: `error` is what redis-py raised; `maybe_sent` is False only when no command of
    the call reached Redis (then nothing was created)."""

    def __init__(self, error: BaseException, maybe_sent: bool) -> None:
        super().__init__(error, maybe_sent)
        self.error = error
        self.maybe_sent = maybe_sent
