"""The plugins' `gopherq_before_enqueue` hook, run where tasks are made: clients, the HTTP API, the command line,
schedules and follow-ups. Callers hold `before_enqueue(plugins)`, which is None when no plugin implements the hook,
so a producer pays nothing for it then; when one does, a plugin's failure never costs the task."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from gopherq.core import codec
from gopherq.core.errors import TaskRejected
from gopherq.core.task import Task, task_from_dict
from gopherq.core.tracecontext import check_trace

log = logging.getLogger(__name__)

#: Seconds between two warnings about the hook failing (it may fail for every task).
WARN_INTERVAL = 60.0


class BeforeEnqueue:
    """Calls the hook on one task at a time; see `gopherq_before_enqueue` in core/hookspecs.py."""

    def __init__(self, caller: Any) -> None:
        self.caller = caller
        self.failures = 0
        self._next_warning = 0.0

    def __call__(
        self, task: Task, queue: str, origin: str, carrier: Mapping[str, str] | None = None, parent: Task | None = None
    ) -> None:
        """Let the plugins fill in `task`. A plugin that raises, or sets a `trace` that is not valid, leaves the task
        as it was (with a warning now and then)."""
        before = task.trace
        try:
            self.caller(task=task, queue=queue, origin=origin, carrier=carrier, parent=parent)
            if task.trace is not before and task.trace is not None:
                check_trace(task.trace)
        except Exception as exc:
            task.trace = before
            self.failures += 1
            now = time.monotonic()
            if now >= self._next_warning:
                self._next_warning = now + WARN_INTERVAL
                message = exc.message if isinstance(exc, TaskRejected) else f"{type(exc).__name__}: {exc}"
                log.warning(
                    "gopherq_before_enqueue failed for task %s (%d times so far); enqueued without it: %s",
                    task.id,
                    self.failures,
                    message,
                )

    def envelope(self, raw: bytes, queue: str, origin: str, parent: Task | None = None) -> bytes:
        """The same for an envelope made as JSON (a schedule's run, a callback): the envelope as the plugins left
        it. One that is not a valid task is returned unchanged (the worker dead-letters it, as it would anyway)."""
        try:
            task = task_from_dict(codec.loads(raw))
        except (TaskRejected, codec.JSONDecodeError):
            return raw
        self(task, task.queue or queue, origin, parent=parent)
        return task.encode()


def before_enqueue(plugins: Any) -> BeforeEnqueue | None:
    """The hook of this process's plugins, or None when no plugin implements it."""
    caller = plugins.hook_caller("gopherq_before_enqueue")
    return None if caller is None else BeforeEnqueue(caller)
