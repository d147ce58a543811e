"""The measurements, done the same way for every system through the Peer interface.

- enqueue: time to send N no-op tasks one by one, and in bulk (chunks of 1,000) where the system has a bulk API.
- drain: N tasks are queued first between a `start` and an `end` marker task, then one worker subprocess is
  started; the rate is N / (end marker time - start marker time), so worker start-up is not counted.
  HTTP drains are timed from the target's access log instead (first to last request of the run), which also
  proves all N requests were made.
- latency: a warmed-up worker, then probe tasks sent one by one at a steady rate; each records when it started.
- soak: one worker drains chunks of no-op tasks; its RSS is read after each chunk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from bench.peers import Batch, Context, Peer, WorkerSpec
from bench.peers.gopherq import GoPherQPeer
from bench.services import HttpTarget, RedisServer


class MeasurementError(RuntimeError):
    """A run that did not complete (worker died, timed out); reported instead of a figure."""


class Workloads:
    """Runs measurements against one private Redis and one HTTP target."""

    def __init__(self, ctx: Context, redis: RedisServer, target: HttpTarget, timeout: float) -> None:
        self.ctx = ctx
        self.redis = redis
        self.target = target
        self.timeout = timeout
        self.logs = ctx.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        #: CPU seconds per task of the last staged drain: {"worker": all worker processes, "redis": redis-server}
        self.last_cpu: dict[str, float] = {}

    # -- workers -----------------------------------------------------------------------------------------------

    def start_worker(self, peer: Peer, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        argv, extra_env = peer.worker(spec)
        path = [str(self.ctx.repo)]
        if "BENCH_EXTRA_PATH" in extra_env:
            path.append(extra_env["BENCH_EXTRA_PATH"])
        env = {
            **os.environ,
            "BENCH_REDIS_URL": self.ctx.redis_url,
            "BENCH_QUEUE": self.ctx.queue,
            "PYTHONPATH": os.pathsep.join(path),
            **extra_env,
        }
        log = (self.logs / f"{peer.name}-{spec.workload}-{uuid.uuid4().hex[:6]}.log").open("wb")
        try:
            return subprocess.Popen(
                argv, cwd=self.ctx.run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.redis.flush()

    def _wait(self, proc: subprocess.Popen[bytes], done: object, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not done():  # type: ignore[operator]
            if proc.poll() is not None:
                raise MeasurementError(f"{what}: the worker exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise MeasurementError(f"{what}: timed out")
            time.sleep(0.01)

    # -- enqueue -----------------------------------------------------------------------------------------------

    def enqueue(self, peer: Peer, count: int, bulk: bool) -> float:
        """Tasks per second sent by the client (nothing consumes them; Redis is flushed afterwards)."""
        try:
            elapsed = peer.send(Batch("noop", count, bulk=bulk))
        finally:
            self.redis.flush()
        return count / elapsed

    # -- drains ------------------------------------------------------------------------------------------------

    def _marks(self) -> Path:
        return self.ctx.run_dir / f"marks-{uuid.uuid4().hex[:8]}.txt"

    @staticmethod
    def _read_marks(path: Path) -> dict[str, float]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            label, _, stamp = line.partition(" ")
            if stamp:
                out[label] = float(stamp)
        return out

    def _queue_between_marks(self, peer: Peer, marks: Path, batch: Batch) -> None:
        peer.send(Batch("mark", 1, lambda i: (str(marks), "start")))
        time.sleep(0.005)  # systems that order by enqueue time (ms) must see the markers strictly outside
        peer.send(batch)
        time.sleep(0.005)
        peer.send(Batch("mark", 1, lambda i: (str(marks), "end")))

    def noop_drain(self, peer: Peer, spec: WorkerSpec, count: int) -> float:
        """No-op tasks per second drained by one worker (or `spec.processes` processes) from a full queue."""
        marks = self._marks()
        self._queue_between_marks(peer, marks, Batch("noop", count, bulk=True))
        proc = self.start_worker(peer, spec)
        try:
            self._wait(proc, lambda: "end" in self._read_marks(marks), f"{peer.name} noop drain")
            found = self._read_marks(marks)
        finally:
            self.stop_worker(proc)
        return drain_rate(peer, count, found)

    def staged_drain(self, peer: GoPherQPeer, spec: WorkerSpec, count: int) -> float:
        """Like `noop_drain`, but the tasks are released only once every worker process is up, so the
        start-up of a second process does not count against the drain (used for the scaling figure)."""
        marks = self._marks()
        peer.stage(
            [
                Batch("mark", 1, lambda i: (str(marks), "start")),
                Batch("noop", count, bulk=True),
                Batch("mark", 1, lambda i: (str(marks), "end")),
            ]
        )
        proc = self.start_worker(peer, spec)
        redis_pid = self.redis.proc.pid if self.redis.proc is not None else None
        try:
            self._wait(proc, lambda: peer.workers_ready(spec.processes), "worker processes to start")
            before = tree_cpu(proc.pid), process_cpu(redis_pid)
            peer.release()
            self._wait(proc, lambda: "end" in self._read_marks(marks), f"{peer.name} staged noop drain")
            after = tree_cpu(proc.pid), process_cpu(redis_pid)
            found = self._read_marks(marks)
        finally:
            self.stop_worker(proc)
        self.last_cpu = {"worker": (after[0] - before[0]) / count, "redis": (after[1] - before[1]) / count}
        return drain_rate(peer, count, found)

    def http_drain(self, peer: Peer, spec: WorkerSpec, count: int, window: float) -> float:
        """HTTP GET tasks per second, from the target's log: (n - 1) / (last request - first request).

        n is N, or what was done in the first `window` seconds of the drain when the system is slower than
        N / window (so one slow system cannot take the whole run's time)."""
        prefix = f"r{uuid.uuid4().hex[:10]}"
        url = f"{self.ctx.target_url}/{prefix}"
        peer.send(Batch("http", count, lambda i: (f"{url}/{i}",), bulk=True))
        proc = self.start_worker(peer, spec)
        first_seen: list[float] = []

        def done() -> bool:
            seen = self.target.count(prefix)
            if seen and not first_seen:
                first_seen.append(time.monotonic())
            return seen >= count or bool(first_seen and time.monotonic() - first_seen[0] > window)

        try:
            self._wait(proc, done, f"{peer.name} HTTP drain")
            cutoff = time.time()
        finally:
            self.stop_worker(proc)
        times = [t for t in self.target.times(prefix) if t <= cutoff]
        if len(times) >= count:
            return (count - 1) / (max(times) - min(times))
        # Cut off by the window: the rate over the whole window, not just up to the last request seen (a client
        # that sends a burst and then stalls must not look fast).
        return (len(times) - 1) / (cutoff - min(times))

    # -- latency -----------------------------------------------------------------------------------------------

    def latency(self, peer: Peer, spec: WorkerSpec, count: int, rate: float) -> tuple[float, float]:
        """Enqueue-to-start p50 and p99 (ms) of probes sent one by one at `rate` per second to a warm worker."""
        marks = self._marks()
        probes = self.ctx.run_dir / f"probes-{uuid.uuid4().hex[:8]}.txt"
        proc = self.start_worker(peer, spec)
        try:
            for i in range(3):  # warm-up: the worker is up, connected, and has run a task
                peer.send(Batch("mark", 1, lambda _, i=i: (str(marks), f"ready{i}")))
                self._wait(proc, lambda i=i: f"ready{i}" in self._read_marks(marks), f"{peer.name} warm-up")
            peer.send(Batch("probe", count, lambda i: (str(probes), time.time()), rate=rate))
            self._wait(proc, lambda: count_lines(probes) >= count, f"{peer.name} latency probes")
        finally:
            self.stop_worker(proc)
        pairs = (line.split() for line in probes.read_text().splitlines() if line)
        delays = sorted((float(started) - float(t0)) * 1000 for t0, started in pairs)
        return percentile(delays, 50), percentile(delays, 99)

    # -- soak --------------------------------------------------------------------------------------------------

    def soak(self, peer: Peer, spec: WorkerSpec, step: int, total: int) -> list[tuple[int, float, float]]:
        """(processed, RSS MiB, tasks/s of the segment) after every `step` no-op tasks up to `total`."""
        marks = self._marks()
        segments = total // step
        sent = 0

        def queue_segment(k: int) -> None:
            peer.send(Batch("noop", step, bulk=True))
            peer.send(Batch("mark", 1, lambda i: (str(marks), f"seg{k}")))

        for k in range(min(2, segments)):
            queue_segment(k)
            sent += 1
        proc = self.start_worker(peer, spec)
        out: list[tuple[int, float, float]] = []
        previous: float | None = None
        try:
            for k in range(segments):
                self._wait(proc, lambda k=k: f"seg{k}" in self._read_marks(marks), f"{peer.name} soak segment {k}")
                stamp = self._read_marks(marks)[f"seg{k}"]
                rate = step / (stamp - previous) if previous is not None else 0.0
                previous = stamp
                out.append(((k + 1) * step, rss_mib(proc.pid), rate))
                if sent < segments:
                    queue_segment(sent)
                    sent += 1
        finally:
            self.stop_worker(proc)
        return out


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def drain_rate(peer: Peer, count: int, marks: dict[str, float]) -> float:
    """Tasks per second between the start and end markers; a run whose end marker did not start after its start
    marker (the system ran them out of queue order) measured nothing and is refused, not averaged in."""
    elapsed = marks["end"] - marks["start"]
    if elapsed <= 0:
        raise MeasurementError(f"{peer.name}: the end marker started {-elapsed * 1e6:.0f} µs before the start marker")
    return count / elapsed


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process so far (0 when it is unknown or gone)."""
    fields = proc_stat(pid) if pid is not None else None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live descendant (a supervisor and its worker processes, which may
    run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return sum(process_cpu(member) for member in tree)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
