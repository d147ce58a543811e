"""What an executor is, the context it runs in, and the registry entry that adapts sync executors once.

An executor turns a task of one `type` into a result. It declares a pydantic `payload_model` for its own fields
(optional: without one it gets the raw dict) and an `execute(task, context)` that is `async def` or plain `def`
(a plain one runs in a thread pool). It returns a JSON-serialisable result, or raises `RetryTask`,
`PermanentFailure` or any exception (which counts as a failed attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from gopherq.core.calls import OutboundCalls
from gopherq.core.errors import TaskFailure, TaskRejected
from gopherq.core.flow import FlowLimits
from gopherq.core.task import Task


@runtime_checkable
class Executor(Protocol):
    """Runs tasks of one type. Optional extras: `payload_model` (a pydantic model class for the task's own
    fields), `async open()` called once before the first task, `async close()` called at shutdown, and
    `flow(task)` / `flow_signal(failure)` for shared flow control (see core/flow.py), and
    `followups(task, record, succeeded)` returning envelopes to enqueue when a task ends (pushed before the task
    is settled, so never lost)."""

    def execute(self, task: Task, context: ExecutionContext) -> Any: ...


@dataclass(slots=True)
class ExecutionContext:
    """What an executor knows about the attempt it runs: where, which try, and how long it may take."""

    worker_id: str
    queue: str
    attempt: int
    max_attempts: int
    timeout: float
    deadline: float | None
    log: logging.LoggerAdapter[logging.Logger]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Small facts about this attempt (e.g. an HTTP status and host) that the worker adds to the `data` of the
    #: attempt's outcome events (task.succeeded, task.failed, task.retrying, task.dead_lettered), where sinks
    #: such as the metrics sink read them. Set a fresh dict; keep it small and free of secrets' values.
    event_data: dict[str, Any] | None = None
    #: Set by a plugin that wraps attempts to observe the calls the executor makes to other services (see
    #: core/calls.py); None when nothing observes them, and then an executor does nothing extra.
    calls: OutboundCalls | None = None


def describe_payload_error(exc: ValidationError) -> str:
    """One line naming the first bad field of an executor payload."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    if error["type"] == "missing":
        return f"field '{where}' is required"
    if error["type"] == "extra_forbidden":
        return f"field '{where}' is not a field of this task type"
    return f"field '{where}': {error['msg']}"


class ExecutorEntry:
    """A registered executor: validates payloads and calls `execute`, sync ones through a thread pool."""

    def __init__(self, name: str, executor: Any, plugin: str) -> None:
        if not callable(getattr(executor, "execute", None)):
            raise TypeError(f"executor {name!r} has no execute(task, context) method")
        self.name = name
        self.executor = executor
        self.plugin = plugin
        self.payload_model: type[BaseModel] | None = getattr(executor, "payload_model", None)
        #: The model's own validator, called directly: `model_validate` is a Python wrapper around it that costs
        #: a fifth of an `http` payload's validation, which runs for every task a client creates or a worker runs.
        self._validate_payload: Callable[[Any], Any] | None = (
            None if self.payload_model is None else self.payload_model.__pydantic_validator__.validate_python
        )
        #: Optional flow control (see core/flow.py): the task's flow key and limits, and how an attempt ended.
        self.flow: Callable[[Task], tuple[str, FlowLimits] | None] | None = getattr(executor, "flow", None)
        self.flow_signal: Callable[[TaskFailure | None], str] | None = getattr(executor, "flow_signal", None)
        #: Optional: envelopes to enqueue when a task ends (task, result record, succeeded), e.g. callbacks.
        self.followups: Callable[[Task, bytes, bool], list[bytes]] | None = getattr(executor, "followups", None)
        self.run: Callable[[Task, ExecutionContext], Awaitable[Any]]
        if inspect.iscoroutinefunction(executor.execute):
            self.run = executor.execute
        else:
            sync = executor.execute

            async def run_in_thread(task: Task, context: ExecutionContext) -> Any:
                # In the attempt's context (as asyncio.to_thread does), so what a wrapper made current (e.g. a
                # span) is current in the thread too.
                call = functools.partial(contextvars.copy_context().run, sync, task, context)
                return await asyncio.get_running_loop().run_in_executor(None, call)

            self.run = run_in_thread

    def validate(self, task: Task) -> None:
        """Check the task's own fields; sets `task.payload` or raises TaskRejected('schema_invalid')."""
        if self._validate_payload is None:
            task.payload = task.fields
            return
        try:
            task.payload = self._validate_payload(task.fields)
        except ValidationError as exc:
            raise TaskRejected("schema_invalid", f"{self.name} task: {describe_payload_error(exc)}") from None

    async def open(self) -> None:
        opener = getattr(self.executor, "open", None)
        if opener is not None:
            result = opener()
            if inspect.isawaitable(result):
                await result

    async def close(self) -> None:
        closer = getattr(self.executor, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result


if sys.version_info >= (3, 11):
    time_limit = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def time_limit(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


@dataclass(slots=True)
class AttemptOutcome:
    """What one attempt produced: a result, or the failure that ended it."""

    started: float
    finished: float
    result: Any = None
    failure: TaskFailure | None = None


#: How an attempt is run: `run_attempt` (without its own time limit, in the worker), possibly wrapped by plugins
#: (`gopherq_wrap_attempt`). A runner returns the attempt's outcome and raises only on cancellation.
AttemptRunner = Callable[["ExecutorEntry", Task, ExecutionContext], Awaitable["AttemptOutcome"]]


def guarded(run: AttemptRunner) -> AttemptRunner:
    """A wrapped runner whose wrappers' own failures fail the attempt (reason `exception`) instead of escaping into
    the worker, where they would look like a crash and end as poison."""

    async def run_guarded(entry: ExecutorEntry, task: Task, context: ExecutionContext) -> AttemptOutcome:
        started = time.time()
        try:
            return await run(entry, task, context)
        except Exception as exc:
            context.log.error("task %s: an attempt wrapper failed: %s: %s", task.id, type(exc).__name__, exc)
            failure = TaskFailure("exception", f"attempt wrapper failed: {type(exc).__name__}: {exc}")
            return AttemptOutcome(started, time.time(), failure=failure)

    return run_guarded


async def run_attempt(
    entry: ExecutorEntry, task: Task, context: ExecutionContext, *, enforce_timeout: bool = True
) -> AttemptOutcome:
    """Run one attempt of a validated task under its time limit, turning every exception into a failure.

    Cancellation (shutdown) propagates. This is the execution path of the worker and of gopherq.testing. The
    worker passes `enforce_timeout=False` because its watchdog enforces every attempt's limit with one timer.
    """
    started = time.time()
    try:
        async with time_limit(context.timeout) if enforce_timeout else contextlib.nullcontext():
            result = await entry.run(task, context)
    except asyncio.TimeoutError:
        failure = TaskFailure("timeout", f"attempt exceeded its time limit of {context.timeout:g}s")
    except TaskFailure as exc:
        failure = exc
    except Exception as exc:
        context.log.warning("executor %s raised %s: %s", entry.name, type(exc).__name__, exc)
        failure = TaskFailure(
            "exception", f"{type(exc).__name__}: {exc}", details={"traceback": traceback.format_exc(limit=8)[-4000:]}
        )
    else:
        return AttemptOutcome(started, time.time(), result)
    return AttemptOutcome(started, time.time(), failure=failure)
