"""The inspection layer: one query for every face (CLI, client, dashboard, API) over a queue's Redis state."""

from __future__ import annotations

from gopherq.core.inspect.explain import Explanation
from gopherq.core.inspect.inspector import Inspector
from gopherq.core.inspect.lookup import SEARCH_LIMIT
from gopherq.core.inspect.models import (
    ORPHANED_NOTE,
    OUTCOMES,
    DeadLetterInfo,
    DeadLetterSummary,
    LevelInfo,
    MinuteCounts,
    Page,
    QueueInfo,
    RunningTask,
    StreamEvent,
    TaskInfo,
    TaskSummary,
    WorkerInfo,
)
from gopherq.core.inspect.queues import totals_from_stats
from gopherq.core.inspect.stream import TIMELINE_READ
from gopherq.core.inspect.waiting import CLASSIFY_LIMIT, WAITING_KINDS

__all__ = [
    "CLASSIFY_LIMIT",
    "ORPHANED_NOTE",
    "OUTCOMES",
    "SEARCH_LIMIT",
    "TIMELINE_READ",
    "WAITING_KINDS",
    "DeadLetterInfo",
    "DeadLetterSummary",
    "Explanation",
    "Inspector",
    "LevelInfo",
    "MinuteCounts",
    "Page",
    "QueueInfo",
    "RunningTask",
    "StreamEvent",
    "TaskInfo",
    "TaskSummary",
    "WorkerInfo",
    "totals_from_stats",
]
