"""The task envelope, its status and its result record: pure data, no I/O.

The envelope is a flat JSON object: control fields (below) plus the executor's own fields (for `http`: method,
url, headers/header, body). The seed's format, `{"id":..., "method":..., "url":..., "header":{...}, "body":""}`,
is a valid envelope of type `http`. Control fields are checked by hand here because this runs once per task on
the worker's hot path; the executor's fields are validated by the executor's pydantic model.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gopherq.core import codec
from gopherq.core.errors import ConfigError, TaskRejected
from gopherq.core.flows.members import check_member
from gopherq.core.jsontext import parse_json
from gopherq.core.keys import validate_queue_name
from gopherq.core.tracecontext import check_trace

DEFAULT_TYPE = "http"

#: Control fields of the envelope; every other field belongs to the executor.
CONTROL_FIELDS = frozenset(
    {
        "id",
        "type",
        "queue",
        "attempt",
        "max_attempts",
        "backoff",
        "timeout",
        "deadline",
        "expires_at",
        "eta",
        "created_at",
        "ready_at",
        "recoveries",
        "last_error",
        "flow_slot",
        "waiting_for",
        "priority",
        "unique_key",
        "unique_for",
        "trace",
        "flow_member",
        "fair_key",
    }
)

#: The control fields GoPherQ itself keeps on a task as it moves (retries, recoveries, flow control). No producer
#: entry point accepts them (see `task_from_dict(producer=True)`); a worker reads them from whatever it fetches,
#: because GoPherQ's own moves of a task (a retry, a recovery, a deferral) are moves of bytes that carry them.
RESERVED_FIELDS = frozenset(
    {"attempt", "recoveries", "last_error", "ready_at", "flow_slot", "waiting_for", "flow_member"}
)

#: Longest id, uniqueness key or fair key, in characters.
MAX_NAME_CHARS = 200

#: Characters no id or uniqueness key may contain: the C0 controls, DEL, the C1 controls and the Unicode line and
#: paragraph separators. Each of them can end or forge a log line, and none can be sent in an HTTP header. Any
#: other character is accepted (a non-ASCII id is delivered like any other).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: Priority levels, most urgent first. `default` is the plain ready list (what a raw `RPUSH Q` feeds).
PRIORITIES = ("high", "default", "low")


class TaskStatus(str, enum.Enum):
    """Where a task stands; stored in its result record. One word per outcome, the same in records, events, the
    CLI, the API and the dashboard: an *attempt* fails (`task.failed`, then a retry or not), a *task* that ends
    without success is `dead`: it is in the dead-letter queue, and the record's `dead_reason` says why."""

    #: An attempt failed and another is scheduled (`retry_at`); the only status that is not final.
    RETRYING = "retrying"
    #: An attempt succeeded; `result` is what the executor returned.
    SUCCEEDED = "succeeded"
    #: The task ended without success and is in the dead-letter queue; `dead_reason` says why (a reason code),
    #: `error` what the last attempt said. Records written by earlier versions say "failed": they read as this.
    DEAD = "dead"
    #: The task was cancelled on request.
    CANCELLED = "cancelled"
    #: The old name of DEAD, kept so that code written against it still works.
    FAILED = "dead"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        """Records written before the status was renamed say "failed": they read as DEAD."""
        return cls.DEAD if value == "failed" else None

    @property
    def final(self) -> bool:
        return self is not TaskStatus.RETRYING


@dataclass(slots=True)
class RetryBackoff:
    """Bounds of a task's exponential backoff (with full jitter) between attempts, in seconds. (Not the
    `resilience.Backoff` a worker waits with between Redis calls.)"""

    min: float
    max: float


@dataclass(slots=True)
class Task:
    """One unit of work as it travels through Redis.

    `fields` holds the executor's fields exactly as received; `payload` is filled by the worker with the
    executor's validated payload model before `execute` is called.
    """

    id: str
    type: str = DEFAULT_TYPE
    fields: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    attempt: int = 1
    max_attempts: int | None = None
    backoff: RetryBackoff | None = None
    timeout: float | None = None
    deadline: float | None = None
    eta: float | None = None
    created_at: float | None = None
    #: When the task last became ready again after its creation (a retry or deferral came due, a dead letter was
    #: requeued, a crashed worker's task was recovered): kept by GoPherQ, see ready_since. (A task a shutdown puts
    #: back is put back unchanged, as if never claimed: it has been ready since it first was.)
    ready_at: float | None = None
    recoveries: int = 0
    last_error: dict[str, Any] | None = None
    #: When flow control reserved a rate slot for this task and deferred it to that slot (Unix ms; core/flow.py).
    flow_slot: int | None = None
    #: Why the task sits in the delayed set, when GoPherQ put it there: {"reason": "retry"} for a retry, or
    #: {"reason": "rate" | "concurrency" | "circuit", "key": <flow key>, "until": <Unix s>} for flow control
    #: holding it back; None for a task scheduled by `eta` (see core/inspect/waiting.py). Written just before
    #: `ready_at`, so the inspection layer classifies a delayed envelope by reading its last few hundred bytes.
    waiting_for: dict[str, Any] | None = None
    #: "high" or "low"; None is the default level.
    priority: str | None = None
    #: While a task with this key is ready, delayed or running, an identical enqueue is refused.
    unique_key: str | None = None
    #: How long (s) the uniqueness lock lasts at most; it is freed sooner when the task ends.
    unique_for: float | None = None
    #: W3C trace context of the producer (`traceparent`, `tracestate`, `baggage`): kept, never read by the core
    #: beyond its trace id (see core/tracecontext.py); filled and read by the `otel` plugin.
    trace: dict[str, str] | None = None
    #: The flow (a DAG of tasks, core/flows) this task is a member of: {"flow": id, "node": name, "parents": [...]
    #: or a count}. Written only by the flow machinery (a reserved field), checked by core/flows/members.py.
    flow_member: dict[str, Any] | None = None
    #: The tenant (customer, API key, host...) the task belongs to: within its priority level, keys with waiting
    #: tasks take turns, and each key may have limits of its own (see core/fair.py). None: no key.
    fair_key: str | None = None
    payload: Any = None
    #: True when the producer sent no id and one was assigned here (the worker then records it in Redis).
    id_assigned: bool = False
    #: The encoded envelope, kept by the client that built and validated the task so it is not encoded twice.
    #: A task is not meant to be changed after it is built; `encode()` always encodes afresh.
    envelope: bytes | None = field(default=None, repr=False, compare=False)

    def ready_since(self) -> float | None:
        """When the task became ready to run (Unix seconds), None when its envelope cannot tell (a raw push
        without `created_at`): the latest of `created_at`, `eta` and `ready_at`, since each move that makes a task
        ready again stamps a later time. Queue latency and the time-in-queue histogram both count from here."""
        since = self.created_at
        for stamp in (self.eta, self.ready_at):
            if stamp is not None and (since is None or stamp > since):
                since = stamp
        return since

    def to_wire(self) -> dict[str, Any]:
        """The envelope as a JSON-ready dict. `ready_at` then `recoveries` come last: the reaper's Lua rewrites that
        tail in place when it recovers a task (see levels.lua)."""
        wire: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.queue is not None:
            wire["queue"] = self.queue
        if self.attempt != 1:
            wire["attempt"] = self.attempt
        if self.max_attempts is not None:
            wire["max_attempts"] = self.max_attempts
        if self.backoff is not None:
            wire["backoff"] = {"min": self.backoff.min, "max": self.backoff.max}
        if self.timeout is not None:
            wire["timeout"] = self.timeout
        if self.deadline is not None:
            wire["deadline"] = self.deadline
        if self.eta is not None:
            wire["eta"] = self.eta
        if self.created_at is not None:
            wire["created_at"] = self.created_at
        if self.last_error is not None:
            wire["last_error"] = self.last_error
        if self.flow_slot is not None:
            wire["flow_slot"] = self.flow_slot
        if self.priority is not None:
            wire["priority"] = self.priority
        if self.unique_key is not None:
            wire["unique_key"] = self.unique_key
        if self.unique_for is not None:
            wire["unique_for"] = self.unique_for
        if self.trace is not None:
            wire["trace"] = self.trace
        if self.flow_member is not None:
            wire["flow_member"] = self.flow_member
        if self.fair_key is not None:
            wire["fair_key"] = self.fair_key
        wire.update(self.fields)
        if self.waiting_for is not None:
            wire["waiting_for"] = self.waiting_for
        if self.ready_at is not None:
            wire["ready_at"] = self.ready_at
        if self.recoveries:
            wire["recoveries"] = self.recoveries
        return wire

    def encode(self) -> bytes:
        return codec.dumps(self.to_wire())


def queue_wait(task: Task, started: float) -> dict[str, Any] | None:
    """What a `task.started` event says of the task's time in the queue: `waited`, seconds from when it became
    ready (Task.ready_since) to this start, and its priority level; None when its envelope cannot tell."""
    since = task.ready_since()
    if since is None:
        return None
    return {"waited": round(max(0.0, started - since), 6), "priority": task.priority or "default"}


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = secrets.token_hex(8)
    _id_counter = itertools.count()


_id_prefix = ""
_id_counter = itertools.count()
_reseed_ids()
os.register_at_fork(after_in_child=_reseed_ids)  # a forked child must not mint its parent's ids


def new_task_id() -> str:
    """A unique task id: 64 random bits per process, then a counter. Far cheaper than a uuid4 (one syscall
    each), which matters when a client builds tens of thousands of tasks per second."""
    return f"{_id_prefix}{next(_id_counter):08x}"


def unique_key_of(task_type: str, fields: dict[str, Any]) -> str:
    """The uniqueness key of a task given `unique_for` without `unique_key`: a digest of its type and fields, so
    two enqueues of the same call are the same key."""
    canonical = json.dumps([task_type, fields], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def name_problem(value: Any) -> str | None:
    """Why `value` cannot be a task id, uniqueness key or fair key, or None when it can: the one rule for them, applied
    wherever an envelope is read (every producer entry point, and the worker for raw pushes)."""
    if type(value) is not str or not value or len(value) > MAX_NAME_CHARS:
        return f"must be a non-empty string of at most {MAX_NAME_CHARS} characters"
    if not value.isprintable() and CONTROL_CHARACTERS.search(value):  # isprintable: the C fast path for most ids
        return "must not contain control characters (C0, DEL, C1, U+2028, U+2029)"
    return None


def _reject(message: str) -> TaskRejected:
    return TaskRejected("schema_invalid", message)


def _int_field(obj: dict[str, Any], name: str, default: Any, minimum: int) -> Any:
    value = obj.get(name, default)
    if value is default:
        return value
    if type(value) is not int or value < minimum:
        raise _reject(f"field '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def _seconds_field(obj: dict[str, Any], name: str, *, positive: bool = False) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) in (int, float):
        if positive and value <= 0:
            raise _reject(f"field '{name}' must be a positive number of seconds, got {value!r}")
        return float(value)
    raise _reject(f"field '{name}' must be a number of seconds, got {value!r}")


def _timestamp_field(obj: dict[str, Any], name: str) -> float | None:
    """A point in time: Unix seconds, or an ISO-8601 string with a time zone."""
    value = obj.get(name)
    if value is None:
        return None
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.timestamp()
    raise _reject(f"field '{name}' must be Unix seconds or an ISO-8601 time with a zone, got {value!r}")


def _backoff_field(obj: dict[str, Any]) -> RetryBackoff | None:
    return parse_backoff(obj.get("backoff"))


#: What `backoff` may be, for error messages.
BACKOFF_SHAPES = "{'min': s, 'max': s} (either may be left out) or [min, max], with 0 <= min <= max"


def parse_backoff(value: Any) -> RetryBackoff | None:
    """The one reading of a task's `backoff`, whatever the entry point (a raw envelope, the client, `@app.task`,
    the HTTP API, a schedule): `{"min": s, "max": s}` (defaults 1 and 300), a `[min, max]` pair (a list, or a
    tuple from Python), or a `RetryBackoff`. None is no backoff of its own. Anything else is refused with a message
    that shows the value as given."""
    if value is None:
        return None
    low: Any = None
    high: Any = None
    if isinstance(value, RetryBackoff):
        low, high = value.min, value.max
    elif isinstance(value, dict) and set(value) <= {"min", "max"}:
        low, high = value.get("min", 1.0), value.get("max", 300.0)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
    if type(low) in (int, float) and type(high) in (int, float) and 0 <= low <= high:
        return RetryBackoff(float(low), float(high))
    raise _reject(f"field 'backoff' must be {BACKOFF_SHAPES}, got {value!r}")


def task_from_dict(obj: Any, *, producer: bool = False) -> Task:
    """Build a Task from a decoded envelope; raises TaskRejected naming the bad field (and carrying the task's
    id and type when those two are usable, so the rejection is recorded under the producer's id).

    This is the one place the envelope's own rules live, for every path: the id rule, each control field's type
    and range, the queue name, and the uniqueness key (`unique_for` without `unique_key` makes it from the type
    and fields). `producer=True` is for the entry points that take a task from a producer (the client,
    `enqueue_raw`, the CLI, the HTTP API, schedules): they also refuse RESERVED_FIELDS. A worker reading what it
    fetched cannot, since a retried or recovered task carries them."""
    if not isinstance(obj, dict):
        raise _reject(f"a task must be a JSON object, got {type(obj).__name__}")
    task_id: Any = obj.get("id")
    assigned = task_id is None
    if assigned:
        task_id = new_task_id()
    elif type(task_id) is int:
        task_id = str(task_id)
    elif type(task_id) is not str or not (0 < len(task_id) <= MAX_NAME_CHARS and task_id.isprintable()):
        problem = name_problem(task_id)  # the common id passes the test above, inline on the worker's hot path
        if problem is not None:  # shown escaped (repr): no id ends or forges a line
            raise _reject(f"field 'id' {problem}, got {task_id!r}")
    task_type = obj.get("type", DEFAULT_TYPE)
    if type(task_type) is not str or not task_type:
        raise TaskRejected(
            "schema_invalid",
            f"field 'type' must be a non-empty string, got {task_type!r}",
            task_id=None if assigned else task_id,
        )
    try:
        return _control_fields(obj, task_id, task_type, assigned, producer)
    except TaskRejected as exc:
        if not assigned:
            exc.task_id, exc.task_type = task_id, task_type
        raise


#: The control fields every envelope may carry without further checks here (task_from_dict has read them).
_IDENTITY_FIELDS = frozenset({"id", "type"})

#: The control fields of a flow member's envelope as its flow's creation writes it (core/flows/spec.py).
_MEMBER_FIELDS = frozenset({"id", "type", "flow_member"})


def _control_fields(obj: dict[str, Any], task_id: str, task_type: str, assigned: bool, producer: bool) -> Task:
    """The task, with the executor's fields split off and the control fields checked. Only the control fields
    the envelope has are looked at: most envelopes carry none beyond `id` (and perhaps `type` and `queue`), and
    this runs for every task a worker takes and every task a client or the HTTP API creates."""
    present = CONTROL_FIELDS.intersection(obj)
    if producer and not RESERVED_FIELDS.isdisjoint(present):
        name = min(RESERVED_FIELDS.intersection(present))
        raise _reject(
            f"field '{name}' is kept by GoPherQ (attempts, recoveries and flow slots): a producer cannot set it"
        )
    fields = dict(obj)
    for name in present:
        del fields[name]
    task = Task(id=task_id, type=task_type, fields=fields, id_assigned=assigned)
    if present == _MEMBER_FIELDS:  # a flow member as its flow wrote it: the one check is its `flow_member`
        task.flow_member = check_member(obj["flow_member"])
    elif not present <= _IDENTITY_FIELDS:
        _set_control_fields(obj, task, present)
    return task


#: Queue names already found valid (at most 1024): a worker reads the same few names on task after task.
_VALID_QUEUES: set[str] = set()


def _set_control_fields(obj: dict[str, Any], task: Task, present: frozenset[str]) -> None:
    """Check the envelope's control fields other than id and type, in a fixed order (the first bad one is the one
    reported), and set them on `task`. Only the fields in `present` (those the envelope has) are read: an absent
    field leaves the task's default, which is what reading it would give (a flow member's envelope, for one, has
    only `flow_member` beyond id and type)."""
    if "queue" in present:
        queue = obj.get("queue")
        if queue is not None and (type(queue) is not str or queue not in _VALID_QUEUES):
            if type(queue) is not str:
                raise _reject(f"field 'queue' must be a string, got {queue!r}")
            try:
                validate_queue_name(queue)
            except ConfigError as exc:
                raise _reject(f"field 'queue': {exc}") from None
            if len(_VALID_QUEUES) < 1024:
                _VALID_QUEUES.add(queue)
        task.queue = queue
    if "last_error" in present:
        last_error = obj.get("last_error")
        if last_error is not None and not isinstance(last_error, dict):
            raise _reject(f"field 'last_error' must be an object, got {last_error!r}")
        task.last_error = last_error
    if "deadline" in present or "expires_at" in present:
        deadline = _timestamp_field(obj, "deadline")
        if deadline is None:
            deadline = _timestamp_field(obj, "expires_at")
        task.deadline = deadline
    if not _TIMING_FIELDS.isdisjoint(present):
        task.attempt = _int_field(obj, "attempt", 1, 1)
        task.max_attempts = _int_field(obj, "max_attempts", None, 1)
        task.backoff = _backoff_field(obj)
        task.timeout = _seconds_field(obj, "timeout", positive=True)
        task.eta = _timestamp_field(obj, "eta")
        task.created_at = _timestamp_field(obj, "created_at")
        task.ready_at = _timestamp_field(obj, "ready_at")
        task.recoveries = _int_field(obj, "recoveries", 0, 0)
        task.flow_slot = _int_field(obj, "flow_slot", None, 0)
    if "waiting_for" in present:
        waiting_for = obj.get("waiting_for")
        if waiting_for is not None and not isinstance(waiting_for, dict):
            raise _reject(f"field 'waiting_for' must be an object, got {waiting_for!r}")
        task.waiting_for = waiting_for
    if "priority" in obj or "unique_key" in obj or "unique_for" in obj or "fair_key" in obj:
        _task_control_fields(obj, task)
    if obj.get("trace") is not None:
        task.trace = check_trace(obj["trace"])
    if "flow_member" in obj:
        task.flow_member = check_member(obj["flow_member"])


#: The attempt and timing fields, read together when an envelope has any of them (most envelopes GoPherQ writes do).
_TIMING_FIELDS = frozenset(
    {"attempt", "max_attempts", "backoff", "timeout", "eta", "created_at", "ready_at", "recoveries", "flow_slot"}
)


def _task_control_fields(obj: dict[str, Any], task: Task) -> None:
    """The task-control fields (priority, uniqueness and the fair key), checked and set on `task`."""
    priority = obj.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise _reject(f"field 'priority' must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    task.priority = None if priority == "default" else priority
    unique_key = obj.get("unique_key")
    if unique_key is not None:
        problem = name_problem(unique_key)
        if problem is not None:
            raise _reject(f"field 'unique_key' {problem}, got {unique_key!r}")
    task.unique_for = _seconds_field(obj, "unique_for", positive=True)
    if unique_key is None and task.unique_for is not None:
        # The uniqueness rule, for every path: the key is a function of the envelope, so a producer entry point
        # (which takes the lock with it) and the worker (which frees the lock with it) always agree.
        unique_key = unique_key_of(task.type, task.fields)
    task.unique_key = unique_key
    fair_key = obj.get("fair_key")
    if fair_key is not None:
        problem = name_problem(fair_key)
        if problem is not None:
            raise _reject(f"field 'fair_key' {problem}, got {fair_key!r}")
    task.fair_key = fair_key


def decode_task(raw: bytes, max_bytes: int, *, producer: bool = False) -> Task:
    """Parse raw bytes from Redis (or from a producer: `producer=True`, see task_from_dict) into a Task, or raise
    TaskRejected with the dead-letter reason."""
    if len(raw) > max_bytes:
        raise TaskRejected("too_large", f"task is {len(raw)} bytes, over max_payload_bytes={max_bytes}")
    return task_from_dict(parse_json(raw), producer=producer)


def now() -> float:
    return time.time()
