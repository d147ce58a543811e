"""What the built-in `logging` sink costs a worker per event and per task: CPU time (`time.process_time()`, which
counts this process's own work only, so other jobs on the machine change it little) of 100,000 events emitted as a
worker emits an HTTP task's three (`task.dequeued`, `task.started` with its queue wait, `task.succeeded` with its
duration, status and host, already in the stream), through the real event bus, the real sink and the handler
`configure_logging` installs in every worker (masking filter, escaping formatter), writing to /dev/null.

Variants, each in a process of its own, in turns: `none` (logging at WARNING: the sink is not registered), `null`
(a sink that does nothing: the bus's own share), `text` and `json` (the sink at INFO, each format). The figure is
the best pass of each variant; the sink's cost is the variant's minus `none`'s. `--before DIR` runs the same
variants against the `gopherq` package in DIR too (e.g. `git archive <rev> gopherq | tar -x -C DIR`).

    python -m bench.logcost [--events 100000] [--rounds 3] [--before DIR] [--to FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

VARIANTS = ("none", "null", "text", "json")
#: Events per task of an HTTP drain with the shipped `[plugins.logging] events` (`task.*`, `worker.*`).
EVENTS_PER_TASK = 3


class NullSink:
    """Takes every batch and does nothing with it."""

    async def handle(self, events: list[Any]) -> None:
        return None


async def measure(variant: str, events: int, passes: int) -> float:
    """Best CPU µs per event of `passes` passes of `events` events each."""
    from gopherq.core.events import EventBus
    from gopherq.core.masking import Masker
    from gopherq.core.runner import configure_logging
    from gopherq.plugins.logging_sink import LoggingSink, LoggingSinkSettings

    configure_logging("WARNING" if variant in ("none", "null") else "INFO")
    bus = EventBus()
    bus.masker = Masker()
    bus.defaults = {"worker": "host-1234-ab12cd", "queue": "my_tasks_queue"}
    sink: Any = NullSink() if variant == "null" else None
    if variant in ("text", "json"):
        sink = LoggingSink(LoggingSinkSettings(format=variant))
    channel = bus.add_sink("logging", sink, events=("task.*", "worker.*")) if sink is not None else None
    bus.start()
    best = float("inf")
    tasks = events // EVENTS_PER_TASK
    for n in range(passes):
        emitted = 0
        started = time.process_time()
        for i in range(tasks):
            task_id = f"0f3a9c1e5b7d2a4c-{n}-{i}"
            bus.emit("task.dequeued", task_id=task_id, task_type="http", attempt=1)
            bus.emit(
                "task.started",
                task_id=task_id,
                task_type="http",
                attempt=1,
                data={"waited": 0.000412, "priority": "default"},
            )
            bus.emit(
                "task.succeeded",
                task_id=task_id,
                task_type="http",
                attempt=1,
                duration=0.00183,
                data={"http_status": 200, "http_host": "127.0.0.1"},
                timestamp=time.time(),
                logged=True,
            )
            emitted += EVENTS_PER_TASK
            if emitted >= 100 or i == tasks - 1:  # let the sink take a full batch, as a busy worker's does
                target = (channel.delivered if channel else 0) + emitted
                emitted = 0
                while channel is not None and channel.delivered < target:
                    await asyncio.sleep(0)
        best = min(best, (time.process_time() - started) / (tasks * EVENTS_PER_TASK) * 1e6)
    await bus.close()
    return best


def run_variant(variant: str, events: int, passes: int, path: str | None, to: str) -> float:
    """One variant's figure, from a process of its own (`path`: where its `gopherq` package is)."""
    argv = [sys.executable, "-m", "bench.logcost", "--variant", variant, "--events", str(events)]
    argv += ["--passes", str(passes), "--to", to] + (["--tree", os.path.abspath(path)] if path else [])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=here)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="passes per process; its best counts")
    parser.add_argument("--before", help="a directory holding another version's `gopherq` package")
    parser.add_argument("--to", default=os.devnull, help="where the log lines go (default: /dev/null)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement, in a process of its own
    parser.add_argument("--tree", help=argparse.SUPPRESS)  # where that process imports `gopherq` from
    args = parser.parse_args()
    if args.variant:
        if args.tree:
            sys.path.insert(0, args.tree)  # ahead of this checkout (the current directory)
        with open(args.to, "a", buffering=1, encoding="utf-8") as out:
            sys.stderr = out  # configure_logging's handler writes to sys.stderr, line-buffered as it is
            print(asyncio.run(measure(args.variant, args.events, args.passes)))
        return
    trees: dict[str, str | None] = {"now": None}
    if args.before:
        trees = {"before": args.before, **trees}
    found: dict[tuple[str, str], list[float]] = {(tree, v): [] for tree in trees for v in VARIANTS}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            for variant in VARIANTS:
                found[tree, variant].append(run_variant(variant, args.events, args.passes, path, args.to))
    print(f"{args.events:,} events per pass, best of {args.rounds} x {args.passes} passes; {EVENTS_PER_TASK} per task")
    print("| tree | variant | CPU per event (µs) | the sink's, per event | per task |")
    print("|---|---|---:|---:|---:|")
    for tree in trees:
        none = min(found[tree, "none"])
        for variant in VARIANTS:
            cpu = min(found[tree, variant])
            extra = cpu - none
            print(f"| {tree} | {variant} | {cpu:.2f} | {extra:+.2f} | {extra * EVENTS_PER_TASK:+.1f} |")


if __name__ == "__main__":
    main()
