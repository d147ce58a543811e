"""`python -m bench.http_worker_cpu`: a real worker's CPU time per HTTP task, and where it goes by layer.

A `gopherq run` worker (concurrency 100, the shipped defaults otherwise unless `--plain`: stream on) drains `--tasks`
GET tasks to a private nginx, against a private redis-server, after 2,000 to warm up; the worker process's own CPU
time (user + system, from /proc) over the counted tasks is divided by them. Rounds alternate between this checkout
and `--before DIR` (another checkout with its own .venv), and the best round of each is kept: other jobs on a
shared machine slow a round down, they rarely speed one up. With `--spy`, py-spy samples one more round of each and
the samples are summed by layer as in the benchmark report (bench.profile.layers); each layer's µs are its share of
the samples times the CPU time measured over that round (on a loaded machine py-spy also counts the time a busy
thread waits for a core, so samples / rate would overstate it).

    python -m bench.http_worker_cpu [--tasks 20000] [--rounds 3] [--before /path/to/checkout] [--spy]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from bench.instructions import REPO
from bench.profile import RATE, layers, py_spy

QUEUE = "httpcpu"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(tree: Path, tasks: int, spy: Path | None, plain: bool) -> float:
    """µs of worker CPU per HTTP task for `tree`'s code; with `spy`, py-spy's raw samples are written there."""
    import redis

    from bench.services import HttpTarget, RedisServer, stop_process, wait_for

    with tempfile.TemporaryDirectory(prefix="gopherq-httpcpu-") as tmp:
        server = RedisServer(Path(tmp)).start()
        target = HttpTarget(Path(tmp), allow_fallback=False).start()
        lines = ["[redis]", f'url = "{server.url}"', "[queue]", f'name = "{QUEUE}"', "[worker]", "concurrency = 100",
                 "[logging]", 'level = "WARNING"', "[plugins.http]", "max_connections = 100"]  # fmt: skip
        if plain:
            lines += ["[plugins.stream]", "enabled = false"]
        settings = Path(tmp) / "worker.toml"
        settings.write_text("\n".join(lines) + "\n")
        argv = [str(tree / ".venv" / "bin" / "gopherq"), "run", "-c", str(settings)]
        env = dict(os.environ, PYTHONPATH=str(tree))
        proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(server.url)
        stats = f"gopherq:{{{QUEUE}}}:stats"
        url = target.url.encode()
        sent = 0

        def drain(count: int) -> None:
            nonlocal sent
            before = int(client.hget(stats, "acked") or 0)
            for start in range(sent, sent + count, 1000):
                end = min(sent + count, start + 1000)
                client.rpush(QUEUE, *(b'{"id":"%d","url":"%s/t/%d"}' % (i, url, i) for i in range(start, end)))
            sent += count
            wait_for(lambda: int(client.hget(stats, "acked") or 0) >= before + count, 600, "the tasks to settle")

        sampler: subprocess.Popen[bytes] | None = None
        try:
            wait_for(lambda: client.zcard(f"gopherq:{{{QUEUE}}}:workers") >= 1, 60, "the worker")
            drain(2000)
            if spy is not None:
                argv = [py_spy() or "py-spy", "record", "--pid", str(proc.pid), "--rate", str(RATE), "--format", "raw"]
                sampler = subprocess.Popen(
                    [*argv, "-o", str(spy)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            started = _cpu_seconds(proc.pid)
            drain(tasks)
            spent = _cpu_seconds(proc.pid) - started
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                sampler.wait(30)
            return spent / tasks * 1e6
        finally:
            if sampler is not None and sampler.poll() is None:
                sampler.kill()
            stop_process(proc, 30)
            client.close()
            target.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_worker_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="counted tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="another checkout (with its own .venv)")
    parser.add_argument("--spy", action="store_true", help="one more round of each under py-spy, by layer")
    parser.add_argument("--plain", action="store_true", help="the stream sink off")
    args = parser.parse_args()
    trees = [("before", args.before.resolve()), ("after", REPO)] if args.before else [("now", REPO)]
    found: dict[str, list[float]] = {label: [] for label, _ in trees}
    for _ in range(args.rounds):
        for label, tree in trees:
            found[label].append(run(tree, args.tasks, None, args.plain))
            print(f"{label:6} {found[label][-1]:7.1f} µs worker CPU per HTTP task", flush=True)
    for label, figures in found.items():
        shown = ", ".join(f"{f:.1f}" for f in figures)
        print(f"{label:6} best {min(figures):.1f} µs worker CPU per HTTP task ({shown}; {args.tasks:,} tasks a round)")
    if args.spy and py_spy() is not None:
        with tempfile.TemporaryDirectory(prefix="gopherq-httpcpu-spy-") as tmp:
            for label, tree in trees:
                raw = Path(tmp) / f"{label}.txt"
                figure = run(tree, args.tasks, raw, args.plain)
                rows, samples = layers(raw, args.tasks)
                print(f"\n{label}: {figure:.1f} µs worker CPU per task under py-spy; {samples:,} busy samples")
                for name, share, _ in rows:  # py-spy counts runnable time too: shares of the measured CPU instead
                    print(f"  {name:58} {share:5.1f} % {share / 100 * figure:7.1f} µs/task")


if __name__ == "__main__":
    main()
