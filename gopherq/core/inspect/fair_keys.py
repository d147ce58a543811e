"""What each fair key of a queue looks like now: backlog per level, running tasks, weight and limits (and where they
come from), why it is parked, and how long its oldest task has waited. Read by `gopherq keys`, the Keys page, the
`/v1` API and the metrics, all through `Inspector.fair_keys` (core/inspect/queues.py).

The keys are found without a scan, in order: the scripts keep a sorted set of every key with at least
`BACKLOG_LISTED` waiting tasks scored by its backlog (fair_base.lua), so the `limit` most backlogged are read in
O(log K + limit) however many keys there are (a `/metrics` scrape reads 20 of 100,000 keys, not 100,000). When
fewer keys have that many, the room left goes to the keys next in their levels' turns (each has fewer waiting
than any key of the set; at most the room left of each level are read, so with more such keys than that, which of
them are shown is their turn order's choice, not their backlogs'), then to keys with settings or parked but
nothing waiting. Whichever keys are shown, their backlogs are read from their lists. Running tasks are counted
from the in-flight record (bounded by the workers' concurrency).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from gopherq.core import codec
from gopherq.core.errors import TaskRejected
from gopherq.core.fairspec import KeyLimits
from gopherq.core.inspect.reading import text
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.sections import FairSettings
from gopherq.core.task import task_from_dict

#: Most keys taken from the parked set and from the settings to fill a listing that has room after the keys with
#: tasks waiting.
FOUND_MAX = 10_000

#: Level letters of the scripts, by the level names the other faces use.
LEVELS = {"high": "h", "default": "d", "low": "l"}


@dataclass(slots=True)
class KeyInfo:
    """One fair key of one queue, as the faces show it."""

    key: str
    backlog: int
    levels: dict[str, int]
    running: int
    limits: KeyLimits
    source: str
    #: Why the key is not taking turns now: 'paused', 'limit' (running tasks at its limit, or ordered with one
    #: in flight), 'rate' / 'retry' (until `parked_until`), or None.
    parked: str | None = None
    parked_until: float | None = None
    #: Seconds the oldest waiting task of the key has been ready (None: nothing waiting, or it cannot tell).
    oldest_wait: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "backlog": self.backlog,
            "levels": self.levels,
            "running": self.running,
            **self.limits.to_dict(),
            "source": self.source,
            "parked": self.parked,
            "parked_until": self.parked_until,
            "oldest_wait": self.oldest_wait,
        }


async def running_by_key(redis: RedisClient, keys: QueueKeys) -> dict[str, int]:
    """Tasks in flight per fair key, from the in-flight record (one entry per running task of every worker)."""
    counts: dict[str, int] = {}
    cursor = 0
    while True:
        cursor, batch = await redis.hscan(keys.inflight, cursor, count=1000)
        for raw in batch.values():
            if b'"fair_key"' not in raw:
                continue
            try:
                fair_key = codec.loads(raw).get("fair_key")
            except (codec.JSONDecodeError, AttributeError):
                continue
            if isinstance(fair_key, str):
                counts[fair_key] = counts.get(fair_key, 0) + 1
        if cursor == 0:
            return counts


async def top_keys(redis: RedisClient, keys: QueueKeys, limit: int) -> list[str]:
    """The `limit` most backlogged keys (ties by name), read in order from the backlog set the scripts keep: two
    steps of O(log K + limit), whatever the number of keys K. When fewer keys have `BACKLOG_LISTED` tasks waiting,
    the keys next in each level's turns fill the rest (as many of each level: key_states orders them by their lists'
    lengths and keeps `limit`), then keys with settings or parked but nothing waiting (by name; at most FOUND_MAX
    of each are looked at)."""
    top = await redis.zrevrange(keys.fair_backlog, 0, limit - 1, withscores=True)
    if len(top) == limit:
        # The last place's score may be shared by many keys: those that fit go by name, as the sort below has it.
        last = top[-1][1]
        above = [text(member) for member, score in top if score > last]
        ties = await redis.zrangebyscore(keys.fair_backlog, last, last, start=0, num=limit - len(above))
        return above + [text(member) for member in ties]
    found = [text(member) for member, _ in top]
    room = limit - len(found)
    async with redis.pipeline(transaction=False) as pipe:
        for letter in LEVELS.values():  # (one more: the keyless tasks' turn may be among them)
            pipe.zrange(keys.fair_active(letter), 0, room)
        pipe.zrange(keys.fair_parked, 0, FOUND_MAX - 1)
        pipe.hscan(keys.fair_config, 0, count=FOUND_MAX)
        *turns, parked, (_, configured) = await pipe.execute()
    seen = set(found)
    seen.add("")  # the keyless tasks' turn
    for members in turns:  # up to `room` of each level: key_states keeps the `limit` most backlogged of them all
        for member in members:
            name = text(member)
            if name not in seen:
                seen.add(name)
                found.append(name)
    idle = ({text(member) for member in parked} | {text(name) for name in configured}) - seen
    return found + sorted(idle)[: max(0, limit - len(found))]


async def key_states(
    redis: RedisClient, queue: str, fair: FairSettings, limit: int = 100, only: str | None = None
) -> list[KeyInfo]:
    """The queue's fair keys (or the one named `only`), most backlogged first, at most `limit`: a bounded read
    of those keys only (their lists' lengths and heads, parked state and settings), plus the in-flight record."""
    keys = QueueKeys(queue)
    now = time.time()
    names = [only] if only is not None else await top_keys(redis, keys, limit)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            for letter in LEVELS.values():
                pipe.llen(keys.fair_list(letter, name))
            for letter in LEVELS.values():
                pipe.lindex(keys.fair_list(letter, name), 0)
            pipe.zscore(keys.fair_parked, name)
            pipe.hget(keys.fair_config, name)
        replies = await pipe.execute()
    running = await running_by_key(redis, keys)
    out = []
    for i, name in enumerate(names):
        at = 8 * i
        lengths, heads = replies[at : at + 3], replies[at + 3 : at + 6]
        parked, spec = replies[at + 6], replies[at + 7]
        if spec is not None:
            limits, source = KeyLimits.from_spec(text(spec)), "run-time"
        else:
            limits, source = fair.limits_for(name), "settings"
        info = KeyInfo(
            key=name,
            backlog=sum(lengths),
            levels=dict(zip(LEVELS, lengths, strict=True)),
            running=running.get(name, 0),
            limits=limits,
            source=source,
            oldest_wait=_oldest_wait(heads, now),
        )
        if parked is not None:
            until = float(parked)
            if limits.paused:
                info.parked = "paused"
            elif math.isinf(until):
                info.parked = "limit"
            else:
                info.parked = "rate" if limits.rate else "retry"
                info.parked_until = until / 1000
        out.append(info)
    out.sort(key=lambda info: (-info.backlog, info.key))
    return out[:limit] if only is None else out


def _oldest_wait(heads: list[bytes | None], now: float) -> float | None:
    """How long the longest-waiting of a key's level heads has been ready (seconds)."""
    waits = []
    for raw in heads:
        if raw is None:
            continue
        try:
            since = task_from_dict(codec.loads(raw)).ready_since()
        except (TaskRejected, codec.JSONDecodeError):
            continue
        if since is not None:
            waits.append(max(0.0, now - since))
    return max(waits) if waits else None
