"""Where a GoPherQ worker spends its time: py-spy samples the worker during a noop drain and an HTTP drain.

The raw (collapsed) stacks of the noop drain are summed per function into self and inclusive shares of the busy
samples, and converted to microseconds per task (samples / rate / tasks); a flame graph SVG is written beside
the chart. The HTTP drain's samples are summed per layer (aiohttp, httpx's objects, the executor, the queue
core, redis-py, the event loop...) by the file of the innermost frame: what each layer costs per task.
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
from collections.abc import Iterator
from pathlib import Path

from bench.peers import Batch, Peer, WorkerSpec
from bench.results import Results
from bench.workloads import Workloads

RATE = 400  # samples per second


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def record(
    work: Workloads, peer: Peer, count: int, out: Path, fmt: str, http_concurrency: int = 0
) -> tuple[float, float]:
    """Queue `count` no-op tasks (or HTTP GETs to the target, with `http_concurrency`) and start a worker;
    py-spy attaches once the worker runs tasks (start-up and imports are left out) and stops at the end marker.
    Returns (drain seconds, sampled seconds)."""
    marks = work._marks()
    if http_concurrency:
        url = f"{work.ctx.target_url}/profile"
        batch = Batch("http", count, lambda i: (f"{url}/{i}",), bulk=True)
        spec = WorkerSpec("http", concurrency=http_concurrency)
    else:
        batch, spec = Batch("noop", count, bulk=True), WorkerSpec("noop")
    work._queue_between_marks(peer, marks, batch)
    proc = work.start_worker(peer, spec)
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


def read_stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """(frames outermost first, sample count) for each stack of py-spy's raw (collapsed) output, without py-spy's
    process and thread pseudo-frames."""
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith(("process ", "thread "))]
        if frames and count_text.isdigit():
            yield frames, int(count_text)


def summarize(raw: Path, tasks: int, top: int = 18) -> tuple[list[tuple[str, float, float, float]], int]:
    """(function, self %, inclusive %, self µs per task) for the functions with the most self time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, count in read_stacks(raw):
        frames = [short(frame) for frame in stack]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    rows = []
    for name, samples in own.most_common(top):
        rows.append((name, 100 * samples / total, 100 * inclusive[name] / total, samples / RATE / tasks * 1e6))
    return rows, total


#: (layer, path prefixes of the innermost frame's file that put a sample in it), first match wins. py-spy names
#: files relative to sys.path (`aiohttp/client.py`) or in full.
LAYERS = [
    ("event loop (uvloop's C code, sampled in its Python caller)", ("gopherq/core/runner.py", "asyncio/runners.py")),
    ("aiohttp (with yarl, multidict)", ("aiohttp/", "yarl/", "multidict/", "propcache/")),
    ("httpx objects (Request, URL, Headers, Response)", ("httpx/",)),
    ("GoPherQ HTTP executor and transport", ("gopherq/plugins/",)),
    ("GoPherQ core (claim, run, settle, events)", ("gopherq/core/",)),
    ("redis-py", ("redis/",)),
    ("pydantic (task payload validation)", ("pydantic/", "pydantic_core/")),
    ("asyncio (tasks, futures, timers)", ("asyncio/",)),
]


def _in(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path.startswith(prefix) or f"/{prefix}" in path for prefix in prefixes)


def layers(raw: Path, tasks: int) -> tuple[list[tuple[str, float, float]], int]:
    """(layer, % of busy samples, µs per task) by the file of each sample's innermost frame."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in read_stacks(raw):
        path = frames[-1].partition(" (")[2]
        layer = next((name for name, prefixes in LAYERS if _in(path, prefixes)), "other (stdlib, orjson...)")
        counts[layer] += count
        total += count
    order = [name for name, _ in LAYERS] + ["other (stdlib, orjson...)"]
    rows = [(name, 100 * counts[name] / total, counts[name] / RATE / tasks * 1e6) for name in order if counts[name]]
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


def profile_http(peer: Peer, work: Workloads, count: int, concurrency: int, results: Results) -> None:
    """Per-layer CPU of the worker during an HTTP drain (c = `concurrency`), per task."""
    if py_spy() is None:
        return
    raw = work.ctx.run_dir / "profile-http.txt"
    seconds, sampled = record(work, peer, count, raw, "raw", http_concurrency=concurrency)
    tasks = max(1, round(count * min(1.0, sampled / seconds)))
    rows, samples = layers(raw, tasks)
    results.profile_http = rows
    busy = samples / RATE
    results.profile_http_note = (
        f"{count:,} HTTP GET tasks to the local nginx at concurrency {concurrency}, drained in {seconds:.2f} s "
        f"({count / seconds:,.0f}/s under sampling); py-spy ({RATE} Hz) for the last ~{tasks:,}: {busy:.2f} s of "
        f"CPU = {busy / tasks * 1e6:.0f} µs per task, by the layer of the innermost frame."
    )
