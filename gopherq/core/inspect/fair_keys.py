"""What each fair key of a queue looks like now: backlog per level, running tasks, weight and limits (and where they
come from), why it is parked, and how long its oldest task has waited. Read by `gopherq keys`, the Keys page, the
`/v1` API and the metrics, all through `Inspector.fair_keys` (core/inspect/queues.py).

The keys are found without a scan: the levels' active sets, the parked set and the run-time settings name every
key with waiting tasks or settings; running tasks are counted from the in-flight record (bounded by the workers'
concurrency). At most `limit` keys are read, the most backlogged first among those found (a queue with more
active keys than `FOUND_MAX` is read from the first `FOUND_MAX` of each set).
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

#: Most keys taken from each of the active sets, the parked set and the settings when listing a queue's keys.
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


async def key_states(
    redis: RedisClient, queue: str, fair: FairSettings, limit: int = 100, only: str | None = None
) -> list[KeyInfo]:
    """The queue's fair keys (or the one named `only`), most backlogged first, at most `limit`."""
    keys = QueueKeys(queue)
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for letter in LEVELS.values():
            pipe.zrange(keys.fair_active(letter), 0, FOUND_MAX - 1)
        pipe.zrange(keys.fair_parked, 0, FOUND_MAX - 1, withscores=True)
        pipe.hgetall(keys.fair_config)
        *active, parked_pairs, config = await pipe.execute()
    parked = {text(member): float(score) for member, score in parked_pairs}
    configured = {text(name): text(spec) for name, spec in config.items()}
    names = {text(member) for members in active for member in members} | set(parked) | set(configured)
    names.discard("")  # the keyless tasks' turn
    if only is not None:
        names = {only}
    ordered = sorted(names)
    async with redis.pipeline(transaction=False) as pipe:
        for name in ordered:
            for letter in LEVELS.values():
                pipe.llen(keys.fair_list(letter, name))
        lengths = await pipe.execute()
    running = await running_by_key(redis, keys)
    backlog = {name: lengths[3 * i : 3 * i + 3] for i, name in enumerate(ordered)}
    chosen = sorted(ordered, key=lambda name: (-sum(backlog[name]), name))[:limit]
    async with redis.pipeline(transaction=False) as pipe:
        for name in chosen:
            for letter in LEVELS.values():
                pipe.lindex(keys.fair_list(letter, name), 0)
        heads = await pipe.execute()
    out = []
    for i, name in enumerate(chosen):
        spec = configured.get(name)
        if spec is not None:
            limits, source = KeyLimits.from_spec(spec), "run-time"
        else:
            limits, source = fair.limits_for(name), "settings"
        info = KeyInfo(
            key=name,
            backlog=sum(backlog[name]),
            levels=dict(zip(LEVELS, backlog[name], strict=True)),
            running=running.get(name, 0),
            limits=limits,
            source=source,
            oldest_wait=_oldest_wait(heads[3 * i : 3 * i + 3], now),
        )
        if name in parked:
            until = parked[name]
            if limits.paused:
                info.parked = "paused"
            elif math.isinf(until):
                info.parked = "limit"
            else:
                info.parked = "rate" if limits.rate else "retry"
                info.parked_until = until / 1000
        out.append(info)
    return out


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
