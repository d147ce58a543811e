"""How many tasks wait in each priority level's ready list, and for how long: a queue's `ready` and `latency`.

A task's wait counts from when it became ready (`Task.ready_since`): its `created_at` when it was enqueued, its
`eta` when it was enqueued for later, or the `ready_at` GoPherQ stamps when it becomes ready again (a retry or a
flow-control deferral comes due, a dead letter is requeued, a crashed worker's task is recovered). Those stamps are
written by the moves themselves, so reading them costs the delivery path nothing. A task a shutdown puts back goes
back unchanged, as if it had never been claimed: its wait goes on counting from when it first became ready.

One call of heads.lua per queue reads each level's length, its wake markers (not tasks: subtracted) and the tasks at
its head, at most HEAD_TASKS and HEAD_BYTES per level. A level's latency is the age of the oldest task among those:
tasks recovered to the head are younger than the ones behind them, so the first few are compared rather than the
first alone; more than HEAD_TASKS recovered at once can hide an older task behind them until they are taken.

A raw push (`RPUSH Q` without `created_at`) carries no time: GoPherQ cannot know when it arrived. Such a task at
the head of its list is measured from the first inspection (CLI, dashboard, API or `/metrics` scrape) that saw it
there: a lower bound of its wait, exact to the interval between inspections, and 0 on the first. A queue whose raw
tasks move counts each head afresh; one whose head stays put shows that head's age growing, which is what an alert
on a stuck queue needs. Identical raw envelopes following each other look like one head (documented).
"""

from __future__ import annotations

from dataclasses import dataclass

from gopherq.core.errors import TaskRejected
from gopherq.core.inspect.models import LevelInfo
from gopherq.core.inspect.reading import decode, number
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts
from gopherq.core.task import task_from_dict

#: Most tasks, and bytes, read from the head of each level's ready list.
HEAD_TASKS = 50
HEAD_BYTES = 64 * 1024

#: The levels in the order heads.lua takes their lists (the plain list first), and in the order they are shown.
SCRIPT_ORDER = ("default", "high", "low")
SHOWN_ORDER = ("high", "default", "low")


def ready_since(raw: bytes) -> float | None:
    """When the task in `raw` became ready (Unix seconds), None when its envelope does not say (or is not one)."""
    obj = decode(raw)
    if not isinstance(obj, dict):
        return None
    try:
        return task_from_dict(obj).ready_since()
    except TaskRejected:
        return None


@dataclass(frozen=True, slots=True)
class Levels:
    """One reading of a queue's ready lists: per level, its tasks and the oldest of them."""

    levels: dict[str, LevelInfo]

    @property
    def ready(self) -> int:
        return sum(level.ready for level in self.levels.values())

    @property
    def latency(self) -> float:
        """The wait of the oldest ready task across every level (0.0 when none is ready)."""
        return max((level.latency for level in self.levels.values()), default=0.0)


class ReadyLevels:
    """Reads the ready lists of queues on one Redis (see the module docstring)."""

    def __init__(self, redis: RedisClient) -> None:
        self._heads = scripts(redis)["heads"]

    async def read(self, keys: QueueKeys, now: float) -> Levels:
        replies = await self._heads(
            keys=[*keys.ready_lists, keys.heads], args=[int(now * 1000), HEAD_TASKS, HEAD_BYTES]
        )
        levels = {}
        for name, reply in zip(SCRIPT_ORDER, replies, strict=True):
            length, markers, seen, *heads = reply
            oldest = [since for since in map(ready_since, heads) if since is not None]
            first_seen = number(seen)
            if first_seen is not None:
                oldest.append(first_seen / 1000)
            latency = max(0.0, now - min(oldest)) if oldest else 0.0
            levels[name] = LevelInfo(ready=max(0, int(length) - int(markers)), latency=latency)
        return Levels({name: levels[name] for name in SHOWN_ORDER})
