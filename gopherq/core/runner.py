"""Running a worker process: logging set-up, the event loop (uvloop when installed), Redis, signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from gopherq.core.cancellation import cancel_and_wait
from gopherq.core.connection import RedisConnection, describe_target
from gopherq.core.loglines import EscapingFormatter, LineHandler
from gopherq.core.masking import Masker, MaskingFilter
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.settings import Settings
from gopherq.core.supervisor import Supervisor
from gopherq.core.worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a finished main coroutine's leftover tasks have to end before the loop closes without them.
LEFT_TASKS_TIMEOUT = 5.0


#: The format of every gopherq process's log lines: each record is one line starting with this prefix.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, masker: Masker | None = None) -> None:
    """One stderr handler for the gopherq loggers, masking secrets in URLs and escaping control characters, so
    text from producers can neither leak a secret nor forge a line (the process may configure others as it
    likes)."""
    logger = logging.getLogger("gopherq")
    if not logger.handlers:
        handler = LineHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(LOG_FORMAT))
        handler.addFilter(_MASKING)
        logger.addHandler(handler)
    if masker is not None:
        _MASKING.masker = masker
    logger.setLevel(level)


#: The filter of the handler configure_logging installs; its masker follows the latest settings.
_MASKING = MaskingFilter(Masker())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when the `fast` extra is installed (faster I/O), asyncio's otherwise."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_on_fast_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a long-lived process's main coroutine (a worker, `gopherq web`, `gopherq api`) on `new_event_loop()`,
    then, as asyncio.run does, cancel and await what is left and close the loop."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        left = asyncio.all_tasks(loop)
        if left:  # bounded, and asking again: a cancellation can be lost (core.cancellation)
            loop.run_until_complete(cancel_and_wait(left, LEFT_TASKS_TIMEOUT))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def serve(settings: Settings, plugins: PluginManager, worker_id: str | None = None) -> Worker:
    """Connect, run a worker until it is told to stop, and release Redis."""
    connection = RedisConnection(settings, "worker")
    log.info("connecting to Redis: %s", describe_target(settings))
    redis = await connection.open()
    try:
        worker = Worker(settings, plugins, redis, worker_id)
        worker.install_signal_handlers()
        await worker.run()
        return worker
    finally:
        await connection.close()


def run_worker(settings: Settings, extra_plugins: dict[str, Any] | None = None) -> int:
    """Run the worker in the foreground (a supervisor of `worker.processes` children when that is > 1);
    returns the exit status."""
    if settings.worker.processes > 1:
        return Supervisor(settings, extra_plugins).run()
    plugins = load_plugins(settings, extra=extra_plugins, sinks=True)
    quiet_garbage_collector()
    run_on_fast_loop(serve(settings, plugins))
    exit_without_waiting_for_stuck_threads()
    return 0


#: Container allocations between two youngest-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


#: The same for the web server. The HTTP API holds whole batches of tasks in flight (validated, waiting for Redis),
#: and every object alive at a young collection is walked, then walked again by the middle generation's: with
#: 10,000 the collector took a quarter of the server's CPU at 30,000 tasks/s in batches. How much it walks per
#: pass is bounded by what is in flight, not by the threshold, so a larger threshold means fewer passes that each
#: cost about the same.
WEB_GC_YOUNG_THRESHOLD = 100_000


def quiet_garbage_collector(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Tune the cyclic garbage collector for a long-running worker, once start-up is done.

    Every task allocates a handful of container objects (its coroutine, asyncio task, dicts), so with the default
    threshold the collector runs every few dozen tasks, and each older-generation pass walks the hundreds of
    thousands of objects left by the imports. Freezing those (they live as long as the process) takes them out of
    every pass, and a young threshold of 10,000 makes the passes rarer; together they cut the worker's CPU per
    no-op task by about a quarter. Garbage cycles are still collected, only in larger batches: memory stays flat
    (the 1M-task soak in docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def exit_without_waiting_for_stuck_threads() -> None:
    """A synchronous executor cancelled at shutdown keeps running in its thread, and the interpreter would wait for
    it at exit, past shutdown_timeout. Its task is already back in the queue: exit now instead."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    deadline = time.monotonic() + 0.5  # idle pool threads end at once (loop.close() shut the pool down)
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in others if t.is_alive()]
    if stuck:
        log.warning(
            "%d executor threads are still running; exiting without waiting (their tasks were put back)", len(stuck)
        )
        logging.shutdown()
        os._exit(0)
