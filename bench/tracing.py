"""What tracing costs a worker: the HTTP drain's worker CPU per task with the `otel` plugin off, on at 1 % and on at
100 % (and, with `--before DIR`, the same three in another checkout, e.g. before a change), run in turns.

    python -m bench.tracing [--rounds 6] [--tasks 10000] [--before /path/to/other/checkout]

Throughput on a shared machine drifts by 2x within minutes, far more than tracing costs, so this measures the
worker's own CPU time per task (from /proc, between the first and the last request the target sees: start-up is
not counted) and runs the variants in turns, in a rotated order, so no variant always runs first or last. Each
variant is `gopherq run` of its tree's `.venv` on the harness's private redis-server and nginx, concurrency 100,
with `[plugins.otel] exporter = "none"`: every span is created, sampled and ended as it would be, and nothing is
encoded or sent (that cost depends on the collector; it runs in the exporter's own thread). Run it from the
repository root, in an environment with the `otel` extra (and `--no-venv`-style: it uses the current Python).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.peers import Batch, Context, Peer, WorkerSpec, load_peer
from bench.services import HttpTarget, RedisServer
from bench.workloads import Workloads, tree_cpu

REPO = Path(__file__).resolve().parent.parent

#: Variant -> worker options (see GoPherQPeer.config_file).
VARIANTS = {
    "tracing off": {},
    "tracing on, 1 %": {"tracing": "0.01"},
    "tracing on, 100 %": {"tracing": "1.0"},
}


class TracingWorkloads(Workloads):
    """Starts `gopherq run` of the variant's tree and measures the worker's CPU per task over an HTTP drain."""

    trees: dict[str, Path] = {"this": REPO}

    def start_worker(self, peer: Peer, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        tree = self.trees[spec.options.get("tree", "this")]
        argv = [str(tree / ".venv" / "bin" / "gopherq"), "run", "-c", str(peer.config_file(spec))]  # type: ignore[attr-defined]
        log = (self.logs / f"tracing-{uuid.uuid4().hex[:6]}.log").open("wb")
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            return subprocess.Popen(
                argv, cwd=self.ctx.run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def cpu_per_task(self, peer: Peer, spec: WorkerSpec, count: int) -> float:
        """Worker CPU (µs) per task, from the first request the target sees to the last."""
        prefix = f"r{uuid.uuid4().hex[:10]}"
        url = f"{self.ctx.target_url}/{prefix}"
        peer.send(Batch("http", count, lambda i: (f"{url}/{i}",), bulk=True))
        proc = self.start_worker(peer, spec)
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                seen = self.target.count(prefix)
                if seen and first is None:
                    first = (tree_cpu(proc.pid), seen)
                if seen >= count and first is not None:
                    return (tree_cpu(proc.pid) - first[0]) / max(1, seen - first[1]) * 1e6
                time.sleep(0.002)
            raise TimeoutError(f"the drain did not finish within {self.timeout}s")
        finally:
            self.stop_worker(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--before", type=Path, default=None, help="another checkout (with its own .venv) to compare")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.before is not None:
        TracingWorkloads.trees["before"] = args.before.resolve()
        before = {f"before: {name}": {**options, "tree": "before"} for name, options in VARIANTS.items()}
        variants = {**before, **variants}
    names = list(variants)
    with tempfile.TemporaryDirectory(prefix="gopherq-tracing-") as tmp:
        run_dir = Path(tmp)
        redis = RedisServer(run_dir).start()
        target = HttpTarget(run_dir, allow_fallback=False).start()
        try:
            os.environ["BENCH_REDIS_URL"] = redis.url
            os.environ["BENCH_QUEUE"] = "bench"
            ctx = Context(redis.url, target.url, run_dir)
            work = TracingWorkloads(ctx, redis, target, 120)
            peer = load_peer("gopherq", ctx)
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(args.rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    spec = WorkerSpec("http", concurrency=100, options=dict(variants[name]))
                    cpu[name].append(work.cpu_per_task(peer, spec, args.tasks))
                    print(f"round {round_ + 1} {name}: {cpu[name][-1]:.1f} µs/task", flush=True)
        finally:
            target.stop()
            redis.stop()
    print("| variant | worker CPU per task (µs), median (min-max) | vs tracing off of the same tree |")
    print("|---|---:|---:|")
    for name, values in cpu.items():
        median = statistics.median(values)
        base = statistics.median(cpu["before: tracing off" if name.startswith("before: ") else "tracing off"])
        print(f"| {name} | {median:.1f} ({min(values):.1f}-{max(values):.1f}) | {100 * (median / base - 1):+.1f} % |")


if __name__ == "__main__":
    main()
