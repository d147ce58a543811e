"""How each flow key's attempts ended over the last hour: counts per label and a latency histogram, per 5 minutes.

The core does not know what the labels mean: a success is 'ok', and an executor that flow-controls its tasks may
name each failure with an optional `flow_label(failure) -> str` (the http executor says '4xx', '429', '5xx' or
'error'); without one, a failure is 'failed'. flow_done.lua counts each attempt in the hash of its key and
five-minute bucket (`QueueKeys.flow_stats`), in the settle-time call flow control makes anyway, so this costs a
flow-controlled attempt two HINCRBYs and nothing at all to a task that is not flow-controlled. A hash holds at most
a dozen label fields and one field per latency bucket, and expires after FLOW_STATS_TTL: 13 small hashes per flow
key in use.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient

#: Upper bounds (seconds) of the latency buckets; an attempt slower than the last falls in one more bucket.
LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: What a label may be (it becomes a hash field); anything else is counted as 'other'.
_LABEL = re.compile(r"^[a-z0-9_]{1,16}\Z")

#: Seconds one statistics hash covers: the last hour is its twelve newest, so the destinations page reads 12 hashes
#: per key (per minute it would read 60: 1,200 commands for 20 keys).
BUCKET = 300

#: Buckets the destinations page sums: the current one and the eleven before (55 to 60 minutes).
HOUR_BUCKETS = 3600 // BUCKET


def label_of(label: str | None) -> str:
    """A label fit to be a hash field: the executor's own when it is short and plain, else 'other'."""
    return label if label is not None and _LABEL.match(label) else "other"


def bucket_of(seconds: float | None) -> str:
    """The index of the latency bucket `seconds` falls in ('' when unknown)."""
    if seconds is None or seconds < 0:
        return ""
    return str(bisect_left(LATENCY_BOUNDS, seconds))


@dataclass(slots=True)
class HourStats:
    """One flow key over the last hour: attempts per label and the latency histogram (bucket index -> count)."""

    labels: dict[str, int] = field(default_factory=dict)
    buckets: dict[int, int] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return sum(self.labels.values())

    def share(self, *labels: str) -> float | None:
        """The fraction of attempts with any of `labels` (None without attempts)."""
        total = self.attempts
        return None if not total else sum(self.labels.get(label, 0) for label in labels) / total

    def quantile(self, q: float) -> float | None:
        """The upper bound (seconds) of the bucket the q-quantile falls in: "at most this"; inf past the last."""
        total = sum(self.buckets.values())
        if not total:
            return None
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= q * total:
                return LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else float("inf")
        return float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "labels": dict(sorted(self.labels.items())), "p95": self.quantile(0.95)}


async def last_hour(redis: RedisClient, queue: str, flow_keys: list[str], now: float | None = None) -> list[HourStats]:
    """The last hour's statistics of each of `flow_keys` on `queue`, in order: one pipelined round trip of
    HOUR_BUCKETS HGETALLs per key (the caller bounds how many keys it asks about)."""
    keys = QueueKeys(queue)
    current = int(time.time() if now is None else now) // BUCKET * BUCKET
    starts = [current - BUCKET * back for back in range(HOUR_BUCKETS)]
    async with redis.pipeline(transaction=False) as pipe:
        for flow_key in flow_keys:
            for start in starts:
                pipe.hgetall(keys.flow_stats(flow_key, start))
        replies = await pipe.execute() if flow_keys else []
    out = []
    for n in range(len(flow_keys)):
        stats = HourStats()
        for reply in replies[n * HOUR_BUCKETS : (n + 1) * HOUR_BUCKETS]:
            for raw_name, raw_value in reply.items():
                name = raw_name.decode("utf-8", "replace")
                kind, _, what = name.partition(":")
                if kind == "n":
                    stats.labels[what] = stats.labels.get(what, 0) + int(raw_value)
                elif kind == "l" and what.isdigit():
                    stats.buckets[int(what)] = stats.buckets.get(int(what), 0) + int(raw_value)
        out.append(stats)
    return out
