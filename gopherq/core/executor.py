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
import difflib
import functools
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from gopherq.core.bounds import bounded, within
from gopherq.core.calls import OutboundCalls
from gopherq.core.errors import TaskFailure, TaskRejected
from gopherq.core.flow import FlowLimits
from gopherq.core.task import CONTROL_FIELDS, Task


@runtime_checkable
class Executor(Protocol):
    """Runs tasks of one type: `execute(task, context)` runs one attempt and returns its JSON-serialisable result,
    or raises (`RetryTask`, `PermanentFailure`, `TaskFailure`, or anything: a failed attempt).

    Where it runs: an `async def execute` is awaited on the worker's event loop (never block in it). A plain
    `def execute` runs in a thread of the event loop's default pool, any of its threads, several tasks at once;
    a plain `open`/`close` runs on the event-loop thread itself. Give the executor an `own_threads = N` attribute
    and its plain `open`, `execute` and `close` all run in N threads of its own instead (N = 1: one thread, one
    task at a time, which is what a sqlite3 connection made in `open` needs).

    `execute` is the whole required contract. Each optional extra is a small protocol of its own, below, which an
    executor has simply by having the member (no base class to inherit): `WithPayloadModel` (`payload_model`, a
    pydantic model class for the task's own fields), `Opens` (`open()`, called once before the first task) and
    `Closes` (`close()`, called at shutdown), each sync or async, `WithOwnThreads` (`own_threads`, above),
    `FlowControlled` (`flow(task)`), `FlowSignals` (`flow_signal(failure)`) and `FlowLabels`
    (`flow_label(failure)`) for shared flow control (see core/flow.py and core/flow_stats.py), `WithFollowups`
    (`followups(task, record, succeeded)`, envelopes to enqueue when a task ends, pushed before the task is
    settled, so never lost), `Checks` (`check(task)`, called after the payload is
    validated wherever a task is, every producer entry point and the worker, raising ValueError for what the
    payload model cannot know alone: a task that needs a setting of the executor that is not set can never run,
    so it is refused), `DescribesCall` (`describe_call(task)`, what the task calls, kept in its result record
    and dead letter), and `RunsApplicationCode` (`runs_application_code = False` for an executor, like `http`,
    whose attempts run no code of the application's: attempt wrappers may then skip what only such code needs)."""

    def execute(self, task: Task, context: ExecutionContext) -> Any: ...


@runtime_checkable
class WithPayloadModel(Protocol):
    """An executor whose task fields are validated by a pydantic model (None: the task gets the raw dict)."""

    payload_model: type[BaseModel] | None


@runtime_checkable
class Opens(Protocol):
    """An executor with something to open once, before its first task (sync or async)."""

    def open(self) -> Any: ...


@runtime_checkable
class Closes(Protocol):
    """An executor with something to close at shutdown, after its last task (sync or async)."""

    def close(self) -> Any: ...


@runtime_checkable
class WithOwnThreads(Protocol):
    """An executor whose plain-def `open`, `execute` and `close` run in N threads of its own (None: the default)."""

    own_threads: int | None


@runtime_checkable
class RunsApplicationCode(Protocol):
    """An executor that says whether its attempts run code of the application's (without the member: they may).
    One that only does its own work with the task's fields, as `http` does (its calls are reported through
    `context.calls`), sets `runs_application_code = False`: nothing in its attempts reads what an attempt wrapper
    makes current (a context variable, such as the current span), so a wrapper may skip making it current; the
    `otel` plugin does for sampled-out attempts. Library instrumentation of the executor's own HTTP client is not
    application code a wrapper prepares for. Attempt wrappers read it as `entry.runs_application_code`."""

    runs_application_code: bool


@runtime_checkable
class FlowControlled(Protocol):
    """An executor that names a task's flow key and its limits (None: the task is not flow-controlled)."""

    def flow(self, task: Task) -> tuple[str, FlowLimits] | None: ...


@runtime_checkable
class FlowSignals(Protocol):
    """An executor that says how an attempt ended for flow control: 'ok', 'error', 'slow', 'slow_error' or
    'neutral' (`failure` is None after a success)."""

    def flow_signal(self, failure: TaskFailure | None) -> str: ...


@runtime_checkable
class FlowLabels(Protocol):
    """An executor that names how a flow-controlled attempt failed, for the destinations page's counts: a short
    label such as '429', '5xx' or 'error' (lowercase letters, digits, `_`; at most 16). A success is 'ok'."""

    def flow_label(self, failure: TaskFailure) -> str: ...


@runtime_checkable
class WithFollowups(Protocol):
    """An executor that asks for envelopes to enqueue when a task ends (e.g. callbacks), given the task, its
    result record and whether it succeeded."""

    def followups(self, task: Task, record: bytes, succeeded: bool) -> list[bytes]: ...


@runtime_checkable
class DescribesCall(Protocol):
    """An executor that says what a task calls (for `http`: method, URL, headers, body size and digest), so that
    the task's result record and dead letter keep it as `call`. Return a small JSON-ready dict with every secret
    already masked (the core cuts it to CALL_LIMIT bytes and masks it again where it is shown), or None. Called
    when an outcome is recorded, also for a task that never ran (dead-lettered before: its payload may not be
    validated then, so `task.payload` may be None); an exception is logged and the record kept without it."""

    def describe_call(self, task: Task) -> dict[str, Any] | None: ...


@runtime_checkable
class RendersCommand(Protocol):
    """An executor that can show a task as a command line an operator can copy (the http executor: curl), from
    its envelope as shown (masked); None when it cannot."""

    def render_command(self, envelope: dict[str, Any]) -> str | None: ...


@runtime_checkable
class Checks(Protocol):
    """An executor that checks a validated payload against its own settings (raises ValueError)."""

    def check(self, task: Task) -> None: ...


#: Every optional extra of the executor contract, in the order docs/reference.md lists them.
EXTRAS: tuple[type, ...] = (
    WithPayloadModel,
    Opens,
    Closes,
    WithOwnThreads,
    Checks,
    FlowControlled,
    FlowSignals,
    WithFollowups,
    DescribesCall,
    RunsApplicationCode,
)

#: Most bytes (as JSON) of the `call` an executor describes; each text in it is cut to CALL_TEXT.
CALL_LIMIT = 4096
CALL_TEXT = 2048

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ExecutionContext:
    """What an executor knows about the attempt it runs: where, which try, and how long it may take."""

    #: The id of the worker running the attempt (`host:pid:random`).
    worker_id: str
    #: The queue the task came from.
    queue: str
    #: This attempt's number, from 1.
    attempt: int
    #: Attempts the task may have in all (its own `max_attempts`, or the queue's).
    max_attempts: int
    #: Seconds this attempt may take; past them an `async def execute` is cancelled (a thread cannot be).
    timeout: float
    #: Unix time after which no attempt starts (the task's `deadline`), or None.
    deadline: float | None
    #: A logger adapter on the worker's logger whose records carry the task's id as `task_id`.
    log: logging.LoggerAdapter[logging.Logger]
    #: Free for the executor's own use during the attempt.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Small facts about this attempt (e.g. an HTTP status and host) that the worker adds to the `data` of the
    #: attempt's outcome events (task.succeeded, task.failed, task.retrying, task.dead_lettered), where sinks
    #: such as the metrics sink read them. Set a fresh dict; keep it small and free of secrets' values.
    event_data: dict[str, Any] | None = None
    #: Set by a plugin that wraps attempts to observe the calls the executor makes to other services (see
    #: core/calls.py); None when nothing observes them, and then an executor does nothing extra.
    calls: OutboundCalls | None = None
    #: For a member of a flow with parents: their outcomes, each {node, task_id, status, result, error} (see
    #: core/flows/inputs.py); None for every other task.
    flow_inputs: list[dict[str, Any]] | None = None
    #: Set by a plugin that wraps attempts: headers every outgoing call of this attempt carries when `calls` is
    #: None (e.g. the `traceparent` of a sampled-out trace), added as `core.calls.merge_headers` adds them (never
    #: over the request's own); None: none. Never changed once set (the wrapper may share one dict between attempts).
    call_headers: dict[str, str] | None = None


#: Most problems one payload error lists; the rest are counted.
MAX_PROBLEMS = 10


def describe_payload_error(exc: ValidationError, known: Iterable[str] = ()) -> str:
    """Every problem of an executor payload (at most MAX_PROBLEMS, then how many more), on one line, each naming
    its field. A field the model does not have gets a did-you-mean from `known` (the model's fields and the
    envelope's control fields): `qurey` is most likely `query`, `max_attemps` is `max_attempts`."""
    names = list(known)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        if error["type"] == "missing":
            problems.append(f"field '{where}' is required")
        elif error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, names, n=1) if len(error["loc"]) == 1 else []
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"field '{where}' is not a field of this task type{hint}")
        else:
            problems.append(f"field '{where}': {error['msg']}")
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"and {len(problems) - MAX_PROBLEMS} more")
    return "; ".join(shown)


def model_field_names(model: type[BaseModel]) -> list[str]:
    """The names a payload may use for the model's fields (aliases included)."""
    names = []
    for name, info in model.model_fields.items():
        names.append(name)
        if isinstance(info.alias, str):
            names.append(info.alias)
    return names


class ExecutorEntry:
    """A registered executor: validates payloads and calls `execute`, sync ones through a thread pool."""

    def __init__(self, name: str, executor: Any, plugin: str) -> None:
        if not callable(getattr(executor, "execute", None)):  # the protocol check does not see a non-callable
            raise TypeError(f"executor {name!r} has no execute(task, context) method")
        self.name = name
        self.executor = executor
        self.plugin = plugin
        self.payload_model = executor.payload_model if isinstance(executor, WithPayloadModel) else None
        #: The model's own validator, called directly: `model_validate` is a Python wrapper around it that costs
        #: a fifth of an `http` payload's validation, which runs for every task a client creates or a worker runs.
        self._validate_payload: Callable[[Any], Any] | None = (
            None if self.payload_model is None else self.payload_model.__pydantic_validator__.validate_python
        )
        #: Optional flow control (see core/flow.py): the task's flow key and limits, and how an attempt ended.
        self.flow: Callable[[Task], tuple[str, FlowLimits] | None] | None = (
            executor.flow if isinstance(executor, FlowControlled) else None
        )
        self.flow_signal: Callable[[TaskFailure | None], str] | None = (
            executor.flow_signal if isinstance(executor, FlowSignals) else None
        )
        self.flow_label: Callable[[TaskFailure], str] | None = (
            executor.flow_label if isinstance(executor, FlowLabels) else None
        )
        #: Optional: envelopes to enqueue when a task ends (task, result record, succeeded), e.g. callbacks.
        self.followups: Callable[[Task, bytes, bool], list[bytes]] | None = (
            executor.followups if isinstance(executor, WithFollowups) else None
        )
        self._describe_call: Callable[[Task], dict[str, Any] | None] | None = (
            executor.describe_call if isinstance(executor, DescribesCall) else None
        )
        #: Optional: the task as a command line (e.g. curl), from its masked envelope; see core/inspect/editing.py.
        self.render_command: Callable[[dict[str, Any]], str | None] | None = (
            executor.render_command if isinstance(executor, RendersCommand) else None
        )
        #: Optional: checks of a validated payload against the executor's own settings (raises ValueError).
        self.check: Callable[[Task], None] | None = executor.check if isinstance(executor, Checks) else None
        #: Optional: the number of threads of the executor's own, in which its plain-def `open`, `execute` and
        #: `close` run (None: `execute` runs in the loop's default pool, `open`/`close` on the loop).
        self.own_threads = executor.own_threads if isinstance(executor, WithOwnThreads) else None
        if self.own_threads is not None and (type(self.own_threads) is not int or self.own_threads < 1):
            raise TypeError(f"executor {name!r}: own_threads must be an integer >= 1 or None, got {self.own_threads!r}")
        #: False when the executor declares that its attempts run no application code (`RunsApplicationCode`).
        self.runs_application_code = (
            executor.runs_application_code if isinstance(executor, RunsApplicationCode) else True
        )
        if type(self.runs_application_code) is not bool:
            raise TypeError(
                f"executor {name!r}: runs_application_code must be True or False, got {self.runs_application_code!r}"
            )
        self._pool: ThreadPoolExecutor | None = None
        self.run: Callable[[Task, ExecutionContext], Awaitable[Any]]
        if inspect.iscoroutinefunction(executor.execute):
            self.run = executor.execute
        elif self.own_threads is None:
            sync = executor.execute

            async def run_in_thread(task: Task, context: ExecutionContext) -> Any:
                # In the attempt's context (as asyncio.to_thread does), so what a wrapper made current (e.g. a
                # span) is current in the thread too.
                call = functools.partial(contextvars.copy_context().run, sync, task, context)
                return await asyncio.get_running_loop().run_in_executor(None, call)

            self.run = run_in_thread
        else:
            own = executor.execute

            async def run_in_own_threads(task: Task, context: ExecutionContext) -> Any:
                call = functools.partial(contextvars.copy_context().run, own, task, context)
                return await asyncio.get_running_loop().run_in_executor(self._thread_pool(), call)

            self.run = run_in_own_threads

    def _thread_pool(self) -> ThreadPoolExecutor | None:
        """The executor's own threads when it asks for them (made on first use), else None: the default pool."""
        if self.own_threads is not None and self._pool is None:
            self._pool = ThreadPoolExecutor(self.own_threads, thread_name_prefix=f"gopherq-{self.name}")
        return self._pool

    @property
    def describes_calls(self) -> bool:
        return self._describe_call is not None

    def describe_call(self, task: Task) -> dict[str, Any] | None:
        """What the task calls, bounded (CALL_LIMIT), or None: the executor has no `describe_call`, returned
        None or something that is not a dict, or failed (logged; a description never costs the task its record)."""
        if self._describe_call is None:
            return None
        try:
            call = self._describe_call(task)
        except Exception as exc:
            log.warning(
                "task %s: %s executor's describe_call failed: %s: %s", task.id, self.name, type(exc).__name__, exc
            )
            return None
        if not isinstance(call, dict):
            return None
        if within(call, text=CALL_TEXT, total=CALL_LIMIT):  # the common small call: nothing to cut, no walk
            return call
        shown: dict[str, Any] = bounded(call, text=CALL_TEXT, total=CALL_LIMIT)
        return shown

    def validate(self, task: Task) -> None:
        """Check the task's own fields; sets `task.payload` or raises TaskRejected('schema_invalid')."""
        if self._validate_payload is None:
            task.payload = task.fields
        else:
            try:
                task.payload = self._validate_payload(task.fields)
            except ValidationError as exc:
                assert self.payload_model is not None
                known = [*model_field_names(self.payload_model), *sorted(CONTROL_FIELDS)]
                raise TaskRejected(
                    "schema_invalid", f"{self.name} task: {describe_payload_error(exc, known)}"
                ) from None
        if self.check is not None:
            try:
                self.check(task)
            except ValueError as exc:
                raise TaskRejected("schema_invalid", f"{self.name} task: {exc}") from None

    async def open(self) -> None:
        await self._lifecycle("open")

    async def close(self) -> None:
        try:
            await self._lifecycle("close")
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)  # nothing runs in it any more: close() was its last call
                self._pool = None

    async def _lifecycle(self, method: str) -> None:
        """Call the executor's optional `open`/`close`: awaited when async; a plain one runs in the executor's own
        threads when it has them (so what `open` makes belongs to the thread `execute` runs in), else inline."""
        executor = self.executor
        func: Callable[[], Any]
        if method == "open" and isinstance(executor, Opens):
            func = executor.open
        elif method == "close" and isinstance(executor, Closes):
            func = executor.close
        else:
            return
        pool = None if inspect.iscoroutinefunction(func) else self._thread_pool()
        result = func() if pool is None else await asyncio.get_running_loop().run_in_executor(pool, func)
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
#: (`gopherq_wrap_attempt`). A runner returns an awaitable of the attempt's outcome: an async function, or a plain
#: one that returns the runner it wraps's own awaitable when it has nothing to do after it (no frame of its own).
#: `run_attempt` raises only on cancellation; what a wrapper raises otherwise, the worker makes a failed attempt
#: (`wrapper_failed`).
AttemptRunner = Callable[["ExecutorEntry", Task, ExecutionContext], Awaitable["AttemptOutcome"]]


def wrapper_failed(task: Task, context: ExecutionContext, started: float, exc: Exception) -> AttemptOutcome:
    """The outcome of an attempt whose wrapper (`gopherq_wrap_attempt`) raised: a failure (reason `exception`),
    logged, instead of an error escaping into the worker, where it would look like a crash and end as poison. The
    worker catches it around the wrapped runner itself, so a wrapped attempt pays no frame of its own for it."""
    context.log.error("task %s: an attempt wrapper failed: %s: %s", task.id, type(exc).__name__, exc)
    failure = TaskFailure("exception", f"attempt wrapper failed: {type(exc).__name__}: {exc}")
    return AttemptOutcome(started, time.time(), failure=failure)


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
        # Not logged here: the failure (with this traceback) is recorded and is the `task.failed` event, which the
        # logging sink writes as the attempt's one log line.
        failure = TaskFailure(
            "exception", f"{type(exc).__name__}: {exc}", details={"traceback": traceback.format_exc(limit=8)[-4000:]}
        )
    else:
        return AttemptOutcome(started, time.time(), result)
    return AttemptOutcome(started, time.time(), failure=failure)
