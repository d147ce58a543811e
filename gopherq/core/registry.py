"""The registry of queue names: queues are noted where they come into use, so inspection lists every queue that
has anything (even one no worker serves) without scanning the keyspace.

Producers (the client, hence the HTTP API and the CLI; `dlq requeue`), workers (their own queue and the queues
their schedules feed) and `pause` note names in one sorted set, `gopherq:queues`, scored by when each was last
noted (ms). A process notes a name at most once per NOTE_INTERVAL, so the registry costs nothing per task: a
producer's note rides in the pipeline of its pushes. Noting is best-effort: a Redis user whose key patterns do not
reach the registry (see docs/deployment.md#acl) works exactly as before, and its queue is listed when it is the
configured one or is named.

The registry key carries no queue's hash tag: in Redis Cluster it lives in a slot of its own, read and written only
by these admin calls, never by a per-queue script. A queue that only ever received raw `RPUSH`es and never had a
worker is unknown to it; `discover` (`gopherq queues --scan`) finds such leftovers of GoPherQ keys with one SCAN
of the whole keyspace, on request only.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gopherq.core.errors import ConfigError
from gopherq.core.keys import QUEUE_REGISTRY, QueueKeys
from gopherq.core.redis_client import RedisClient

log = logging.getLogger(__name__)

#: Seconds between two notes of the same name by one process.
NOTE_INTERVAL = 60.0
#: Most names one listing reads from the registry (the first, by name).
LIST_MAX = 10_000
#: A name whose queue has nothing left in Redis is dropped from the registry once it was last noted this long ago
#: (seconds); until then it is listed, empty.
FORGET_AFTER = 3600.0

_TAGGED = re.compile(rb"^gopherq:\{(?P<queue>[^{}]+)\}:")

#: Drop the given names whose score is still below ARGV[1]: one a producer noted meanwhile stays.
_FORGET = """
local gone = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < tonumber(ARGV[1]) then gone = gone + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return gone
"""


def presence_keys(keys: QueueKeys) -> list[str]:
    """The keys whose existence means a queue has something: tasks ready at any level, delayed, running or dead,
    a pause flag, workers, schedule state, counters or events (all in the queue's slot: one EXISTS asks them all)."""
    return [
        *keys.ready_lists,
        keys.delayed,
        keys.inflight,
        keys.dead_index,
        keys.paused,
        keys.workers,
        keys.schedules,
        keys.stats,
        keys.events,
    ]


class QueueRegistry:
    """Notes and lists queue names on one Redis (see the module docstring)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._noted: dict[str, float] = {}
        self._forget = redis.register_script(_FORGET)

    def due(self, queues: Iterable[str]) -> list[str]:
        """The names among `queues` this process has not noted within NOTE_INTERVAL; marked as noted now."""
        now = time.monotonic()
        names = [name for name in set(queues) if now - self._noted.get(name, -math.inf) >= NOTE_INTERVAL]
        for name in names:
            self._noted[name] = now
        return names

    def stage(self, pipe: Any, queues: Iterable[str]) -> bool:
        """Queue a note of the names that are due on `pipe` (no round trip of its own); True when one was queued:
        its reply is the pipeline's last, and an error in it (say, NOPERM) is the caller's to ignore."""
        names = self.due(queues)
        if names:
            stamp = int(time.time() * 1000)
            pipe.zadd(QUEUE_REGISTRY, {name: stamp for name in names})
        return bool(names)

    async def note(self, *queues: str) -> None:
        """Note the names that are due, in a call of its own; a Redis error is logged (debug) and ignored."""
        names = self.due(queues)
        if not names:
            return
        try:
            await self.redis.zadd(QUEUE_REGISTRY, {name: int(time.time() * 1000) for name in names})
        except RedisError as exc:
            log.debug("queue registry: cannot note %s: %s", ", ".join(sorted(names)), exc)

    async def listed(self) -> list[str]:
        """The registered names whose queue has something in Redis, or was noted within FORGET_AFTER, sorted. The
        others are dropped from the registry (best-effort: a read-only user just lists). A user that may not read
        the registry gets none."""
        try:
            entries = await self.redis.zrange(QUEUE_REGISTRY, 0, LIST_MAX - 1, withscores=True)
        except ResponseError as exc:  # e.g. NOPERM: a user restricted to its queue's keys lists what it is told
            log.debug("queue registry: cannot read it: %s", exc)
            return []
        if not entries:
            return []
        names = [(name.decode() if isinstance(name, bytes) else str(name), float(score)) for name, score in entries]
        valid = []
        for name, score in names:
            try:
                valid.append((QueueKeys(name), score))
            except ConfigError:  # not a queue name (written by hand): skipped, never built into key names
                continue
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, _ in valid:
                pipe.exists(*presence_keys(keys))
            present = await pipe.execute(raise_on_error=False)  # a queue this user may not read is not listed
        cutoff = (time.time() - FORGET_AFTER) * 1000
        out, stale = [], []
        for (keys, score), count in zip(valid, present, strict=True):
            if isinstance(count, Exception):
                continue
            if count or score >= cutoff:
                out.append(keys.queue)
            else:
                stale.append(keys.queue)
        if stale:
            try:
                await self._forget(keys=[QUEUE_REGISTRY], args=[int(cutoff), *stale])
            except RedisError as exc:
                log.debug("queue registry: cannot drop %d empty queue names: %s", len(stale), exc)
        return sorted(out)

    async def discover(self) -> list[str]:
        """Scan the whole keyspace once for keys of GoPherQ queues (any kind), note every queue found, and return
        the names that were not registered. Costs one SCAN of every key: an admin action, never run on its own."""
        known = {
            name.decode() if isinstance(name, bytes) else str(name)
            for name in await self.redis.zrange(QUEUE_REGISTRY, 0, -1)
        }
        found: set[str] = set()
        async for key in self.redis.scan_iter(match="gopherq:{*}:*", count=1000):
            match = _TAGGED.match(key if isinstance(key, bytes) else str(key).encode())
            if match:
                found.add(match["queue"].decode("utf-8", "replace"))
        new = []
        for name in sorted(found - known):
            try:
                QueueKeys(name)
            except ConfigError:
                continue
            new.append(name)
        if new:
            await self.redis.zadd(QUEUE_REGISTRY, {name: int(time.time() * 1000) for name in new})
        return new
