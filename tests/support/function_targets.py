"""Functions registered as tasks, imported by the worker through `[plugins.functions] modules` in test_functions."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import gopherq

app = gopherq.App()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(max_attempts=1)
async def describe(name: str, *, tags: list[str] | None = None, nested: dict[str, Any] | None = None) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"name": name, "tags": tags or [], "nested": nested, "thread": threading.current_thread().name}


@app.task(max_attempts=1)
def thread_name() -> str:
    return threading.current_thread().name


@app.task(max_attempts=1)
def returns_a_set() -> Any:
    return {1, 2}


@app.task(max_attempts=1)
def fails(message: str) -> None:
    raise ValueError(message)


@app.task(max_attempts=1)
def traced_sync(value: str) -> str:
    """Opens a span of its own (the otel tests check it nests under the attempt's span)."""
    from opentelemetry import trace

    trace.get_current_span().set_attribute("user.note", value)  # on the attempt's span
    with trace.get_tracer("tests").start_as_current_span("user work"):
        return value


@app.task(max_attempts=1)
async def traced_async(value: str) -> str:
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("user work"):
        await asyncio.sleep(0)
        return value


@app.task(max_attempts=1)
def current_trace() -> list[Any]:
    """The trace id and sampled flag of the span current while the function runs (and of a span it opens)."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("user work") as own:
        found = trace.get_current_span().get_span_context()
        return [format(found.trace_id, "032x"), found.trace_flags.sampled, own.is_recording()]
