"""Finding one task by id: its whereabouts record first (one HGET, see core/whereabouts.py), a bounded search only
for a task that has none (a raw push not yet claimed, or a record a newer or older version wrote).

What a lookup reads from Redis is bounded whatever the backlog: the record, the result record and dead letter of
the task, and its envelope, found on the server by find.lua, so that only the match crosses the network. A ready
task's envelope is looked for in the first and last ENVELOPE_WINDOW entries of the list it waits in, its level's or,
when its record names a fair key, that key's list of its level (`ready_list`; where a task about to run, or just
enqueued, sits); deeper in a long backlog its place is still known from its record, and the
envelope is left out (`envelope_note`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts
from gopherq.core.whereabouts import Whereabouts

#: Entries of a ready list, from each end, in which a recorded ready task's envelope is looked for.
ENVELOPE_WINDOW = 2_000

#: Entries of each unindexed place searched for a task without a record (a raw push not yet claimed).
SEARCH_LIMIT = 10_000

#: Delayed tasks due at the same millisecond read to find one of them.
SAME_DUE = 100

#: Said of a ready task whose envelope is deeper in its list than the window (its place is known all the same).
DEEP_NOTE = "the task is deeper in its ready list than the lookup reads; its envelope is shown once it nears the head"

#: Said of a task found by a search because it has no whereabouts record.
SEARCHED_NOTE = "found by a bounded search: a task pushed raw has no whereabouts record until a worker claims it"

_LUA_MAGIC = set("^$()%.[]*+-?")

#: Level letters of the fair keys' lists (lua/fair_base.lua), by level name.
_LETTERS = {"high": "h", "default": "d", "low": "l"}


def ready_list(k: QueueKeys, where: Whereabouts) -> str:
    """The list a ready task waits in: its fair key's list of its level when its record names a key, else its
    level's list."""
    letter = _LETTERS.get(where.level or "default")
    if where.fair_key is not None and letter is not None:
        return k.fair_list(letter, where.fair_key)
    return k.level(where.level)


def id_lua_pattern(task_id: str) -> str:
    """A Lua pattern finding `"id": "<task_id>"` in envelope bytes, however the producer spaced its JSON."""
    quoted = codec.dumps(task_id).decode()
    return '"id"%s*:%s*' + "".join("%" + c if c in _LUA_MAGIC else c for c in quoted)


@dataclass(slots=True)
class Located:
    """Where a lookup found a task: `state` (ready, delayed, running, orphaned, or '' when not live), its envelope
    bytes when read, the worker holding it and since when, its parsed record, and a note on how it was found."""

    state: str = ""
    envelope: bytes | None = None
    worker: str | None = None
    since: float | None = None
    where: Whereabouts | None = None
    note: str | None = None


class TaskLocator:
    """Locates live tasks of one queue on one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._find = scripts(redis)["find"]

    async def find(self, key: str, mode: str, task_id: str, *bounds: Any) -> tuple[bytes, str] | bool:
        """(envelope, hash field or '') of the task in `key` (see find.lua); else False when the place was read
        whole (the task is not there), True when it was not (it may be further in)."""
        reply = await self._find(keys=[key], args=[mode, id_lua_pattern(task_id), *bounds])
        if not isinstance(reply, list):
            return reply is None
        return bytes(reply[0]), reply[1].decode("utf-8", "replace")

    async def locate(self, k: QueueKeys, task_id: str, raw_where: bytes | None, settled: bool) -> Located:
        """Where the live task is, from its record `raw_where` (read by the caller with its result record); a task
        without one is searched for unless it has `settled` (a final result record or a dead letter)."""
        where = Whereabouts.parse(raw_where)
        if where is not None:
            found = await self._recorded(k, task_id, where)
            if found is not None:
                return found
        if settled:
            return Located()
        return await self._search(k, task_id)

    async def _recorded(self, k: QueueKeys, task_id: str, where: Whereabouts) -> Located | None:
        """The task where its record says; None when it is not there (a stale record: the caller searches)."""
        if where.place == "running" and where.token is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(k.inflight, where.token)
                pipe.zscore(k.leases, where.token)
                envelope, deadline = await pipe.execute()
            if envelope is None:
                return None
            # A lease past its deadline: its worker's heartbeat is gone (ORPHANED_NOTE).
            state = "orphaned" if deadline is not None and deadline <= time.time() * 1000 else "running"
            return Located(state, envelope, where.worker, where.at, where)
        if where.place == "delayed" and where.at is not None:
            found = await self.find(k.delayed, "score", task_id, round(where.at * 1000), SAME_DUE)
            return Located("delayed", found[0], where=where) if isinstance(found, tuple) else None
        if where.place == "ready":
            found = await self.find(ready_list(k, where), "list", task_id, ENVELOPE_WINDOW, ENVELOPE_WINDOW)
            if isinstance(found, tuple):
                return Located("ready", found[0], where=where)
            if not found:
                return None  # its list was read whole and it is not there: the record is stale
            return Located("ready", None, where=where, note=DEEP_NOTE)
        return None

    async def _search(self, k: QueueKeys, task_id: str) -> Located:
        """A bounded search, on the server, of the places a task without a record can be: in flight (a claim that
        could not read its id), delayed, or in a ready list (a raw push goes to the plain one)."""
        found = await self.find(k.inflight, "hash", task_id, SEARCH_LIMIT)
        if isinstance(found, tuple):
            envelope, token = found
            deadline = await self.redis.zscore(k.leases, token)
            state = "orphaned" if deadline is not None and deadline <= time.time() * 1000 else "running"
            return Located(state, envelope, note=SEARCHED_NOTE, where=Whereabouts("running", None, token=token))
        found = await self.find(k.delayed, "zset", task_id, SEARCH_LIMIT)
        if isinstance(found, tuple):
            return Located("delayed", found[0], note=SEARCHED_NOTE)
        for level in ("high", "default", "low"):
            found = await self.find(k.level(level), "list", task_id, SEARCH_LIMIT, SEARCH_LIMIT)
            if isinstance(found, tuple):
                where = Whereabouts("ready", None, level=level)
                return Located("ready", found[0], where=where, note=SEARCHED_NOTE)
        return Located()
