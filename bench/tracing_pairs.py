"""Tracing's cost from paired runs: two workers, one per variant, drain their own queues of HTTP tasks at the same
time (c=100, the same private Redis and nginx), so both see the same machine; each worker's CPU per task is taken
between 10 % and 90 % of its drain, and the ratio within each round. Steadier than `bench.tracing`'s turns on a
machine whose load moves between turns.

    python -m bench.tracing_pairs A B [--rounds 3] [--tasks 4000] [--before /path/to/other/checkout]

A variant is `off`, or a sample ratio (`0.01`, `1.0`), optionally prefixed `before:` for the `--before` tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.peers import Batch, Context, Peer, WorkerSpec, load_peer
from bench.services import HttpTarget, RedisServer
from bench.tracing import TracingWorkloads
from bench.workloads import tree_cpu


def spec(variant: str) -> WorkerSpec:
    tree, _, ratio = variant.rpartition(":")
    options = {} if ratio == "off" else {"tracing": ratio}
    if tree:
        options["tree"] = tree
    return WorkerSpec("http", concurrency=100, options=options)


@dataclass
class Side:
    """One variant's worker in a round: its queue's tasks, its process, its CPU at 10 % and at 90 %."""

    variant: str
    work: TracingWorkloads
    peer: Peer
    prefix: str
    proc: subprocess.Popen[bytes] | None = None
    low: tuple[float, int] | None = None
    high: tuple[float, int] | None = None

    def per_task(self) -> float:
        assert self.low is not None and self.high is not None, "the drain did not finish"
        return (self.high[0] - self.low[0]) / max(1, self.high[1] - self.low[1]) * 1e6


def round_(variants: list[str], redis: RedisServer, target: HttpTarget, run_dir: Path, tasks: int) -> list[float]:
    sides = []
    for i, variant in enumerate(variants):
        side_dir = run_dir / f"side{i}"  # each its own config files
        side_dir.mkdir(exist_ok=True)
        ctx = Context(redis.url, target.url, side_dir, queue=f"pair{i}")
        side = Side(variant, TracingWorkloads(ctx, redis, target, 300), load_peer("gopherq", ctx), uuid.uuid4().hex)
        url = f"{ctx.target_url}/{side.prefix}"
        side.peer.send(Batch("http", tasks, lambda n, url=url: (f"{url}/{n}",), bulk=True))
        sides.append(side)
    for side in sides:
        side.proc = side.work.start_worker(side.peer, spec(side.variant))
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and any(side.high is None for side in sides):
            for side in sides:
                assert side.proc is not None
                seen = target.count(side.prefix)
                if side.low is None and seen >= tasks // 10:
                    side.low = (tree_cpu(side.proc.pid), seen)
                if side.low is not None and side.high is None and seen >= tasks * 9 // 10:
                    side.high = (tree_cpu(side.proc.pid), seen)
            time.sleep(0.003)
    finally:
        for side in sides:
            if side.proc is not None:
                side.work.stop_worker(side.proc)
    return [side.per_task() for side in sides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--before", type=Path, default=None, help="another checkout (with its own .venv)")
    args = parser.parse_args()
    if args.before is not None:
        TracingWorkloads.trees["before"] = args.before.resolve()
    variants: list[str] = args.variants
    found: list[list[float]] = [[], []]
    with tempfile.TemporaryDirectory(prefix="gopherq-pairs-") as tmp:
        run_dir = Path(tmp)
        redis = RedisServer(run_dir).start()
        target = HttpTarget(run_dir, allow_fallback=False).start()
        try:
            os.environ["BENCH_REDIS_URL"] = redis.url
            for n in range(args.rounds):
                order = variants if n % 2 == 0 else variants[::-1]  # which worker starts first, in turns
                figures = dict(zip(order, round_(order, redis, target, run_dir, args.tasks), strict=True))
                for i, variant in enumerate(variants):
                    found[i].append(figures[variant])
                print(f"round {n + 1}: {variants[0]} {found[0][-1]:.1f} µs/task, {variants[1]} {found[1][-1]:.1f}")
        finally:
            target.stop()
            redis.stop()
    ratios = [b / a for a, b in zip(found[0], found[1], strict=True)]
    print("| pair | CPU per task (µs), median | ratio B / A, median (min-max) |")
    print("|---|---:|---:|")
    medians = " / ".join(f"{statistics.median(values):.1f}" for values in found)
    spread = f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
    print(f"| A {variants[0]} / B {variants[1]} | {medians} | {spread} |")


if __name__ == "__main__":
    main()
