"""Where a GoPherQ worker spends its time on no-op tasks: py-spy samples the worker during a noop drain.

The raw (collapsed) stacks are summed per function into self and inclusive shares of the busy samples, and
converted to microseconds per task (samples / rate / tasks); a flame graph SVG is written beside the chart.
Only samples of busy threads count (py-spy leaves out threads idling in epoll), so the shares add up to the
worker's CPU time.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.peers import Batch, Peer, WorkerSpec
from bench.results import Results
from bench.workloads import Workloads

RATE = 400  # samples per second


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def record(work: Workloads, peer: Peer, count: int, out: Path, fmt: str) -> tuple[float, float]:
    """Queue `count` no-op tasks and start a worker; py-spy attaches once the worker runs tasks (start-up and
    imports are left out) and stops at the end marker. Returns (drain seconds, sampled seconds)."""
    marks = work._marks()
    work._queue_between_marks(peer, marks, Batch("noop", count, bulk=True))
    proc = work.start_worker(peer, WorkerSpec("noop"))
    spy: subprocess.Popen[bytes] | None = None
    try:
        work._wait(proc, lambda: "start" in work._read_marks(marks), "profiled drain to start")
        argv = [py_spy() or "py-spy", "record", "--pid", str(proc.pid), "--rate", str(RATE), "--format", fmt]
        spy = subprocess.Popen([*argv, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        attached = time.time()
        work._wait(proc, lambda: "end" in work._read_marks(marks), "profiled noop drain")
        found = work._read_marks(marks)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        spy.wait(30)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        work.stop_worker(proc)
    return found["end"] - found["start"], found["end"] - attached


def summarize(raw: Path, tasks: int, top: int = 18) -> tuple[list[tuple[str, float, float, float]], int]:
    """(function, self %, inclusive %, self µs per task) for the functions with the most self time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    rows = []
    for name, samples in own.most_common(top):
        rows.append((name, 100 * samples / total, 100 * inclusive[name] / total, samples / RATE / tasks * 1e6))
    return rows, total


def short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`; lines vary between samples of one function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] in ("core", "plugins", "asyncio") else parts[-1]
    return f"{name} ({tail})" if tail else name


def profile_noop(peer: Peer, work: Workloads, count: int, results: Results, img: Path) -> None:
    if py_spy() is None:
        results.profile_note = "py-spy is not installed in this environment; no profile taken."
        return
    raw = work.ctx.run_dir / "profile.txt"
    seconds, sampled = record(work, peer, count, raw, "raw")
    tasks = max(1, round(count * min(1.0, sampled / seconds)))  # tasks run while py-spy was attached
    rows, samples = summarize(raw, tasks)
    results.profile = rows
    busy = samples / RATE
    results.profile_note = (
        f"{count:,} no-op tasks drained in {seconds:.2f} s; py-spy ({RATE} Hz) attached once the worker ran its "
        f"first task, for the last ~{tasks:,} of them: {samples:,} busy samples = {busy:.2f} s of CPU = "
        f"{busy / tasks * 1e6:.0f} µs per task (sampling slows the worker a little). Self time is spent in the "
        "function itself, inclusive time in it and everything it calls."
    )
    img.mkdir(parents=True, exist_ok=True)
    record(work, peer, count, img / "profile-noop.svg", "flamegraph")
