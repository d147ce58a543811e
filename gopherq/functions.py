"""Python functions as tasks: `app = gopherq.App(...)`, `@app.task`, `.enqueue(...)`/`.delay(...)` returning a
handle whose `.result(timeout)` is the function's return value. The worker side is the built-in `functions`
plugin (gopherq.plugins.functions), which runs the registered functions as tasks of type `function`.

Arguments and results travel through a serializer: JSON by default (no pickle: a queue must never execute what a
producer smuggles in), replaceable with `[plugins.functions] serializer = "package.module:object"` or
`App(serializer=...)`. Arguments it cannot encode are refused at enqueue time with the argument named.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from gopherq.canvas import Signature, signature
from gopherq.client import AsyncClient, Client
from gopherq.core.errors import GoPherQError, TaskRejected
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.results import TaskResult
from gopherq.core.settings import Settings, load_settings
from gopherq.core.task import TaskStatus

P = ParamSpec("P")
R = TypeVar("R")

#: The task type of function tasks.
FUNCTION_TYPE = "function"


class Serializer(Protocol):
    """Turns arguments and results into JSON-ready values and back. `dumps` raises TypeError or ValueError for
    what it cannot encode."""

    def dumps(self, value: Any) -> Any: ...

    def loads(self, data: Any) -> Any: ...


class JsonSerializer:
    """The default: plain JSON values (None, bool, int, float, str, list, dict with string keys) travel as they
    are; anything else is refused (tuples become lists)."""

    def dumps(self, value: Any) -> Any:
        json.dumps(value, allow_nan=False)  # raises TypeError/ValueError naming the type it cannot encode
        return value

    def loads(self, data: Any) -> Any:
        return data


def resolve_serializer(spec: str) -> Serializer:
    """ "json", or "package.module:object" (an object, or a class instantiated without arguments)."""
    if spec == "json":
        return JsonSerializer()
    module_name, sep, name = spec.partition(":")
    if not sep:
        raise GoPherQError(f'serializer {spec!r}: use "json" or "package.module:object"')
    target: Any = getattr(importlib.import_module(module_name), name)
    serializer = target() if isinstance(target, type) else target
    if not callable(getattr(serializer, "dumps", None)) or not callable(getattr(serializer, "loads", None)):
        raise GoPherQError(f"serializer {spec!r} has no dumps() and loads()")
    return serializer  # type: ignore[no-any-return]


class TaskFailed(GoPherQError):
    """A function task ended without a value: it is dead (dead-lettered) or was cancelled. `record` says why."""

    def __init__(self, record: TaskResult) -> None:
        self.record = record
        error = f": {record.error.reason}: {record.error.message}" if record.error else ""
        ended = "was cancelled" if record.status is TaskStatus.CANCELLED else f"is {record.status.value}"
        super().__init__(f"task {record.id} {ended}{error}")


#: Every function registered with `@app.task` in this process, by name; the worker runs only these.
REGISTRY: dict[str, TaskFunction[..., Any]] = {}


def function_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}:{func.__qualname__}"


class Handle(Generic[R]):
    """An enqueued function task: its `id`, and its return value once it has one."""

    def __init__(self, app: App, task_id: str, queue: str | None, duplicate: bool = False) -> None:
        self.app = app
        self.id = task_id
        self.queue = queue
        #: True when the task was unique and an identical one was already waiting: this is that one.
        self.duplicate = duplicate

    def result(self, timeout: float = 30.0) -> R:
        """Wait up to `timeout` seconds for the task to finish; its return value, or TaskFailed, or TimeoutError."""
        return self._value(self.app.client.wait(self.id, timeout, self.queue), timeout)

    async def aresult(self, timeout: float = 30.0) -> R:
        async with self.app.async_client() as client:
            return self._value(await client.wait(self.id, timeout, self.queue), timeout)

    def _value(self, record: TaskResult | None, timeout: float) -> R:
        if record is None or not record.status.final:
            raise TimeoutError(f"task {self.id} did not finish within {timeout}s")
        if record.status is not TaskStatus.SUCCEEDED:
            raise TaskFailed(record)
        return self.app.serializer.loads(record.result)  # type: ignore[no-any-return]


class TaskFunction(Generic[P, R]):
    """A function registered as a task. Calling it runs it here; `enqueue`/`delay` send it to a worker."""

    def __init__(self, app: App, func: Callable[P, R] | Callable[P, Awaitable[R]], options: dict[str, Any]) -> None:
        self.app = app
        self.func = func
        self.name = function_name(func)
        self.options = options
        self.is_async = asyncio.iscoroutinefunction(func)
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.func(*args, **kwargs)

    def build(self, args: tuple[Any, ...], kwargs: dict[str, Any], control: dict[str, Any]) -> dict[str, Any]:
        """The task's fields and control options; TaskRejected naming the argument that cannot be serialised."""
        serializer = self.app.serializer
        encoded_args = []
        for index, value in enumerate(args):
            encoded_args.append(self._encode(serializer, value, f"argument {index + 1}"))
        encoded_kwargs = {name: self._encode(serializer, value, f"argument {name!r}") for name, value in kwargs.items()}
        return {**self.options, **control, "function": self.name, "args": encoded_args, "kwargs": encoded_kwargs}

    def _encode(self, serializer: Serializer, value: Any, what: str) -> Any:
        try:
            return serializer.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TaskRejected(
                "schema_invalid", f"{what} of {self.name} cannot be serialised ({type(value).__name__}): {exc}"
            ) from None

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Handle[R]:
        """Send a call to a worker; returns its handle. Control options: `.with_options(...)`."""
        return self.with_options().enqueue(*args, **kwargs)

    delay = enqueue

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Handle[R]:
        return await self.with_options().aenqueue(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call for a flow (gopherq/canvas.py): when it runs, its parents' results come first
        in its arguments (a chain step: its parent's value; a join: the list of its parents' values)."""
        return signature(self, args, kwargs, immutable=False)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it runs with exactly these arguments, its parents' results are not added."""
        return signature(self, args, kwargs, immutable=True)

    def with_options(self, **control: Any) -> BoundCall[P, R]:
        """A call with control options for this enqueue only (priority, delay, unique_for, max_attempts...)."""
        return BoundCall(self, control)


class BoundCall(Generic[P, R]):
    """`fn.with_options(priority="high").enqueue(...)`."""

    def __init__(self, function: TaskFunction[P, R], control: dict[str, Any]) -> None:
        self.function = function
        self.control = control

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Handle[R]:
        app = self.function.app
        fields = self.function.build(args, kwargs, self.control)
        [outcome] = app.client.submit([app.client.task(FUNCTION_TYPE, **fields)])
        return Handle(app, outcome.id, fields.get("queue"), outcome.duplicate)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Handle[R]:
        app = self.function.app
        fields = self.function.build(args, kwargs, self.control)
        async with app.async_client() as client:
            [outcome] = await client.submit([client.task(FUNCTION_TYPE, **fields)])
        return Handle(app, outcome.id, fields.get("queue"), outcome.duplicate)


class TaskDecorator(Protocol):
    """What `@app.task(...)` with options returns: a decorator typed like `@app.task` itself."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> TaskFunction[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> TaskFunction[P, R]: ...


class App:
    """Registers functions as tasks and enqueues them. `App(config="gopherq.toml")`, `App(settings)`, or `App()`
    (settings from the environment). Workers find the functions by importing the modules listed in
    `[plugins.functions] modules`; the module that defines them must create an App and decorate them."""

    def __init__(
        self, settings: Settings | None = None, *, config: str | None = None, serializer: Serializer | None = None
    ) -> None:
        self._settings = settings
        self._config = config
        self._serializer = serializer
        self._client: Client | None = None
        self._plugins: PluginManager | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self._config)
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        """Point the app at other settings (e.g. a test's), before its first enqueue."""
        self._settings = value

    @property
    def serializer(self) -> Serializer:
        if self._serializer is None:
            table = self.settings.plugin_table("functions")
            self._serializer = resolve_serializer(str(table.get("serializer", "json")))
        return self._serializer

    @property
    def client(self) -> Client:
        """A synchronous client, made on first use (close it with `app.close()`)."""
        if self._client is None:
            self._client = Client(self.settings)
        return self._client

    def async_client(self) -> AsyncClient:
        """A new async client (use it with `async with`); the plugins that validate tasks are loaded once."""
        if self._plugins is None:
            self._plugins = load_plugins(self.settings)
        return AsyncClient(self.settings, plugins=self._plugins)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @overload
    def task(self, func: Callable[P, Awaitable[R]], /) -> TaskFunction[P, R]: ...

    @overload
    def task(self, func: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(self, /, **options: Any) -> TaskDecorator: ...

    def task(self, func: Any = None, /, **options: Any) -> Any:
        """Register `func` as a task: `@app.task`, or `@app.task(queue=..., priority=..., max_attempts=...)` with
        default control options for its enqueues."""

        def register(target: Callable[..., Any]) -> TaskFunction[..., Any]:
            wrapped: TaskFunction[..., Any] = TaskFunction(self, target, options)
            REGISTRY[wrapped.name] = wrapped
            return wrapped

        return register(func) if func is not None else register
