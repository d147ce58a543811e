"""What a task leaves behind: its result record (`TaskResult`, kept `queue.result_ttl` seconds) and the error of a
failed attempt (`ErrorInfo`). Pure data with no I/O, like the envelope in task.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gopherq.core.task import TaskStatus


@dataclass(slots=True)
class ErrorInfo:
    """Why an attempt failed: a reason code, a message, and executor details (e.g. the HTTP response)."""

    #: A reason code (`timeout`, `exception`, `http_status`, ...: docs/guarantees.md lists them).
    reason: str
    #: One line saying what went wrong.
    message: str
    #: The executor's details (e.g. the HTTP response; a traceback for an unexpected exception).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(slots=True)
class TaskResult:
    """The record kept in Redis (with a TTL) for each task: what happened and what it returned."""

    #: The task's id.
    id: str
    #: Its queue.
    queue: str
    #: Its type.
    type: str
    #: Where it stands (see TaskStatus).
    status: TaskStatus
    #: Attempts made so far.
    attempts: int
    #: The worker of the last attempt.
    worker: str | None = None
    #: When the last attempt started (Unix seconds).
    started_at: float | None = None
    #: When it ended.
    finished_at: float | None = None
    #: Seconds the last attempt took.
    duration: float | None = None
    #: What the executor returned (JSON), when it succeeded.
    result: Any = None
    #: Why the last attempt failed.
    error: ErrorInfo | None = None
    #: Why the task is dead (a dead-letter reason code), when its status is `dead`.
    dead_reason: str | None = None
    #: When the next attempt is due, while `retrying`.
    retry_at: float | None = None
    #: The trace the task belongs to (from its `trace` field), so a result leads to its trace.
    trace_id: str | None = None
    #: What the task calls, as its executor describes it, masked (for `http`: method, url, headers, body_bytes,
    #: body_sha256); None when its executor says nothing (and in records of versions before it was kept).
    call: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "queue": self.queue,
            "type": self.type,
            "status": self.status.value,
            "attempts": self.attempts,
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
        }
        if self.dead_reason is not None:
            out["dead_reason"] = self.dead_reason
        if self.retry_at is not None:
            out["retry_at"] = self.retry_at
        if self.trace_id is not None:
            out["trace_id"] = self.trace_id
        if self.call is not None:
            out["call"] = self.call
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        error = data.get("error")
        return cls(
            id=data["id"],
            queue=data["queue"],
            type=data["type"],
            status=TaskStatus(data["status"]),
            attempts=data["attempts"],
            worker=data.get("worker"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            duration=data.get("duration"),
            result=data.get("result"),
            error=ErrorInfo(error["reason"], error["message"], error.get("details") or {}) if error else None,
            dead_reason=data.get("dead_reason"),
            retry_at=data.get("retry_at"),
            trace_id=data.get("trace_id"),
            call=data.get("call"),
        )
