"""What the built-in `logging` sink costs a worker per task and per line: CPU time (`time.process_time()`, which
counts this process's own work only, so other jobs on the machine change it little) of `--tasks` tasks' events,
emitted as a worker emits an HTTP task's three (`task.dequeued`, `task.started` with its queue wait,
`task.succeeded` with its duration, status and host, already in the stream), through the real event bus, the real
sink and the handler `configure_logging` installs in every worker (masking filter, escaping formatter), writing to
/dev/null (`--to` another file).

Variants, each in a process of its own, in turns: `none` (logging at WARNING: the sink is not registered), `null`
(a sink that takes every event and does nothing: the bus's own share), `text` and `json` (the sink at INFO writing
every event, in each format), `shipped` (text, with the `events` of the tree's `gopherq.toml`). The figure is the
best pass of each variant; the sink's cost is the variant's minus `none`'s. `--before DIR` runs the same variants
against the `gopherq` package (and `gopherq.toml`) in DIR too: `git archive <rev> gopherq gopherq.toml | tar -x -C
DIR`.

    python -m bench.logcost [--tasks 30000] [--rounds 3] [--before DIR] [--to FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VARIANTS = ("none", "null", "text", "json", "shipped")
#: The events a worker emits for a successful task, in order.
TASK_EVENTS = ("task.dequeued", "task.started", "task.succeeded")
#: What the sink writes unless the variant is `shipped`.
EVERY_EVENT = ["task.*", "worker.*"]
#: This checkout: the `now` tree.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NullSink:
    """Takes every batch and does nothing with it."""

    async def handle(self, events: list[Any]) -> None:
        return None


def shipped_events(tree: str) -> list[str]:
    """`[plugins.logging] events` of the `gopherq.toml` in `tree`."""
    with open(os.path.join(tree, "gopherq.toml"), "rb") as file:
        return list(tomllib.load(file)["plugins"]["logging"]["events"])


async def measure(variant: str, tasks: int, passes: int, tree: str) -> tuple[float, int]:
    """Best CPU µs per task of `passes` passes of `tasks` tasks each, and the lines written per task."""
    from gopherq.core.events import EventBus, EventFilter
    from gopherq.core.masking import Masker
    from gopherq.core.runner import configure_logging
    from gopherq.plugins.logging_sink import LoggingSink, LoggingSinkSettings

    configure_logging("WARNING" if variant in ("none", "null") else "INFO")
    bus = EventBus()
    bus.masker = Masker()
    bus.defaults = {"worker": "host-1234-ab12cd", "queue": "my_tasks_queue"}
    events = shipped_events(tree) if variant == "shipped" else EVERY_EVENT
    sink: Any = NullSink() if variant == "null" else None
    if variant in ("text", "json", "shipped"):
        sink = LoggingSink(LoggingSinkSettings(format="json" if variant == "json" else "text"))
    channel = bus.add_sink("logging", sink, events=events) if sink is not None else None
    per_task = sum(map(EventFilter(events), TASK_EVENTS)) if channel is not None else 0
    bus.start()
    best = float("inf")
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
            emitted += per_task
            if emitted >= 100 or i == tasks - 1:  # let the sink take a full batch, as a busy worker's does
                target = (channel.delivered if channel else 0) + emitted
                emitted = 0
                while channel is not None and channel.delivered < target:
                    await asyncio.sleep(0)
        best = min(best, (time.process_time() - started) / tasks * 1e6)
    await bus.close()
    return best, per_task


def run_variant(variant: str, tasks: int, passes: int, path: str, to: str) -> tuple[float, int]:
    """One variant's figures, from a process of its own (`path`: where its `gopherq` package is)."""
    argv = [sys.executable, "-m", "bench.logcost", "--variant", variant, "--tasks", str(tasks)]
    argv += ["--passes", str(passes), "--to", to, "--tree", path]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=HERE)
    cpu, lines = done.stdout.split()
    return float(cpu), int(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000, help="tasks per pass (3 events each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="passes per process; its best counts")
    parser.add_argument("--before", help="a directory holding another version's `gopherq` package")
    parser.add_argument("--to", default=os.devnull, help="where the log lines go (default: /dev/null)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement, in a process of its own
    parser.add_argument("--tree", help=argparse.SUPPRESS)  # where that process imports `gopherq` from
    args = parser.parse_args()
    if args.variant:
        sys.path.insert(0, args.tree)  # ahead of this checkout (the current directory)
        with open(args.to, "a", buffering=1, encoding="utf-8") as out:
            sys.stderr = out  # configure_logging's handler writes to sys.stderr, line-buffered as it is
            cpu, written = asyncio.run(measure(args.variant, args.tasks, args.passes, args.tree))
        print(cpu, written)
        return
    trees = {"now": HERE}
    if args.before:
        trees = {"before": os.path.abspath(args.before), **trees}
    found: dict[tuple[str, str], list[float]] = {(tree, v): [] for tree in trees for v in VARIANTS}
    lines: dict[tuple[str, str], int] = {}
    for _ in range(args.rounds):
        for tree, path in trees.items():
            for variant in VARIANTS:
                cpu, lines[tree, variant] = run_variant(variant, args.tasks, args.passes, path, args.to)
                found[tree, variant].append(cpu)
    print(
        f"{args.tasks:,} tasks ({len(TASK_EVENTS)} events each) per pass, best of {args.rounds} x {args.passes} passes"
    )
    print("| tree | variant | lines per task | CPU per task (µs) | the sink's, per task | per line |")
    print("|---|---|---:|---:|---:|---:|")
    for tree in trees:
        none = min(found[tree, "none"])
        for variant in VARIANTS:
            cpu, count = min(found[tree, variant]), lines[tree, variant]
            extra = cpu - none
            per_line = f"{extra / count:.2f}" if count and variant != "null" else ""
            print(f"| {tree} | {variant} | {count} | {cpu:.2f} | {extra:+.2f} | {per_line} |")


if __name__ == "__main__":
    main()
