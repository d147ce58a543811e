"""What the inspection API answers: frozen, JSON-ready records of queues, workers, tasks and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from gopherq.core.events import Event
from gopherq.core.tracecontext import is_traceparent


class _ToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=_ToDict)

#: Outcome names of the counters, in display order. processed = succeeded + failed; failed = retried + dead.
OUTCOMES = ("processed", "succeeded", "failed", "retried", "dead")


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One priority level's ready list: the tasks in it and how long the oldest has been ready (seconds)."""

    ready: int
    latency: float

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


#: Shown beside orphaned tasks, wherever they are shown.
ORPHANED_NOTE = "recovered when a worker of this queue runs"


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue at a glance.

    `ready`: tasks waiting at every priority level (`levels` splits them); `latency`: seconds the oldest of them has
    been ready, counted from when it became ready (see core/inspect/readiness.py; 0.0 when none is ready).
    `running`: tasks held by a worker, of which `orphaned` are held by one whose heartbeat is gone (lease expired,
    or moved into a silent worker's list by its blocking fetch): ORPHANED_NOTE, and `staged` are claimed ahead by a
    live one (`worker.prefetch`) and not started yet, as their workers last reported. `oldest_running`: seconds
    since the longest-running task (not a staged one) was claimed, as its worker last reported (0.0 when none).
    `dead_trimmed`: dead letters dropped, oldest first, because the queue held `dead_letter_max`. `totals`: all-time
    outcome counts (see OUTCOMES). `delayed` splits into `retrying` (a failed attempt waits for its next),
    `scheduled` (an eta not reached) and `held` (flow control holds it back): see core/inspect/waiting.py;
    `delayed_exact` is False when a delayed set over CLASSIFY_LIMIT was split in the proportions of its soonest-due
    part.
    """

    name: str
    ready: int
    delayed: int
    running: int
    dead: int
    latency: float
    paused: bool
    workers: int
    totals: dict[str, int]
    levels: dict[str, LevelInfo] = field(default_factory=dict)
    orphaned: int = 0
    staged: int = 0
    oldest_running: float = 0.0
    dead_trimmed: int = 0
    retrying: int = 0
    scheduled: int = 0
    held: int = 0
    delayed_exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        out["levels"] = {name: level.to_dict() for name, level in self.levels.items()}
        return out


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task a worker holds: its attempt token and when the worker claimed it (Unix seconds, None if unknown).
    `staged`: claimed ahead (`worker.prefetch`), waiting for a free slot: held, not running yet."""

    task_id: str | None
    token: str
    since: float | None
    staged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as it last described itself. `alive`: its heartbeat is younger than `worker.lease_timeout` (the
    reaper's test). `running` lists at most 1000 of the tasks it holds, the running ones first, then those it
    claimed ahead (`staged`); `running_count` and `staged_count` count each exactly."""

    id: str
    host: str | None
    pid: int | None
    queue: str
    started: float | None
    concurrency: int | None
    last_heartbeat: float
    alive: bool
    running: list[RunningTask]
    stats: dict[str, int]
    running_count: int = 0
    staged_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        out["running"] = [task.to_dict() for task in self.running]
        return out


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One line of a ready, delayed or running page (`state` "orphaned" on the running page: ORPHANED_NOTE).
    `enqueued_at` (ready: when it became ready), `due_at` (delayed) or `since` (running: when claimed) is set,
    whichever applies; `summary` is short text such as "GET https://host/path" (masked), taken from the
    payload's method- and url-like fields, else the type. A delayed line says why it waits: `waiting` is
    retrying, scheduled or held (core/inspect/waiting.py), `held` names the limit, flow key and end of a hold,
    `last_error` is a retry's last error (one line, masked). `fair_key`: the fair key of a ready task (docs/tasks.md
    "Fair keys": waiting in its key's list, or pushed raw naming one), None for one without."""

    id: str | None
    type: str | None
    state: str
    attempt: int
    max_attempts: int | None
    summary: str
    enqueued_at: float | None = None
    due_at: float | None = None
    since: float | None = None
    worker: str | None = None
    token: str | None = None
    waiting: str | None = None
    held: dict[str, Any] | None = None
    last_error: str | None = None
    fair_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    """One line of the dead-letter page; `entry_id` is what `dlq requeue` / `DeadLetters.requeue` take."""

    entry_id: str
    task_id: str | None
    reason: str
    error: str
    died_at: float | None
    attempts: int
    #: The host of the task's URL-like field and the status code its error recorded, when it has them (masked).
    host: str | None = None
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An event read back from the queue's stream (`id` is the stream entry id), masked."""

    id: str
    name: str
    timestamp: float | None
    task_id: str | None
    worker: str | None
    queue: str | None
    data: dict[str, Any]
    task_type: str | None = None
    attempt: int | None = None
    duration: float | None = None
    error: dict[str, Any] | None = None
    trace_id: str | None = None
    #: What was cut of `data` and `error` to show the event, by path (see core/bounds.py); left out when empty.
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        if not self.truncated:
            del out["truncated"]
        return out

    def to_text(self) -> str:
        """One line, as the logging sink writes the same event (`Event.to_text`)."""
        fields = (self.worker, self.queue, self.task_id, self.task_type, self.attempt, self.duration, self.error)
        return Event(self.name, self.timestamp or 0.0, *fields, self.data, self.trace_id).to_text()


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Everything known about one task. `state`: ready, delayed, running, orphaned (held by a worker whose
    heartbeat is gone: ORPHANED_NOTE), succeeded, dead, cancelled or unknown. `worker`/`since` are set while it
    runs (once its worker's heartbeat has listed it). `type` is the task's type from whichever record has it
    (envelope, result record, dead letter, events): a finished task keeps no envelope, and its type is not `http`
    just because that is the envelope's default."""

    id: str
    queue: str
    state: str
    envelope: dict[str, Any] | None
    worker: str | None
    since: float | None
    result: dict[str, Any] | None
    dead_letter: dict[str, Any] | None
    events: list[StreamEvent] = field(default_factory=list)
    type: str | None = None
    #: What was cut to show it, by path (`envelope.body`, `dead_letter.raw`, ...): see core/bounds.py.
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Where a live task is, from its whereabouts record (core/whereabouts.py, `Whereabouts.to_dict`): `place`, and
    #: `level`/`ready_since`/`how` when ready, `reason`/`due_at`/`detail` when delayed, `worker`/`token`/
    #: `claimed_at` when running. None once it has ended (its result record says how).
    where: dict[str, Any] | None = None
    #: How it was found when not by its record, or why its envelope is not shown (a ready task deep in a backlog).
    note: str | None = None

    @property
    def call(self) -> dict[str, Any] | None:
        """What the task called, as its executor described it (masked): from its result record, else its dead
        letter; None when neither keeps one (an executor that describes nothing, or a record of an older version)."""
        for record in (self.result, self.dead_letter):
            found = record.get("call") if record else None
            if isinstance(found, dict):
                return found
        return None

    @property
    def trace_id(self) -> str | None:
        """The trace the task belongs to: from its result record, its dead letter, or its envelope's `trace`."""
        for record in (self.result, self.dead_letter):
            found = record.get("trace_id") if record else None
            if isinstance(found, str):
                return found
        trace = (self.envelope or {}).get("trace")
        parent = trace.get("traceparent") if isinstance(trace, dict) else None
        return parent[3:35] if isinstance(parent, str) and is_traceparent(parent) else None

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        out["events"] = [event.to_dict() for event in self.events]
        out["call"] = self.call
        return out


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """One dead letter as a page or an answer shows it. `entry`: its fields but the stored bytes (reason, error,
    attempts, `raw_size` and `raw_sha256` when only a prefix was kept, ...); `task`: the stored bytes parsed, when
    they are JSON, else `raw_text`: them as text. All masked, each field bounded; `truncated` says what was cut,
    by path (see core/bounds.py). The stored bytes in full, masked, are `Inspector.dead_letter_raw`."""

    id: str
    queue: str
    entry: dict[str, Any]
    task: Any
    raw_text: str | None
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A slice of a longer list: `items` from `offset` (at most `limit`), of `total`. A filtered page (dead letters
    chosen by a filter, core/inspect/selection.py) is one bounded window: `total` counts its matches, and
    `next_cursor` is where the next window starts (None: no further one). A ready page's `next_cursor` is a string
    (core/inspect/ready_list.py): the way on past many fair keys, at a bounded cost."""

    items: list[T]
    total: int
    offset: int
    limit: int
    next_cursor: float | str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "items": [item.to_dict() for item in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }
        if self.next_cursor is not None:
            out["next_cursor"] = self.next_cursor
        return out


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """Outcomes settled during one minute, or one hour (`minute`: Unix seconds of its start), and the attempts'
    timings: `failed` counts attempts that failed (retried plus dead-lettered), not tasks in the dead-letter queue;
    `duration` and `wait` are the mean attempt duration and time in queue (seconds; None without attempts)."""

    minute: int
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    duration: float | None = None
    wait: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)
