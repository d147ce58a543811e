"""The Inspector's queue-level reads: which queues exist, each one's numbers, its throughput, its schedules, and
pausing it. These are the numbers alerts are written on (docs/operations.md#alert-rules), so each is what it says in
the cases that matter: every queue that has anything is listed (the queue registry, core/registry.py), `ready`
counts tasks only, latency counts from when the oldest task became ready (readiness.py), and a task held by a
worker whose heartbeat is gone is counted as orphaned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gopherq.core.fair import FairKeys
from gopherq.core.flow import FlowGate
from gopherq.core.inspect.fair_keys import KeyInfo, key_states
from gopherq.core.inspect.models import LevelInfo, MinuteCounts, QueueInfo
from gopherq.core.inspect.readiness import Levels, ReadyLevels
from gopherq.core.inspect.reading import integer, number, text
from gopherq.core.inspect.waiting import DelayedKinds, DelayedSplit
from gopherq.core.keys import COUNTS_TTL, HOURLY_COUNTS_TTL, QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.registry import QueueRegistry
from gopherq.core.schedules import upcoming
from gopherq.core.settings import Settings

#: The spans the charts show.
SPANS = ("1h", "24h", "7d")

#: Most workers of one queue read for its numbers (the workers set holds live ones and dead ones until reaped).
WORKERS_READ = 1000


def totals_from_stats(stats: dict[str, int]) -> dict[str, int]:
    """All-time outcome counts from the stats hash settle.lua keeps."""
    succeeded, retried, dead = stats.get("acked", 0), stats.get("retried", 0), stats.get("dead_lettered", 0)
    return {
        "processed": succeeded + retried + dead,
        "succeeded": succeeded,
        "failed": retried + dead,
        "retried": retried,
        "dead": dead,
    }


def with_fair_keys(levels: Levels, counts: dict[bytes, bytes]) -> Levels:
    """The levels' ready counts with the tasks waiting in their fair keys' lists added (their waits are on the
    Keys page: the latency here is the plain lists')."""
    if not counts:
        return levels
    extra = {LETTER_LEVELS.get(text(letter), ""): max(0, int(n)) for letter, n in counts.items()}
    return Levels(
        {name: LevelInfo(info.ready + extra.get(name, 0), info.latency) for name, info in levels.levels.items()}
    )


#: Level names by the letters the scripts use.
LETTER_LEVELS = {"h": "high", "d": "default", "l": "low"}


class QueueReader:
    """The Inspector's queue methods (a mixin; needs `redis`, `settings` and `keys`)."""

    redis: RedisClient
    settings: Settings
    _registry: QueueRegistry | None = None
    _levels: ReadyLevels | None = None
    _kinds: DelayedKinds | None = None

    def keys(self, queue: str) -> QueueKeys:
        raise NotImplementedError

    @property
    def registry(self) -> QueueRegistry:
        if self._registry is None:
            self._registry = QueueRegistry(self.redis)
        return self._registry

    @property
    def delayed_kinds(self) -> DelayedKinds:
        if self._kinds is None:
            self._kinds = DelayedKinds(self.redis)
        return self._kinds

    async def queue_names(self) -> list[str]:
        """Every queue that has anything in Redis (see QueueRegistry.listed), the configured queue and the queues
        the configured schedules feed, sorted."""
        names = {self.settings.queue.name, *(s.queue for s in self.settings.schedules if s.queue)}
        names.update(await self.registry.listed())
        return sorted(names)

    async def discover(self) -> list[str]:
        """Register every queue that has GoPherQ keys but is not registered yet (one SCAN of the whole keyspace:
        an admin action, `gopherq queues --scan`); returns their names."""
        return await self.registry.discover()

    async def queue(self, name: str) -> QueueInfo:
        """Sizes, latency (overall and per priority level), pause state, live workers, orphaned tasks, the oldest
        running task's age and totals of one queue, the delayed tasks split by why they wait (a bounded read, see
        core/inspect/waiting.py): four round trips at most, whatever its size."""
        k = self.keys(name)
        now = time.time()
        now_ms = int(now * 1000)
        alive_after = now_ms - int(self.settings.worker.lease_timeout * 1000)
        kinds = self.delayed_kinds
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(k.delayed)
            pipe.hlen(k.inflight)
            pipe.zcard(k.dead_index)
            pipe.exists(k.paused)
            pipe.zrange(k.workers, 0, WORKERS_READ - 1, withscores=True)
            pipe.hgetall(k.stats)
            pipe.zcount(k.leases, "-inf", now_ms)  # leases no heartbeat renewed: their holder is gone
            pipe.hgetall(k.fair_count)  # tasks waiting in fair keys' lists, per level letter
            delayed, running, dead, paused, workers, stats, expired, fair = await pipe.execute()
        split = await kinds.count(k, int(delayed)) if delayed else DelayedSplit(0, 0, 0, True)
        if self._levels is None:
            self._levels = ReadyLevels(self.redis)
        levels = with_fair_keys(await self._levels.read(k, now), fair)
        alive = [text(worker) for worker, score in workers if score >= alive_after]
        silent = [text(worker) for worker, score in workers if score < alive_after]
        stranded, oldest, staged = 0, None, 0
        if workers:
            # Tasks a silent worker's blocking fetch staged but never claimed are held by nobody alive either; and
            # each live worker says when it claimed its longest-running task, and how many it claimed ahead.
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker in silent:
                    pipe.llen(k.processing(worker))
                for worker in alive:
                    pipe.hmget(k.worker_info(worker), ["oldest", "staged_count"])
                replies = await pipe.execute()
            stranded = sum(int(n) for n in replies[: len(silent)])
            reports = replies[len(silent) :]
            claims = [stamp for stamp in (number(report[0]) for report in reports) if stamp is not None]
            oldest = min(claims, default=None)
            staged = sum(integer(report[1]) or 0 for report in reports)
        counters = {text(key): int(value) for key, value in stats.items()}
        return QueueInfo(
            name=name,
            ready=levels.ready,
            delayed=int(delayed),
            running=int(running) + stranded,
            dead=int(dead),
            latency=levels.latency,
            paused=bool(paused),
            workers=len(alive),
            totals=totals_from_stats(counters),
            levels=levels.levels,
            orphaned=min(int(expired), int(running)) + stranded,
            staged=min(staged, int(running)),
            oldest_running=0.0 if oldest is None else max(0.0, now - oldest),
            dead_trimmed=counters.get("dead_trimmed", 0),
            retrying=split.retrying,
            scheduled=split.scheduled,
            held=split.held,
            delayed_exact=split.exact,
        )

    async def queues(self) -> list[QueueInfo]:
        return [await self.queue(name) for name in await self.queue_names()]

    async def flows(self, queue: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The flow-control state of the destinations the queue's tasks called (core/flow.py), newest first."""
        return await FlowGate(self.redis, queue).states(limit)

    async def fair_keys(self, queue: str, limit: int = 100, only: str | None = None) -> list[KeyInfo]:
        """The queue's fair keys, most backlogged first: backlog, running, weight, limits, why parked, oldest
        wait (core/inspect/fair_keys.py); `only`: just that key."""
        return await key_states(self.redis, self.keys(queue).queue, self.settings.fair, limit, only)

    def fair_control(self, queue: str) -> FairKeys:
        """Change a fair key of `queue` at run time (set, pause, resume, reset; core/fair.py)."""
        return FairKeys(self.redis, self.keys(queue).queue, self.settings.fair)

    async def schedules(self, default_queue: str | None = None) -> list[dict[str, Any]]:
        """The configured periodic schedules: rule, last slot enqueued, the slot due after it (`next_slot`: past
        means late, no worker ticked it), next run and when a task of each last succeeded (`last_success`).
        `default_queue`: where a schedule without a queue of its own goes (the configured queue)."""
        return await upcoming(self.settings.schedules, default_queue or self.settings.queue.name, self.redis)

    async def pause(self, queue: str) -> None:
        """Workers stop claiming from the queue within about a second (running tasks finish)."""
        await self.redis.set(self.keys(queue).paused, str(time.time()))
        await self.registry.note(queue)  # a paused queue is listed even when nothing else of it is in Redis yet

    async def resume(self, queue: str) -> None:
        await self.redis.delete(self.keys(queue).paused)

    async def throughput(self, queue: str, minutes: int = 60) -> list[MinuteCounts]:
        """Outcomes per minute over the last `minutes` (at most a day), oldest first, the current minute last;
        minutes with nothing settled are zeros."""
        k = self.keys(queue)
        minutes = max(1, min(minutes, COUNTS_TTL // 60 - 60))
        current = int(time.time()) // 60 * 60
        return await self._buckets([current - 60 * back for back in range(minutes - 1, -1, -1)], k.counts)

    async def hourly(self, queue: str, hours: int = 24) -> list[MinuteCounts]:
        """Outcomes per hour over the last `hours` (at most a week), oldest first, the current hour last (settle.lua
        writes them beside the minute counts and keeps them eight days)."""
        k = self.keys(queue)
        hours = max(1, min(hours, HOURLY_COUNTS_TTL // 3600 - 24))
        current = int(time.time()) // 3600 * 3600
        return await self._buckets([current - 3600 * back for back in range(hours - 1, -1, -1)], k.hourly_counts)

    async def history(self, queue: str, span: str) -> list[MinuteCounts]:
        """The chart series of one of SPANS: '1h' per minute, '24h' and '7d' per hour."""
        if span == "1h":
            return await self.throughput(queue, 60)
        return await self.hourly(queue, 24 if span == "24h" else 168)

    async def _buckets(self, starts: list[int], key: Callable[[int], str]) -> list[MinuteCounts]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(key(start))
            buckets = await pipe.execute()
        out = []
        for start, bucket in zip(starts, buckets, strict=True):
            counts = {text(name): int(value) for name, value in bucket.items()}
            succeeded, retried, dead = counts.get("succeeded", 0), counts.get("retried", 0), counts.get("dead", 0)
            timed, waited = counts.get("timed", 0), counts.get("waited", 0)
            out.append(
                MinuteCounts(
                    start,
                    succeeded + retried + dead,
                    succeeded,
                    retried + dead,
                    retried,
                    dead,
                    counts.get("duration_ms", 0) / 1000 / timed if timed else None,
                    counts.get("wait_ms", 0) / 1000 / waited if waited else None,
                )
            )
        return out
