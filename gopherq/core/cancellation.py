"""Stopping asyncio tasks when a cancellation can be lost on its way.

On Python before 3.12, `asyncio.wait_for` returns its inner result, and drops a cancellation of the caller, when the
inner await finishes in the same turn of the loop as the cancel arrives. redis-py goes through `wait_for` to write
every command of a connection with a `socket_timeout` (as every GoPherQ connection has), so a loop that talks to
Redis can swallow a single `cancel()` and run on, asleep in its next `asyncio.sleep` (seen here: one shutdown in
three of a worker whose maintenance loop was promoting due tasks kept that loop alive until its 3 s bound). Asking
once is not enough; asking again after the cancelled task has had time to react is, as the next cancel lands at
its next await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

#: How long a cancelled task has to end (its cleanup included) before it is asked again.
RECANCEL_AFTER = 0.25


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout: float, recancel_after: float = RECANCEL_AFTER
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait up to `timeout` seconds for them to end, cancelling each one still running again
    every `recancel_after` seconds. Returns those still running at the end (empty when all ended)."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while pending:
        left = until - loop.time()
        if left <= 0:
            break
        _done, pending = await asyncio.wait(pending, timeout=min(left, recancel_after))
        for task in pending:
            task.cancel()
    return pending


def awaiting_at(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: its chain of awaits, outermost first, as `function:line` (the frames
    `Task.get_stack` leaves out), so a task that outlived its cancellation can be found from one log line."""
    places: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(places) < 12:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            places.append(type(awaited).__qualname__)  # a future, or an awaitable written in C
            break
        places.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return " > ".join(places) or "?"
