"""What the `otel` plugin's own code costs per attempt, without I/O: the worker's attempt runner (wrapped by the
plugin, or not) around an executor that uses `context.calls` as the `http` executor does (one call: begin,
propagate into its headers, answered; or `context.call_headers` added to them) and suspends four times, as an
HTTP attempt does. Each variant runs in a process of its own (OpenTelemetry allows one tracer provider per
process), in turns; the figure is the best of 7 passes of CPU time per attempt, so it says what the code costs
with warm caches (a real worker, with 100 tasks in flight, pays a few times more for the same code).

    python -m bench.attempt_cost [--attempts 10000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from typing import Any

VARIANTS = ("off", "0.01", "1.0")


class CallingExecutor:
    """Uses `context.calls` as the `http` executor does, without a request (and, like it, runs no application
    code: `runs_application_code = False`)."""

    runs_application_code = False

    async def execute(self, task: Any, context: Any) -> dict[str, int]:
        if context.calls is None:
            return await self._call(task, context, None)
        with context.calls.begin("http", "GET", task.fields["url"]) as call:
            return await self._call(task, context, call)

    async def _call(self, task: Any, context: Any, call: Any) -> dict[str, int]:
        headers = {"Idempotency-Key": task.id, "User-Agent": "gopherq"}
        if call is not None:
            call.propagate(headers)
        elif context.call_headers is not None:  # a sampled-out attempt's (the task sets none of its own)
            headers.update(context.call_headers)
        for _ in range(4):
            await asyncio.sleep(0)
        if call is not None:
            call.answered(200)
        return {"status": 200}


async def measure(variant: str, attempts: int) -> float:
    """Best CPU µs per attempt of 7 passes, with tracing off or at the sample ratio `variant`."""
    from gopherq.core.executor import ExecutionContext, ExecutorEntry
    from gopherq.core.plugins import load_plugins
    from gopherq.core.settings import load_settings
    from gopherq.core.task import Task

    otel = {"enabled": True, "exporter": "none", "sample_ratio": float(variant)} if variant != "off" else {}
    plugins = load_plugins(load_settings(overrides={"plugins": {"otel": otel}} if otel else None))
    run = plugins.run_attempt
    entry = ExecutorEntry("http", CallingExecutor(), "bench")
    log = logging.LoggerAdapter(logging.getLogger("bench"), {})
    passes = []
    for n in range(7):
        tasks = [Task(id=f"t{n}-{i}", fields={"url": f"http://127.0.0.1:8080/r{n}/{i}"}) for i in range(attempts)]
        contexts = [ExecutionContext("w1", "bench", 1, 3, 30.0, None, log) for _ in range(attempts)]
        started = time.process_time()
        for task, context in zip(tasks, contexts, strict=True):
            await run(entry, task, context)
        passes.append((time.process_time() - started) / attempts * 1e6)
    return min(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement, in a process of its own
    args = parser.parse_args()
    if args.variant:
        print(asyncio.run(measure(args.variant, args.attempts)))
        return
    found: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            argv = [sys.executable, "-m", "bench.attempt_cost", "--variant", variant, "--attempts", str(args.attempts)]
            found[variant].append(float(subprocess.run(argv, check=True, capture_output=True, text=True).stdout))
    off = min(found["off"])
    print("| variant | CPU per attempt (µs), best | the plugin's own |")
    print("|---|---:|---:|")
    for variant, values in found.items():
        label = "tracing off" if variant == "off" else f"tracing on, {float(variant):.0%}"
        print(f"| {label} | {min(values):.2f} | {min(values) - off:+.2f} |")


if __name__ == "__main__":
    main()
