"""`python -m bench.instructions_tracing`: what tracing costs a worker per HTTP task, counted in CPU instructions.

The tracing targets (issue 22) are about worker CPU per task, tracing on against off, a few per cent apart: less than
a shared machine moves CPU time between two runs. An instruction count does not move with the load
(`bench.instructions`, whose callgrind helpers this uses): a real `gopherq run` worker under callgrind drains HTTP
tasks (concurrency 100, as the HTTP drain) against a private redis-server and nginx, 500 tasks to warm up, then
`--tasks` counted, with `[plugins.otel]` off, on at 1 % and on at 100 % (exporter "none": every span made and ended,
nothing encoded or sent). `--before DIR` measures another checkout the same way, alternating with this one.

    python -m bench.instructions_tracing [--tasks 2000] [--modes off,0.01,1.0] [--before /path/to/checkout]

At 1 % which attempts are recorded is random (about 20 of 2,000), so that row moves by a few thousand instructions
per task between runs. The counted drain starts only once a dump taken after the warm-up is on disk
(`bench.instructions.count_worker`), so a loaded machine cannot move where the count starts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.instructions import REPO, callgrind, count_worker

QUEUE = "instructions"


def config(path: Path, redis_url: str, mode: str) -> Path:
    lines = ["[redis]", f'url = "{redis_url}"', "[queue]", f'name = "{QUEUE}"', "[worker]", "concurrency = 100",
             "[logging]", 'level = "WARNING"', "[plugins.http]", "max_connections = 100"]  # fmt: skip
    if mode != "off":
        lines += ["[plugins.otel]", "enabled = true", 'exporter = "none"', f"sample_ratio = {float(mode)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def worker_row(tree: Path, mode: str, tasks: int, warm: int = 500) -> float:
    """Instructions per HTTP task of `tree`'s worker with tracing `mode` (off, or a sample ratio), counted after `warm`
    tasks."""
    from bench.services import HttpTarget, RedisServer

    with tempfile.TemporaryDirectory(prefix="gopherq-instructions-") as tmp:
        out = Path(tmp) / "cg"
        out.mkdir()
        server = RedisServer(Path(tmp)).start()
        target = HttpTarget(Path(tmp), allow_fallback=False).start()
        settings = config(Path(tmp) / "worker.toml", server.url, mode)
        env = dict(os.environ, PYTHONPATH=str(tree))
        argv = [*callgrind(out), str(tree / ".venv" / "bin" / "python"), str(tree / ".venv" / "bin" / "gopherq")]
        argv += ["run", "-c", str(settings)]
        url = target.url.encode()

        def envelopes(start: int, end: int) -> list[bytes]:
            return [b'{"id":"%d","url":"%s/t/%d"}' % (i, url, i) for i in range(start, end)]

        try:
            return count_worker(argv, env, Path(tmp), out, server.url, QUEUE, envelopes, warm, tasks)
        finally:
            target.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions_tracing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="counted tasks per row")
    parser.add_argument("--modes", default="off,0.01,1.0", help="off and sample ratios")
    parser.add_argument("--before", type=Path, default=None, help="another checkout (with its own .venv)")
    args = parser.parse_args()
    trees = [("before", args.before.resolve()), ("after", REPO)] if args.before else [("now", REPO)]
    found: dict[tuple[str, str], float] = {}
    for mode in args.modes.split(","):
        for label, tree in trees:
            found[label, mode] = figure = worker_row(tree, mode, args.tasks)
            off = found.get((label, "off"))
            versus = f", {100 * (figure / off - 1):+.1f} % vs off" if off and mode != "off" else ""
            print(
                f"{label:6} {mode:5} {figure:12,.0f} instructions per HTTP task ({args.tasks:,} tasks{versus})",
                flush=True,
            )


if __name__ == "__main__":
    main()
