"""Every hook a GoPherQ plugin can implement, and the types of the `register` callbacks the hooks receive.

Hooks are synchronous and cheap: they register things and return. Anything asynchronous is an object with
async methods that the core awaits (an executor's `execute`, a sink's `handle`) or an awaitable returned from
`gopherq_startup` / `gopherq_shutdown`. Implement a hook with `@gopherq.hookimpl` on a function of the same
name in the module (or object) your entry point names; a hook may take fewer arguments than its spec, never
others. Implementing a `gopherq_*` name that is not below stops start-up, so a typo cannot go unnoticed.

Order of a worker's start-up: `gopherq_register_settings` (every plugin), then the `[plugins.<name>]` tables
are validated, then `gopherq_register_hooks` (a plugin adds the hooks its settings call for), then
`gopherq_register_executors`, then `gopherq_register_sinks`, then (in the worker's event loop) each executor's
`open()`, then `gopherq_startup`. At the end: each executor's `close()`, then `gopherq_shutdown`, then the sinks
are drained and closed. A client (`AsyncClient`, `gopherq enqueue`) runs only the settings, hooks and executor
registrations, to validate tasks before they reach Redis; it calls `gopherq_before_enqueue` for each task.

Every hook spec's docstring has the same parts, in this order, from which docs/reference.md is generated: a
one-line summary, then `Called when:`, `Arguments:`, `Returns:`, `Errors:` and `Runs in:` paragraphs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from gopherq.core.sink_defaults import SINK_BATCH_SIZE, SINK_BUFFER_SIZE

if TYPE_CHECKING:
    import asyncio

    from pydantic import BaseModel

    from gopherq.core.events import EventBus, Sink
    from gopherq.core.executor import AttemptRunner, Executor
    from gopherq.core.inspect.models import TaskInfo
    from gopherq.core.settings import Settings
    from gopherq.core.task import Task

#: The parts of every hook spec's docstring, in order (checked by tests/test_reference.py).
DOCSTRING_PARTS = ("Called when:", "Arguments:", "Returns:", "Errors:", "Runs in:")

PROJECT = "gopherq"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegisterSettings(Protocol):
    """`register(model, name=None)`: validate the `[plugins.<name>]` table (default: your plugin's name) with
    `model`, a subclass of `gopherq.PluginSettings` (or `gopherq.SinkSettings`)."""

    def __call__(self, model: type[BaseModel], name: str | None = None) -> None: ...


class RegisterExecutor(Protocol):
    """`register(task_type, executor, replace=False)`: run tasks whose `type` is `task_type` with `executor`."""

    def __call__(self, name: str, executor: Executor, *, replace: bool = False) -> None: ...


class RegisterSink(Protocol):
    """`register(name, sink, events=..., buffer_size=..., batch_size=..., replace=False)`: feed `sink` the
    events whose names match `events` (globs such as `task.*`; `!name` excludes), through a buffer of
    `buffer_size` events (the oldest are dropped when it is full) in batches of at most `batch_size`."""

    def __call__(
        self,
        name: str,
        sink: Sink,
        *,
        events: Iterable[str] = ("*",),
        buffer_size: int = SINK_BUFFER_SIZE,
        batch_size: int = SINK_BATCH_SIZE,
        replace: bool = False,
    ) -> None: ...


class RegisterHooks(Protocol):
    """`register(obj)`: add the `gopherq_*` hook implementations of `obj` (any object or module) as part of your
    plugin."""

    def __call__(self, obj: object) -> None: ...


class WorkerView(Protocol):
    """What `gopherq_startup` and `gopherq_shutdown` see of the worker they run in (read it, do not change it)."""

    @property
    def id(self) -> str:
        """The worker's id (`host:pid:random`)."""

    @property
    def queue(self) -> str:
        """The queue it runs tasks from."""

    @property
    def settings(self) -> Settings:
        """Its effective settings."""

    @property
    def concurrency(self) -> int:
        """Most tasks it runs at once."""

    @property
    def stats(self) -> dict[str, int]:
        """Its counters: succeeded, failed, retried, deferred, dead, refused, recovered, cancelled."""

    @property
    def executing(self) -> set[asyncio.Task[None]]:
        """The attempts running now (one asyncio task each); `len()` of it is what a gauge wants."""

    @property
    def bus(self) -> EventBus:
        """Its event bus: `bus.stats()` counts each sink's delivered, dropped and failed events."""

    @property
    def oldest_claimed(self) -> float | None:
        """When the longest-running task it holds was claimed (Unix seconds), as of its last heartbeat; None when
        it holds none."""


@hookspec
def gopherq_register_settings(register: RegisterSettings) -> None:
    """Declare the pydantic model of this plugin's `[plugins.<name>]` table.

    Called when: once per process, before every other registration hook.

    Arguments: `register`, a `RegisterSettings`. Call `register(Model)` to validate the table named after your
    plugin's entry point, or `register(Model, name="other")` for another table (a table has one owner). The
    validated instance is then `settings.plugin("<name>")` in the hooks below; a plugin whose table is absent
    gets the model's defaults. `GOPHERQ_PLUGINS__<NAME>__<KEY>` overrides a key. Declare secrets as
    `pydantic.SecretStr` so `gopherq config` masks them.

    Returns: nothing.

    Errors: a second registration of the same table name stops start-up; so do unknown keys and bad values in
    the table, with a one-line error naming the key and the file, like the core settings.

    Runs in: every process that loads plugins: workers (each process of `gopherq run`), `gopherq web` and
    `gopherq api`, clients (`Client`, `AsyncClient`, `App`) and the CLI commands that make one, `gopherq plugins`,
    `gopherq config`, and the test kit (`PluginHarness`, `gopherq_queue`).
    """


@hookspec
def gopherq_register_executors(register: RegisterExecutor, settings: Settings) -> None:
    """Register executors, by task type.

    Called when: once per process, after the settings are validated, in workers and in clients (which validate
    a task's fields with the executor's `payload_model` before enqueueing it). Build executors here but do not
    open connections: the executor's `open()` runs in the worker's event loop before the first task.

    Arguments: `register`, a `RegisterExecutor`: call `register(type_name, executor)` once per task type;
    `settings`, the effective `gopherq.Settings`.

    Returns: nothing.

    Errors: a name another plugin registered stops start-up unless you pass `replace=True`; so does an object
    that is not an `Executor` (no `execute`) or has a bad `own_threads`.

    Runs in: every process that loads plugins: workers (each process of `gopherq run`), `gopherq web` and
    `gopherq api`, clients (`Client`, `AsyncClient`, `App`) and the CLI commands that make one, `gopherq plugins`,
    `gopherq config`, and the test kit (`PluginHarness`, `gopherq_queue`).
    """


@hookspec
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    """Register event sinks.

    Called when: once per process that feeds sinks (see below), after the executors.

    Arguments: `register`, a `RegisterSink`: call `register(name, sink, **config.register_kwargs())` for each
    enabled sink, where `config` is your `gopherq.SinkSettings` table, and register nothing when it is disabled:
    an event no sink wants is never even built; `settings`, the effective `gopherq.Settings`. Each sink gets its
    own bounded buffer and its own task, so a slow or failing sink never slows the worker; what it drops or fails
    on is counted and logged.

    Returns: nothing.

    Errors: a name already registered stops start-up unless you pass `replace=True`; so do a sink without
    `handle(events)` and a `buffer_size` or `batch_size` below 1.

    Runs in: workers; `gopherq web` (the dashboard's requeue and cancel emit `task.requeued` and
    `task.cancelled`); clients created with `sinks=True`, such as those of `gopherq dlq requeue` and
    `gopherq cancel`; `gopherq plugins`; and the test kit (`PluginHarness.deliver`, `gopherq_queue`).
    """


@hookspec
def gopherq_register_commands(cli: Any) -> None:
    """Add commands to the `gopherq` CLI.

    Called when: the `gopherq` program starts, before its arguments are parsed, so keep the hook's imports light;
    not when the command line names a built-in command (those start without loading any plugin).

    Arguments: `cli`, the top-level click group: decorate functions with `@cli.command()` (or add a group).

    Returns: nothing.

    Errors: taking the name of a built-in or another plugin's command stops the program with an error naming the
    plugin.

    Runs in: the `gopherq` program, when it runs a command that is not built-in or prints its help (and
    `gopherq plugins`, which lists the commands).
    """


@hookspec
def gopherq_startup(worker: WorkerView) -> Any:
    """The worker is connected and its executors are open; it is about to fetch its first task.

    Called when: once per worker, after every executor's `open()`, before the first claim.

    Arguments: `worker`, a `WorkerView` (its id, queue, settings, counters, running attempts and event bus).

    Returns: None or an awaitable, which the worker awaits before fetching.

    Errors: an exception here is logged and does not stop the worker or the other plugins' hooks.

    Runs in: workers only (each process of `gopherq run`, and the test kit's `gopherq_queue.worker`), in the
    worker's event loop.
    """


@hookspec
def gopherq_shutdown(worker: WorkerView) -> Any:
    """The worker has finished (or put back) its tasks and closed its executors, and is about to exit.

    Called when: once per worker, after every executor's `close()`, before the sinks are drained.

    Arguments: `worker`, the same `WorkerView` as at start-up.

    Returns: None or an awaitable, which is awaited before the sinks are drained.

    Errors: an exception here is logged and does not stop the other plugins' hooks.

    Runs in: workers only, in the worker's event loop.
    """


@hookspec
def gopherq_register_hooks(register: RegisterHooks, settings: Settings) -> None:
    """Add hook implementations that depend on the settings.

    Called when: once per process, right after the settings are validated (before the executors are registered).

    Arguments: `register`, a `RegisterHooks`: `register(obj)` adds `obj`'s hooks as if your plugin's module had
    them; `settings`, the effective `gopherq.Settings`. The hooks below that run per task
    (`gopherq_before_enqueue`, `gopherq_wrap_attempt`) cost nothing at all when no plugin implements them: the
    core skips them entirely. Implement them on an object registered here only when your settings enable them,
    so a disabled plugin keeps that cost at zero. (`gopherq_register_settings` and this hook are not called again
    for what is added.)

    Returns: nothing.

    Errors: an exception stops start-up, naming the plugin, like the other registration hooks.

    Runs in: every process that loads plugins, once, right after the settings are validated (before the
    executors are registered).
    """


@hookspec
def gopherq_before_enqueue(
    task: Task, queue: str, origin: str, carrier: Mapping[str, str] | None, parent: Task | None
) -> None:
    """A task is about to be enqueued in `queue`: fill in what your plugin adds to envelopes (e.g. `task.trace`).

    Called when: once per task, before the task is validated and encoded: in a client (`origin` "client":
    `enqueue`, `enqueue_many`, `enqueue_raw`, `.delay()`), the HTTP API ("api"), the command line ("cli"), a
    worker's scheduler ("schedule": each run of a periodic task) and a worker that enqueues a task's follow-up
    ("callback", e.g. `on_success`).

    Arguments: `task`, the task to change in place; `queue`, where it goes; `origin` (above); `carrier`, what came
    with the producer's request: the API's request headers (a case-insensitive mapping), otherwise None (the
    command line leaves the environment to the plugin); `parent`, the task whose end enqueued this one
    (callbacks), else None.

    Returns: nothing; change `task` in place. A `trace` you set is checked like a producer's (a bad one is
    dropped).

    Errors: an exception is logged and the task is enqueued as it was: a plugin here must never cost a task.

    Runs in: producers: clients (`Client`, `AsyncClient`, `App`), `gopherq enqueue`, `gopherq api` and
    `gopherq web` (the `/v1` API), and workers (schedules and callbacks).
    """


@hookspec
def gopherq_wrap_attempt(run: AttemptRunner, settings: Settings) -> AttemptRunner | None:
    """Wrap every attempt a worker runs.

    Called when: once per worker process, before its first attempt (not per task); each plugin wraps the runner
    of the plugins before it.

    Arguments: `run`, the `AttemptRunner` to wrap, a function `(entry, task, context)` that returns an awaitable
    of the attempt's `AttemptOutcome`; `entry` is the task type's registered executor (`entry.name`,
    `entry.executor`, and `entry.runs_application_code`: False when the executor declares that its attempts run
    no application code, see `RunsApplicationCode`); `settings`, the effective `gopherq.Settings`.

    Returns: an async function with `run`'s signature that awaits `run(entry, task, context)` and returns its
    outcome, or None to wrap nothing. (A plain function that returns `run(entry, task, context)` itself, unawaited,
    when it has nothing to do after the attempt, is a wrapper too, and costs the attempt no frame.) The wrapper
    runs in the attempt's own asyncio task, so what it makes current (a context variable, e.g. a span) is current
    while the executor runs, in a sync executor's thread too. It may set `context.calls` to observe the
    executor's outgoing calls, or `context.call_headers` to add the same headers to each of them unobserved (see
    core/calls.py), and add to `context.event_data` after `run` returns.

    Errors: cancellation (a time limit, `cancel`, shutdown) arrives as `asyncio.CancelledError` and must
    propagate. Any other exception escaping the wrapper fails the attempt (reason `exception`).

    Runs in: workers only (each process of `gopherq run`), in the worker's event loop.
    """


@hookspec
def gopherq_task_links(task: TaskInfo, settings: Settings) -> list[tuple[str, str]] | None:
    """Links the dashboard's task page shows for a task (e.g. to its trace in a tracing UI).

    Called when: each time a task page is rendered.

    Arguments: `task`, the page's `TaskInfo` (`task.trace_id` is the task's trace id when it has one);
    `settings`, the effective `gopherq.Settings`.

    Returns: a list of (label, url), or None.

    Errors: an exception is logged and the page is shown without your links.

    Runs in: `gopherq web` only, each time it renders a task page.
    """
