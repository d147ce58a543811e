"""Every "what happens to this task now" of the worker: an attempt's outcome, a refusal before running, a flow
deferral, a release or a cancellation, each turned into a `Decision` (a `Settlement` plus what to announce).

Pure decisions with no I/O, so the retry policy and the dead-letter format are unit-testable. The words used here
(attempt outcome, decision, settlement, result record, held, token, lease) are in docs/plugins.md's glossary.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gopherq.core import codec
from gopherq.core.bounds import bounded, cut_bytes, cut_text
from gopherq.core.broker import Settlement
from gopherq.core.errors import TaskRejected
from gopherq.core.executor import AttemptOutcome
from gopherq.core.masking import drop_cut_url
from gopherq.core.results import ErrorInfo, TaskResult
from gopherq.core.sections import QueueSettings
from gopherq.core.task import DEFAULT_TYPE, Task, TaskStatus
from gopherq.core.tracecontext import trace_id
from gopherq.core.whereabouts import claimed_id, delayed_record, ready_record

#: Dead-letter reason codes and what each means (documented in docs/guarantees.md).
DEAD_REASONS = {
    "parse_error": "the bytes are not valid JSON (or nest too deeply)",
    "schema_invalid": "valid JSON, but a field is missing or has the wrong type",
    "unknown_type": "no executor is registered for the task's type",
    "too_large": "the task is larger than worker.max_payload_bytes; it was not parsed",
    "retries_exhausted": "every allowed attempt failed",
    "non_retryable": "the executor reported a failure another attempt cannot fix (e.g. HTTP 404)",
    "deadline": "the task's deadline passed before it could succeed",
    "poison": "the task crashed or lost its worker more than worker.max_recoveries times",
}


#: What a retry's envelope says it waits for in the delayed set (Task.waiting_for): the inspection layer tells
#: retries from tasks scheduled by `eta` and from tasks flow control holds back by it.
RETRY_WAIT: dict[str, Any] = {"reason": "retry"}

#: Longest text kept per error detail in a dead letter (e.g. the last HTTP response body); the rest is cut.
DEAD_DETAIL_LIMIT = 4096

#: Most bytes (as JSON) of the error a dead letter keeps, all its details together (e.g. response headers).
DEAD_ERROR_LIMIT = 16 * 1024

#: Bytes a dead letter keeps of a task over `worker.max_payload_bytes` (`too_large`): the first RAW_PREFIX_BYTES,
#: with the full size and the SHA-256 of the whole. The whole is never stored.
RAW_PREFIX_BYTES = 4096


def capped_error(error: ErrorInfo) -> dict[str, Any]:
    """The error as stored in a dead letter (and carried as a retry's `last_error`): the message and every long
    text detail cut to DEAD_DETAIL_LIMIT bytes (marked `message_truncated`, `<key>_truncated`), and whatever else is
    in the details cut to DEAD_ERROR_LIMIT in all, so a full dead-letter queue stays bounded in memory. A URL a cut
    goes through is dropped, as it could no longer be masked reliably when shown."""
    out = error.to_dict()
    message = _capped_text(out["message"])
    if message is not out["message"]:
        out["message"], out["message_truncated"] = message, True
    details = out.get("details")
    if details:
        capped: dict[str, Any] = {}
        for key, value in details.items():
            text = _capped_text(value) if isinstance(value, str) else value
            capped[key] = text
            if text is not value:
                capped[f"{key}_truncated"] = True
        if len(codec.dumps(capped)) > DEAD_ERROR_LIMIT:  # rare: a walk costs twenty times the check
            capped = bounded(capped, text=DEAD_DETAIL_LIMIT, total=DEAD_ERROR_LIMIT)
        out["details"] = capped
    return out


def _capped_text(text: str) -> str:
    """`text` itself when it fits in DEAD_DETAIL_LIMIT bytes, else its prefix that does, without a cut URL."""
    if len(text) <= DEAD_DETAIL_LIMIT // 4:
        return text
    cut = cut_text(text, DEAD_DETAIL_LIMIT)
    return cut if cut is text else drop_cut_url(cut)


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Exponential backoff with full jitter: uniform between `low` and min(high, low * 2**(attempt-1))."""
    cap = min(high, low * (2 ** min(attempt - 1, 30)))
    return random.uniform(low, max(low, cap))


def raw_for_storage(raw: bytes, keep: int | None = None) -> dict[str, Any]:
    """The envelope bytes as a dead letter stores them: `raw`, text, when they are UTF-8 and JSON escapes them
    cheaply (at most a third more bytes, as for any ordinary JSON), else `raw_base64`; so they never take more
    than 4/3 of their size. With `keep`, bytes longer than that are stored as their first `keep` bytes (a UTF-8
    character is never split) with `raw_truncated`, `raw_size` (the full size) and `raw_sha256` (of the whole, hex):
    the whole is never stored, and hashing reads it where it already is, without a copy."""
    extra: dict[str, Any] = {}
    if keep is not None and len(raw) > keep:
        extra = {"raw_truncated": True, "raw_size": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest()}
        raw = cut_bytes(raw, keep)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(raw).decode("ascii"), **extra}
    if len(codec.dumps(text)) - 2 > len(raw) * 4 // 3:  # quotes, backslashes or control characters galore
        return {"raw_base64": base64.b64encode(raw).decode("ascii"), **extra}
    return {"raw": text, **extra}


def raw_from_entry(entry: dict[str, Any]) -> bytes:
    if "raw_base64" in entry:
        return base64.b64decode(entry["raw_base64"])
    return str(entry.get("raw", "")).encode("utf-8")


def dag_of(task: Task) -> tuple[str, str] | None:
    """(flow id, node) of a flow member, whose settle moves its flow on; None for every other task, and for a task
    whose `flow_member` names a flow or node its id is not ("<flow id>.<node>", as every member's is: a raw push
    may carry anything), so that it moves no flow."""
    member = task.flow_member
    if member is None or task.id != f"{member['flow']}.{member['node']}":
        return None
    return member["flow"], member["node"]


@dataclass(slots=True)
class Decision:
    """A settlement plus what to announce once Redis has accepted it."""

    settlement: Settlement
    event: str
    task: Task | None
    error: ErrorInfo | None = None
    duration: float | None = None
    data: dict[str, Any] | None = None
    #: The attempt failed: a `task.failed` event (with `error`, and `facts` as its data) comes before `event`.
    failed: bool = False
    #: What the executor reported about the attempt (its `context.event_data`).
    facts: dict[str, Any] | None = None


class OutcomePolicy:
    """Applies the queue's retry and dead-letter rules for one worker."""

    def __init__(
        self,
        queue: QueueSettings,
        worker_id: str,
        describers: Mapping[str, Callable[[Task], dict[str, Any] | None]] | None = None,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        #: Task type -> its executor's `describe_call` (ExecutorEntry.describe_call), for the types that have one:
        #: a task of any other type pays one dict lookup for it.
        self.describers = describers or {}

    def call_of(self, task: Task) -> dict[str, Any] | None:
        """What the task calls, as its executor describes it (bounded, masked), or None."""
        describe = self.describers.get(task.type)
        return None if describe is None else describe(task)

    def _record(self, task: Task, status: TaskStatus, started: float | None, finished: float, **extra: Any) -> bytes:
        if "call" not in extra:
            extra["call"] = self.call_of(task)
        record = TaskResult(
            id=task.id,
            queue=self.queue.name,
            type=task.type,
            status=status,
            attempts=task.attempt,
            worker=self.worker_id,
            started_at=started,
            finished_at=finished,
            duration=None if started is None else finished - started,
            trace_id=trace_id(task.trace),
            **extra,
        )
        return codec.dumps(record.to_dict())

    def concluded(self, token: str, task: Task, outcome: AttemptOutcome) -> Decision:
        """An attempt that ran to its end: a success, or a failure that is retried or dead-lettered (the decision's
        `error` is then the attempt's failure)."""
        failure = outcome.failure
        if failure is None:
            return self.success(token, task, outcome.result, outcome.started, outcome.finished)
        error = ErrorInfo(failure.reason, failure.message, failure.details)
        return self.failure(token, task, error, failure.retryable, failure.delay, outcome.started, outcome.finished)

    @staticmethod
    def release(token: str, task: Task, event: str = "") -> Decision:
        """Put the task back at the head of its ready list, unchanged and without counting an attempt (shutdown,
        a second suspect, a flow check Redis could not answer)."""
        where = ready_record(task.priority, int(time.time() * 1000), "released", task.fair_key)
        return Decision(Settlement("release", token, task.id, where=where), event, task)

    @staticmethod
    def defer(
        token: str,
        task: Task,
        due_ms: int,
        event: str = "",
        data: dict[str, Any] | None = None,
        waiting_for: dict[str, Any] | None = None,
    ) -> Decision:
        """Park the task in the delayed set until `due_ms` (Unix ms), without counting an attempt: an `eta` not yet
        reached, or flow control (`event` 'task.throttled', `waiting_for` naming the limit, its key and until
        when: see Task.waiting_for). It is ready again from then on: queue latency counts from `ready_at`."""
        task.ready_at = due_ms / 1000
        task.waiting_for = waiting_for
        flow_key = (data or {}).get("flow_key")
        where = delayed_record("scheduled", due_ms) if flow_key is None else delayed_record("held", due_ms, flow_key)
        settlement = Settlement("defer", token, task.id, b"", task.encode(), str(due_ms), where=where)
        return Decision(settlement, event, task, data=data)

    def refused(self, token: str, task: Task, reason: str, message: str, now: float, raw: bytes) -> Decision:
        """Dead-letter a task refused before it ran (poison, or a check of core.admission). A poison or deadline
        refusal keeps the task's last attempt error, so the dead letter says what kept failing."""
        error = task.last_error if reason in ("poison", "deadline") and task.last_error else None
        info = ErrorInfo(reason, message, {"last_error": error} if error else {})
        return self.dead(token, task, reason, info, None, now, raw=raw)

    def success(self, token: str, task: Task, result: Any, started: float, finished: float) -> Decision:
        body = self._record(task, TaskStatus.SUCCEEDED, started, finished, result=result)
        settlement = Settlement("ack", token, task.id, body, unique_key=task.unique_key, dag=dag_of(task))
        return Decision(settlement, "task.succeeded", task, duration=finished - started)

    def cancelled(self, token: str, task: Task, started: float | None, finished: float) -> Decision:
        """A task cancelled on request: before it started (`started` None) or while it ran. Not retried."""
        attempts = task.attempt if started is not None else task.attempt - 1
        body = codec.dumps(
            TaskResult(
                id=task.id,
                queue=self.queue.name,
                type=task.type,
                status=TaskStatus.CANCELLED,
                attempts=attempts,
                worker=self.worker_id,
                started_at=started,
                finished_at=finished,
                duration=None if started is None else finished - started,
                trace_id=trace_id(task.trace),
                call=None if started is None else self.call_of(task),
            ).to_dict()
        )
        settlement = Settlement(
            "cancel", token, task.id, body, unique_key=task.unique_key, cancelled=True, dag=dag_of(task)
        )
        duration = None if started is None else finished - started
        return Decision(settlement, "task.cancelled", task, duration=duration, data={"running": started is not None})

    def failure(
        self,
        token: str,
        task: Task,
        error: ErrorInfo,
        retryable: bool,
        delay: float | None,
        started: float,
        finished: float,
    ) -> Decision:
        """A failed attempt: retry it when allowed, otherwise dead-letter it."""
        duration = finished - started
        max_attempts = task.max_attempts or self.queue.max_attempts
        if not retryable:
            return self.dead(token, task, "non_retryable", error, started, finished, duration=duration)
        if task.attempt >= max_attempts:
            return self.dead(token, task, "retries_exhausted", error, started, finished, duration=duration)
        low, high = (
            (task.backoff.min, task.backoff.max) if task.backoff else (self.queue.backoff_min, self.queue.backoff_max)
        )
        wait = min(delay, high) if delay is not None else backoff_delay(task.attempt, low, high)
        due = finished + wait
        if task.deadline is not None and due >= task.deadline:
            return self.dead(token, task, "deadline", error, started, finished, duration=duration)
        # The next attempt's envelope: the same task, one attempt on, carrying its last error (bounded: it travels in
        # the envelope). What belonged to this run only (a reached eta, a used flow slot, the validated payload, the
        # cached envelope) is dropped.
        retry = dataclasses.replace(
            task,
            attempt=task.attempt + 1,
            last_error=capped_error(error),
            eta=None,
            ready_at=due,  # ready again when its retry comes due: queue latency counts from there
            flow_slot=None,
            waiting_for=RETRY_WAIT,
            payload=None,
            id_assigned=False,
            envelope=None,
        )
        body = self._record(task, TaskStatus.RETRYING, started, finished, error=error, retry_at=due)
        where = delayed_record("retrying", int(due * 1000), f"{retry.attempt}/{max_attempts}")
        settlement = Settlement("retry", token, task.id, body, retry.encode(), str(int(due * 1000)), where=where)
        return Decision(settlement, "task.retrying", task, error, duration, {"delay": wait, "retry_at": due})

    def dead(
        self,
        token: str,
        task: Task,
        reason: str,
        error: ErrorInfo,
        started: float | None,
        finished: float,
        *,
        raw: bytes | None = None,
        duration: float | None = None,
    ) -> Decision:
        """Dead-letter a task that was parsed (keeps its id; its result record says why)."""
        entry = self._entry(task.id, reason, error, raw if raw is not None else task.encode(), task.attempt, finished)
        entry["type"] = task.type
        if task.trace is not None:
            entry["trace_id"] = trace_id(task.trace)
        call = self.call_of(task)
        if call is not None:
            entry["call"] = call
        body = self._record(task, TaskStatus.DEAD, started, finished, error=error, dead_reason=reason, call=call)
        settlement = Settlement(
            "dead", token, task.id, body, codec.dumps(entry), task.id, unique_key=task.unique_key, dag=dag_of(task)
        )
        return Decision(settlement, "task.dead_lettered", task, error, duration, {"reason": reason})

    def dead_raw(self, token: str, raw: bytes, rejected: TaskRejected, now: float) -> Decision:
        """Dead-letter bytes that never became a task. When they carry a usable id (a JSON object with a string
        `id`), the producer's id names the entry, gets a dead result record and is in the event, as for any
        task; otherwise the entry id is made from the token and there is no result record."""
        reason, error = rejected.reason, ErrorInfo(rejected.reason, rejected.message)
        claimed = claimed_id(raw)  # the id the claim script recorded the attempt under, if any
        if rejected.task_id is not None:
            task = Task(id=rejected.task_id, type=rejected.task_type or DEFAULT_TYPE)
            decision = self.dead(token, task, reason, error, None, now, raw=raw)
            if claimed is not None and claimed != task.id:
                decision.settlement.forget = claimed
            return decision
        entry_id = f"raw-{token}"
        entry = self._entry(None, reason, error, raw, 0, now)
        settlement = Settlement("dead", token, entry_id, b"", codec.dumps(entry), entry_id, forget=claimed)
        return Decision(settlement, "task.dead_lettered", None, error, None, {"reason": reason, "entry_id": entry_id})

    def _entry(
        self, task_id: str | None, reason: str, error: ErrorInfo, raw: bytes, attempts: int, when: float
    ) -> dict[str, Any]:
        """A dead-letter entry; its id is the key it is stored under (see settle.lua), added when it is read. Of a
        `too_large` task, which was never parsed, only a prefix of the bytes is kept (see raw_for_storage)."""
        keep = RAW_PREFIX_BYTES if reason == "too_large" else None
        return {
            "task_id": task_id,
            "queue": self.queue.name,
            "reason": reason,
            "error": capped_error(error),
            "attempts": attempts,
            "dead_at": when,
            "worker": self.worker_id,
            **raw_for_storage(raw, keep),
        }
