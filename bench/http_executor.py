"""`python -m bench.http_executor`: the HTTP executor's own CPU per task, without Redis or the worker around it.

The worker's CPU per HTTP task (bench.instructions_tracing, the py-spy profile by layer) mixes the queue core with
the HTTP client; this isolates the executor: `--tasks` GET tasks to a local nginx (bench/nginx.conf) run through
`ExecutorEntry.validate` and `run_attempt`, as the worker runs them, `--concurrency` at a time in one uvloop
(when installed) event loop, and the process's CPU time (`time.process_time()`, which other jobs on the machine
move little) is divided by the tasks. The best of `--rounds` rounds is kept; `--profile` prints cProfile's top
functions of one more round instead (tottime), to see which layer a change moved.

    python -m bench.http_executor [--tasks 20000] [--concurrency 100] [--rounds 5]
                                  [--transport native|aiohttp|httpx] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gopherq.core.executor import ExecutionContext, ExecutorEntry, run_attempt
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpSettings

_LOG = logging.LoggerAdapter(logging.getLogger("bench"), {})


def _context() -> ExecutionContext:
    return ExecutionContext(
        worker_id="bench",
        queue="q",
        attempt=1,
        max_attempts=3,
        timeout=30.0,
        deadline=None,
        log=_LOG,
    )


async def _round(executor: HttpExecutor, url: str, tasks: int, concurrency: int) -> float:
    """CPU seconds per task over `tasks` attempts, `concurrency` in flight."""
    entry = ExecutorEntry("http", executor, "http")
    ids = iter(range(tasks))
    failures = 0

    async def lane() -> None:
        nonlocal failures
        for i in ids:
            task = task_from_dict({"id": f"t{i}", "type": "http", "url": f"{url}/t/{i}"})
            entry.validate(task)
            outcome = await run_attempt(entry, task, _context(), enforce_timeout=False)  # as the worker runs it
            failures += outcome.failure is not None

    started = time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    spent = time.process_time() - started
    if failures:
        raise SystemExit(f"{failures} of {tasks} attempts failed")
    return spent / tasks


async def _main(args: argparse.Namespace, url: str) -> None:
    executor = HttpExecutor(HttpSettings(transport=args.transport), concurrency=args.concurrency)
    await executor.open()
    try:
        await _round(executor, url, min(args.tasks, 2000), args.concurrency)  # warm: imports, caches, the pool
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            figure = await _round(executor, url, args.tasks, args.concurrency)
            profiler.disable()
            print(f"{figure * 1e6:.1f} µs per task under cProfile")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(45)
            return
        figures = [await _round(executor, url, args.tasks, args.concurrency) for _ in range(args.rounds)]
        shown = ", ".join(f"{f * 1e6:.1f}" for f in figures)
        print(f"{args.transport}: best {min(figures) * 1e6:.1f} µs CPU per task ({shown}; {args.tasks:,} tasks each)")
    finally:
        await executor.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_executor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transport", default="aiohttp", choices=("native", "aiohttp", "httpx"))
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions instead")
    args = parser.parse_args()
    from bench.services import HttpTarget

    with tempfile.TemporaryDirectory(prefix="gopherq-http-executor-") as tmp:
        target = HttpTarget(Path(tmp), allow_fallback=False).start()
        try:
            runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                pass
            runner(_main(args, target.url))
        finally:
            target.stop()


if __name__ == "__main__":
    main()
