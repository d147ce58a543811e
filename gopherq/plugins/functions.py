"""The built-in `functions` plugin: runs Python functions registered with `@app.task` as tasks of type `function`.

`[plugins.functions] modules = ["myapp.tasks"]` lists the modules a worker imports at start-up (their `@app.task`
decorators register the functions); only registered functions run, so a task cannot name an arbitrary callable.
`serializer` replaces the JSON serializer of arguments and results (see gopherq.functions). `async def`
functions are awaited; plain ones run in a thread pool, so a slow one never blocks the worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import os
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gopherq import (
    ConfigError,
    ExecutionContext,
    PermanentFailure,
    PluginSettings,
    RegisterExecutor,
    RegisterSettings,
    Settings,
    Task,
    hookimpl,
)
from gopherq.canvas import parent_values
from gopherq.functions import FUNCTION_TYPE, REGISTRY, Serializer, resolve_serializer


class FunctionsSettings(PluginSettings):
    """`[plugins.functions]`: where the worker finds the functions, and how values travel."""

    modules: list[str] = Field(default_factory=list, description="modules imported at start-up (they register tasks)")
    serializer: str = Field("json", description='"json" or "package.module:object" with dumps() and loads()')


class FunctionPayload(BaseModel):
    """The fields of a `function` task."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(description='the registered function, "module:qualname"')
    args: Any = Field(default_factory=list, description="the serialised positional arguments")
    kwargs: Any = Field(default_factory=dict, description="the serialised keyword arguments")
    immutable: bool = Field(False, description="in a flow: run without its parents' results as first argument")


class FunctionExecutor:
    """Runs `function` tasks: looks the function up, decodes the arguments, calls it, encodes the result."""

    payload_model = FunctionPayload

    def __init__(self, settings: FunctionsSettings) -> None:
        self.settings = settings
        self.serializer: Serializer | None = None

    async def open(self) -> None:
        """Import the function modules and the serializer; either failing stops start-up with one line.

        The worker's working directory is importable, as in Celery: `modules = ["myapp.tasks"]` finds
        `./myapp/tasks.py` of the directory the worker was started from (appended to `sys.path`, so a local file
        never hides an installed package of the same name)."""
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.append(cwd)
        try:
            self.serializer = resolve_serializer(self.settings.serializer)
        except Exception as exc:
            raise ConfigError(f"plugins.functions.serializer: {type(exc).__name__}: {exc}{_where(exc)}") from None
        for module in self.settings.modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # an import can raise anything
                raise ConfigError(
                    f"plugins.functions.modules: cannot import {module!r}: {type(exc).__name__}: {exc}{_where(exc)}"
                ) from None

    async def execute(self, task: Task, context: ExecutionContext) -> Any:
        payload: FunctionPayload = task.payload
        serializer = self.serializer or resolve_serializer(self.settings.serializer)
        registered = REGISTRY.get(payload.function)
        if registered is None:
            known = ", ".join(sorted(REGISTRY)) or "none (list their modules in [plugins.functions] modules)"
            raise PermanentFailure(
                f"no function {payload.function!r} is registered (registered: {known})", reason="unknown_function"
            )
        try:
            args = [serializer.loads(value) for value in payload.args]
            kwargs = {name: serializer.loads(value) for name, value in payload.kwargs.items()}
            if context.flow_inputs is not None and not payload.immutable:  # a flow step: its parents' results first
                args.insert(0, serializer.loads(parent_values(context.flow_inputs)))
        except Exception as exc:
            raise PermanentFailure(f"cannot decode the arguments: {exc}", reason="bad_arguments") from None
        if registered.is_async:
            result = await registered.func(*args, **kwargs)
        else:
            # In the attempt's context, so a span a plugin made current is the parent of the function's own spans.
            call = functools.partial(contextvars.copy_context().run, registered.func, *args, **kwargs)
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        try:
            return serializer.dumps(result)
        except (TypeError, ValueError) as exc:
            raise PermanentFailure(
                f"the result of {payload.function} cannot be serialised: {exc}", reason="bad_result"
            ) from None


def _where(exc: Exception) -> str:
    """For a module that is not found: where the worker looked, and what to do about it."""
    if not isinstance(exc, ModuleNotFoundError):
        return ""
    return (
        f" (a worker imports from its working directory, {os.getcwd()}, and the installed packages: start it from"
        " the directory that holds the module, or pip install your project into the worker's environment)"
    )


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(FunctionsSettings)


@hookimpl
def gopherq_register_executors(register: RegisterExecutor, settings: Settings) -> None:
    register(FUNCTION_TYPE, FunctionExecutor(settings.plugin("functions")))
