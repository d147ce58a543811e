"""A GoPherQ executor that runs an importable Python callable: task type `pycall`.

A task names the callable as "module:qualname" and gives its arguments:

    {"type": "pycall", "function": "myapp.jobs:resize", "args": [42], "kwargs": {"width": 640}}

The task's result is the callable's return value, which must be JSON-serialisable. `async def` callables are
awaited. Plain ones run in a thread by default, so a slow one cannot block the worker; with
`[plugins.pycall] threads = false` they run inline on the event loop instead, which is faster for tiny
functions and wrong for anything that blocks.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

from gopherq import (
    ExecutionContext,
    PermanentFailure,
    PluginSettings,
    RegisterExecutor,
    RegisterSettings,
    Settings,
    Task,
    hookimpl,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

__version__ = "0.1.0"


class PycallSettings(PluginSettings):
    """`[plugins.pycall]`: how plain (non-async) callables run."""

    threads: bool = Field(True, description="run plain callables in a thread (false: inline, for tiny functions)")


class PycallPayload(BaseModel):
    """The fields of a `pycall` task."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(description='the callable, as "module:qualname"')
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _module_and_name(cls, value: str) -> str:
        module, sep, name = value.partition(":")
        if not sep or not module or not name:
            raise ValueError('must be "module:qualname", e.g. "os.path:join"')
        return value


def resolve(spec: str) -> Callable[..., Any]:
    """Import "module:qualname" and return the callable it names; PermanentFailure when it cannot."""
    module_name, _, qualname = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception as exc:  # an import can raise anything; none of it is fixed by retrying
        raise PermanentFailure(f"cannot load {spec}: {type(exc).__name__}: {exc}", reason="bad_function") from None
    if not callable(target):
        raise PermanentFailure(f"{spec} is not callable", reason="bad_function")
    return target  # type: ignore[no-any-return]


def check_json(spec: str, value: Any) -> Any:
    """Return `value` when JSON can represent it; a clear PermanentFailure otherwise."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PermanentFailure(f"the result of {spec} is not JSON-serialisable: {exc}", reason="bad_result") from None
    return value


class PycallExecutor:
    """Runs `pycall` tasks. Resolved callables are cached, so each is imported once per worker."""

    payload_model = PycallPayload

    def __init__(self, settings: PycallSettings) -> None:
        self.threads = settings.threads
        #: name -> (callable, whether it is a coroutine function): both found once (inspect's check is not free).
        self._cache: dict[str, tuple[Callable[..., Any], bool]] = {}

    async def execute(self, task: Task, context: ExecutionContext) -> Any:
        payload: PycallPayload = task.payload
        found = self._cache.get(payload.function)
        if found is None:
            func = resolve(payload.function)
            found = self._cache[payload.function] = (func, inspect.iscoroutinefunction(func))
        func, is_async = found
        if is_async:
            result = await func(*payload.args, **payload.kwargs)
        elif self.threads:
            call = functools.partial(func, *payload.args, **payload.kwargs)
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        else:
            result = func(*payload.args, **payload.kwargs)
        if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
            result = await result
        return check_json(payload.function, result)


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(PycallSettings)


@hookimpl
def gopherq_register_executors(register: RegisterExecutor, settings: Settings) -> None:
    register("pycall", PycallExecutor(settings.plugin("pycall")))
