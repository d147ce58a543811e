"""Why a delayed task waits: retrying (a failed attempt waits for its next one), scheduled (an `eta` not reached) or
held (flow control holds it back: a rate limit, a concurrency limit or an open circuit of one flow key).

Every move that puts a task in the delayed set says why in the envelope it writes there (`Task.waiting_for`: a retry
in core/outcomes.py, a flow deferral in core/fetching.py; nothing for an `eta`), just before the envelope's tail. So
the split costs the delivery path nothing: no counter to keep in step across the scripts and the client that add to
and take from the delayed set (settle, enqueue, the client's own ZADD, promote, cancel, the dashboard's deletes), and
nothing to drift when one of them forgets. The price is paid on reading, and bounded: delayed_kinds.lua looks at the
last bytes of at most CLASSIFY_LIMIT envelopes, soonest due first, inside Redis (no envelope crosses the network). A
delayed set larger than that is split in the proportions of the part looked at (`DelayedSplit.exact` is then False);
the total (`delayed`) is always exact. A page of one kind looks through at most PAGE_SCAN_LIMIT, and stops once full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts

#: The three kinds of delayed task, in display order.
WAITING_KINDS = ("retrying", "scheduled", "held")

#: Most delayed envelopes classified per count (soonest due first): a count is made for every queue page, API
#: answer and `/metrics` scrape, so it is kept to a few milliseconds of Redis time.
CLASSIFY_LIMIT = 2_000

#: Most delayed envelopes a page of one kind looks through (it stops once the page is full).
PAGE_SCAN_LIMIT = 10_000

#: What each flow-control reason of `waiting_for` is called where it is shown.
HELD_BY = {"rate": "rate limit", "concurrency": "concurrency limit", "circuit": "open circuit"}


def waiting_kind(envelope: Any) -> str:
    """The kind of a decoded delayed envelope, by the rule delayed_kinds.lua applies to the bytes."""
    if not isinstance(envelope, dict):
        return "scheduled"
    marker = envelope.get("waiting_for")
    if isinstance(marker, dict) and isinstance(marker.get("reason"), str):
        return "retrying" if marker["reason"] == "retry" else "held"
    return "retrying" if "last_error" in envelope else "scheduled"


def held_by(envelope: Any) -> dict[str, Any] | None:
    """{"reason", "limit", "key", "until"} of a task flow control holds back, None for any other envelope. The key
    is the flow key (for HTTP tasks, the host); `until` is when its hold ends (Unix s)."""
    marker = envelope.get("waiting_for") if isinstance(envelope, dict) else None
    if not isinstance(marker, dict) or marker.get("reason") in (None, "retry"):
        return None
    reason = str(marker.get("reason"))
    until = marker.get("until")
    return {
        "reason": reason,
        "limit": HELD_BY.get(reason, reason),
        "key": str(marker.get("key", ""))[:256],
        "until": until if isinstance(until, (int, float)) else None,
    }


@dataclass(frozen=True, slots=True)
class DelayedSplit:
    """The delayed set of one queue by kind. `exact`: every member was looked at; else the members past
    CLASSIFY_LIMIT were split in the proportions of those looked at (their sum is still `delayed`)."""

    retrying: int
    scheduled: int
    held: int
    exact: bool


def _split(replies: list[Any], total: int) -> DelayedSplit:
    retrying, scheduled, held, seen = (int(value) for value in replies)
    if seen >= total or seen == 0:
        return DelayedSplit(retrying, scheduled, held, True)
    scale = total / seen
    retrying, held = round(retrying * scale), round(held * scale)
    return DelayedSplit(retrying, max(0, total - retrying - held), held, False)


class DelayedKinds:
    """The bounded reads of delayed_kinds.lua on one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self._script = scripts(redis)["delayed_kinds"]

    async def count(self, k: QueueKeys, total: int) -> DelayedSplit:
        """The split of a delayed set of `total` members (its ZCARD, read by the caller)."""
        return _split(await self._script(keys=[k.delayed], args=["count", CLASSIFY_LIMIT]), total)

    async def page(self, k: QueueKeys, kind: str, offset: int, limit: int) -> list[tuple[bytes, float]]:
        """The delayed members of `kind` from `offset` (at most `limit`), soonest due first, with their due times
        (ms), found among the PAGE_SCAN_LIMIT soonest due."""
        items, _matched, _seen = await self._script(
            keys=[k.delayed], args=["page", PAGE_SCAN_LIMIT, kind, max(0, offset), max(1, limit)]
        )
        return [(bytes(items[j]), float(items[j + 1])) for j in range(0, len(items), 2)]
