"""`bench/.venv/bin/python -m bench.defaults [--reps N] [--rows on,off,...]`: what GoPherQ's defaults cost, alone.

The rows of the full harness that compare the event stream and the shipped `gopherq.toml` with the benchmark's own
settings, without the peers: the staged no-op drain of one process (20,000 tasks, CPU per task of the worker and of
redis-server) with the stream on (the default), on without task timelines, and off, with `worker.prefetch` on (with
the stream on and off), and with the shipped `gopherq.toml`; then the HTTP drain at c=100 with the benchmark's
settings and with the shipped file. On request (not among the default rows), `x2` and `x2-off`: the staged no-op
drain of two worker processes (`--processes 2`) with the stream on and off, whose rates against `on` and `off` say
what a second process adds on this machine (the CPU figures, of both workers together and of redis-server, give
the most it could: see docs/benchmarks.md, "Scaling: two cores shared with Redis"). One JSON line per
measurement, then the medians. Run it in two checkouts in
alternating turns to compare a change on a shared machine (`--rows on,off,shipped,http,http_shipped` in a checkout
whose stream has no `timeline` setting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.peers import Context, WorkerSpec, load_peer
from bench.peers.gopherq import NOOP_BATCH
from bench.services import HttpTarget, RedisServer
from bench.workloads import Workloads

#: Row -> the worker's options (see GoPherQPeer.config_file).
NOOP_ROWS = {
    "on": {},
    "no-timeline": {"stream": "no-timeline"},
    "off": {"stream": "off"},
    "prefetch": {"prefetch": str(NOOP_BATCH)},
    "prefetch-off": {"prefetch": str(NOOP_BATCH), "stream": "off"},
    "shipped": {"config": "shipped"},
}
HTTP_ROWS = {"http": {}, "http_shipped": {"config": "shipped"}}
#: Rows of two worker processes (the harness's scaling rows), asked for by name: row -> the worker's options.
TWO_PROCESS_ROWS = {"x2": {}, "x2-off": {"stream": "off"}}
NOOP_TASKS = 20_000
HTTP_TASKS = 2_000
HTTP_WINDOW = 8.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.defaults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", default=",".join([*NOOP_ROWS, *HTTP_ROWS]))
    args = parser.parse_args()
    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    known = [*NOOP_ROWS, *HTTP_ROWS, *TWO_PROCESS_ROWS]
    unknown = [row for row in rows if row not in known]
    if unknown:
        parser.error(f"unknown rows: {', '.join(unknown)} (known: {', '.join(known)})")
    found: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="gopherq-defaults-") as tmp:
        run_dir = Path(tmp)
        redis = RedisServer(run_dir).start()
        target = HttpTarget(run_dir, allow_fallback=False).start()
        try:
            os.environ["BENCH_REDIS_URL"] = redis.url
            os.environ["BENCH_QUEUE"] = "bench"
            ctx = Context(redis.url, target.url, run_dir)
            work = Workloads(ctx, redis, target, 120)
            peer = load_peer("gopherq", ctx)
            for _ in range(args.reps):
                for row in rows:
                    if row in HTTP_ROWS:
                        spec = WorkerSpec("http", concurrency=100, options=HTTP_ROWS[row])
                        figures = {"tasks/s": work.http_drain(peer, spec, HTTP_TASKS, HTTP_WINDOW)}
                    else:
                        two = row in TWO_PROCESS_ROWS
                        options = TWO_PROCESS_ROWS[row] if two else NOOP_ROWS[row]
                        spec = WorkerSpec("noop", processes=2 if two else 1, options=options)
                        rate = work.staged_drain(peer, spec, NOOP_TASKS)
                        figures = {"tasks/s": rate, **{f"{who} µs/task": s * 1e6 for who, s in work.last_cpu.items()}}
                    found[row].append(figures)
                    print(json.dumps({"row": row, **figures}, ensure_ascii=False), flush=True)
        finally:
            target.stop()
            redis.stop()
    for row, runs in found.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(row, "  ".join(f"{key} {value:,.1f}" for key, value in medians.items()))


if __name__ == "__main__":
    main()
