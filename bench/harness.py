"""The benchmark run: start Redis and the HTTP target, measure every system, the ceilings and the soak, report.

Three modes differ only in sizes and in which systems run: `smoke` (GoPherQ only, a few hundred tasks, for
the test suite), `quick` (every system, small sizes, about 7 min) and `full` (the issue's sizes, 30+ min).
Every measurement is repeated `reps` times; the report shows the median and the min-max.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import ceilings, profile
from bench.api import ApiServer
from bench.peers import PEERS, Context, Peer, WorkerSpec, load_peer
from bench.peers.gopherq import NOOP_BATCH, GoPherQPeer
from bench.report import write_chart, write_markdown
from bench.results import Results
from bench.services import HttpTarget, RedisServer
from bench.workloads import MeasurementError, Workloads

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    """Sizes of one mode. `http_window`: an HTTP drain is measured over at most this many seconds."""

    reps: int
    enqueue: int
    noop: int
    http: int
    http_window: float
    concurrency: tuple[int, ...]
    latency: int
    rate: float
    soak_step: int
    soak_total: int
    scaling: int
    ceiling_http: int
    redis_requests: int
    protocol: int
    profile: int
    timeout: float
    peers: tuple[str, ...] = tuple(PEERS)


PLANS = {
    "smoke": Plan(
        reps=1,
        enqueue=200,
        noop=300,
        http=200,
        http_window=10,
        concurrency=(20,),
        latency=100,
        rate=500,
        soak_step=300,
        soak_total=600,
        scaling=3000,  # several claims' worth: with one, a second process may run the end marker first
        ceiling_http=200,
        redis_requests=2000,
        protocol=2000,
        profile=0,
        timeout=30,
        peers=("gopherq",),
    ),
    "quick": Plan(
        reps=3,
        enqueue=2000,
        noop=3000,
        http=1000,
        http_window=4,
        concurrency=(100,),
        latency=300,
        rate=500,
        soak_step=20_000,
        soak_total=100_000,
        scaling=20_000,
        ceiling_http=2000,
        redis_requests=50_000,
        protocol=50_000,
        profile=20_000,
        timeout=120,
    ),
    "full": Plan(
        reps=3,
        enqueue=20_000,
        noop=20_000,
        http=10_000,
        http_window=25,
        concurrency=(100, 500),
        latency=3000,
        rate=500,
        soak_step=100_000,
        soak_total=1_000_000,
        scaling=100_000,
        ceiling_http=10_000,
        redis_requests=200_000,
        protocol=200_000,
        profile=50_000,
        timeout=600,
    ),
}

#: Ceiling name -> client (see bench/ceilings.py). The first two are GoPherQ's HTTP client, no queue.
CEILING_CLIENTS = {
    "GoPherQ client: GoPherQ's aiohttp transport": "gopherq",
    "GoPherQ client: httpx (httpcore) transport": "httpx",
    "httpx API, httpx-aiohttp transport": "httpx-aiohttp",
    "aiohttp": "aiohttp",
    "requests (threads)": "requests",
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine_info(redis: RedisServer, target: HttpTarget) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory} RAM, {platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis-server": f"{redis.version()} (private, loopback TCP, no persistence)",
        "HTTP target": f"{target.kind} {target.version} (loopback, `return 200`)",
        "load average at start (1/5/15 min)": load,
    }


class Run:
    """One harness run in one mode."""

    def __init__(
        self, mode: str, only: list[str] | None, out: Path, img: Path, skip: set[str], reps: int | None = None
    ) -> None:
        self.mode = mode
        self.plan = PLANS[mode] if reps is None else dataclasses.replace(PLANS[mode], reps=reps)
        self.peers = [name for name in self.plan.peers if not only or name in only]
        self.out = out
        self.img = img
        self.skip = skip
        command = "python -m bench " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
        self.results = Results(mode=mode, command=command)

    def measure(self, what: str, action: Callable[[], object]) -> object:
        """Run one measurement; a failure is recorded in the report, and the run goes on."""
        try:
            return action()
        except Exception as exc:  # one broken system must not lose the others' figures
            message = f"{what}: {type(exc).__name__}: {exc}"
            say("FAILED " + message)
            if not isinstance(exc, MeasurementError):
                traceback.print_exc()
            self.results.errors.append(message)
            return None

    def _staged(self, work: Workloads, peer: GoPherQPeer, spec: WorkerSpec, name: str) -> float:
        """One scaling drain; also records the CPU per task of the workers and of redis-server (µs)."""
        rate = work.staged_drain(peer, spec, self.plan.scaling)
        for who, seconds in work.last_cpu.items():
            self.results.add(name, f"cpu_{who}_us", seconds * 1e6, "µs/task")
        return rate

    def repeat(self, system: str, metric: str, unit: str, action: Callable[[], float], ceiling: bool = False) -> None:
        """`reps` measurements of one figure, then one progress line."""
        add = self.results.add_ceiling if ceiling else self.results.add
        for _ in range(self.plan.reps):
            value = self.measure(f"{system} {metric}", action)
            if isinstance(value, float):
                add(system, metric, value, unit)
        sample = (self.results.ceilings if ceiling else self.results.table).get(system, {}).get(metric)
        say(f"{system} {metric}: {sample.cell() if sample else 'failed'}")

    def main(self) -> Results:
        with tempfile.TemporaryDirectory(prefix="gopherq-bench-") as tmp:
            run_dir = Path(os.environ.get("BENCH_RUN_DIR") or tmp)  # BENCH_RUN_DIR keeps logs for debugging
            run_dir.mkdir(parents=True, exist_ok=True)
            redis = RedisServer(run_dir).start()
            target = HttpTarget(run_dir, allow_fallback=self.mode == "smoke").start()
            try:
                os.environ["BENCH_REDIS_URL"] = redis.url
                os.environ["BENCH_QUEUE"] = "bench"
                ctx = Context(redis.url, target.url, run_dir)
                self.results.machine = machine_info(redis, target)
                self.results.sizes = self._sizes()
                work = Workloads(ctx, redis, target, self.plan.timeout)
                for name in self.peers:
                    self._peer(load_peer(name, ctx), work)
                if "gopherq" in self.peers:
                    gopherq = load_peer("gopherq", ctx)
                    assert isinstance(gopherq, GoPherQPeer)
                    self._gopherq_extras(gopherq, work)
                    if "api" not in self.skip:
                        self._api(run_dir, redis)
                if "ceilings" not in self.skip:
                    self._ceilings(redis, target)
            finally:
                target.stop()
                redis.stop()
        self._report()
        return self.results

    def _sizes(self) -> dict[str, str]:
        p = self.plan
        return {
            "repetitions": str(p.reps),
            "enqueue": f"{p.enqueue:,}",
            "noop drain": f"{p.noop:,}",
            "HTTP drain": f"{p.http:,} (or as many as done in the first {p.http_window:g} s)",
            "latency probes": f"{p.latency:,} at {p.rate:g}/s",
            "soak": f"{p.soak_total:,} (RSS every {p.soak_step:,})",
            "scaling": f"{p.scaling:,}",
        }

    # -- per system ----------------------------------------------------------------------------------------------

    def _peer(self, peer: Peer, work: Workloads) -> None:
        p, r = self.plan, self.results
        label = peer.label
        r.versions[label] = peer.version()
        say(f"{label} {peer.version()}")
        self.repeat(label, "enqueue_one", "tasks/s", partial(work.enqueue, peer, p.enqueue, False))
        if peer.has_bulk:
            self.repeat(label, "enqueue_bulk", "tasks/s", partial(work.enqueue, peer, p.enqueue, True))
        noop = WorkerSpec("noop")
        r.configs.append((label, "noop drain", peer.describe(noop)))
        self.repeat(label, "noop_drain", "tasks/s", partial(work.noop_drain, peer, noop, p.noop))
        for c in p.concurrency:
            self._http(peer, work, label, WorkerSpec("http", concurrency=c))
        self._latency(peer, work, label)

    def _http(self, peer: Peer, work: Workloads, label: str, spec: WorkerSpec) -> None:
        self.results.configs.append((label, f"HTTP c={spec.concurrency}", peer.describe(spec)))
        drain = partial(work.http_drain, peer, spec, self.plan.http, self.plan.http_window)
        self.repeat(label, f"http_c{spec.concurrency}", "tasks/s", drain)

    def _latency(self, peer: Peer, work: Workloads, label: str) -> None:
        p, r = self.plan, self.results
        spec = WorkerSpec("latency")
        r.configs.append((label, "latency", peer.describe(spec)))

        def once() -> None:
            p50, p99 = work.latency(peer, spec, p.latency, p.rate)
            r.add(label, "latency_p50", p50, "ms")
            r.add(label, "latency_p99", p99, "ms")

        for _ in range(p.reps):
            self.measure(f"{label} latency", once)
        sample = r.get(label, "latency_p50")
        say(f"{label} latency p50 (ms): {sample.cell() if sample else 'failed'}")

    # -- GoPherQ only --------------------------------------------------------------------------------------------

    def _gopherq_extras(self, peer: GoPherQPeer, work: Workloads) -> None:
        p, r = self.plan, self.results
        for c in p.concurrency:
            spec = WorkerSpec("http", concurrency=c, options={"transport": "httpx"})
            self._http(peer, work, "GoPherQ (httpx transport)", spec)
        for ratio, name in (("0.01", "GoPherQ (tracing on, 1 %)"), ("1.0", "GoPherQ (tracing on, 100 %)")):
            for c in p.concurrency:  # the otel plugin: a CONSUMER and a CLIENT span per task, traceparent sent
                self._http(peer, work, name, WorkerSpec("http", concurrency=c, options={"tracing": ratio}))
        for variant, name, what in (
            ("low", "GoPherQ (priorities in use)", "every task on the `low` priority level"),
            ("unique", "GoPherQ (unique tasks)", "a `unique_key` on every task"),
        ):
            spec = WorkerSpec("noop")
            r.configs.append((name, "noop drain", f"{peer.describe(spec)}, {what}"))
            self.repeat(name, "noop_drain", "tasks/s", partial(self._variant_drain, work, peer, spec, variant))
        for processes in (1, 2):
            name = "GoPherQ x1 process (scaling)" if processes == 1 else "GoPherQ x2 processes"
            spec = WorkerSpec("noop", processes=processes)
            r.configs.append((name, "noop drain", peer.describe(spec)))
            self.repeat(name, "noop_drain", "tasks/s", partial(self._staged, work, peer, spec, name))
        if self.mode != "smoke":  # the smoke run stays seconds long; `python -m bench.defaults` runs these alone
            self._defaults(peer, work)
        if "soak" not in self.skip:
            say(f"GoPherQ soak: {p.soak_total:,} noop tasks")
            spec = WorkerSpec("noop")
            r.configs.append(("GoPherQ", "soak", peer.describe(spec)))
            soak = self.measure("GoPherQ soak", partial(work.soak, peer, spec, p.soak_step, p.soak_total))
            r.soak.extend(soak if isinstance(soak, list) else [])
        if p.profile and "profile" not in self.skip:
            say("GoPherQ noop drain under py-spy")
            self.measure("GoPherQ profile", partial(profile.profile_noop, peer, work, p.profile, r, self.img))
            say("GoPherQ HTTP drain (c=100) under py-spy")
            action = partial(profile.profile_http, peer, work, p.profile // 2, 100, r)
            self.measure("GoPherQ HTTP profile", action)

    def _defaults(self, peer: GoPherQPeer, work: Workloads) -> None:
        """The cost of the defaults: the x1 scaling row has the stream on (the default), these have it off or
        without timelines, and the shipped rows run the example gopherq.toml as shipped (logging at INFO with its
        sink, stream on)."""
        p, r = self.plan, self.results
        for name, options in (
            ("GoPherQ x1, stream off", {"stream": "off"}),
            ("GoPherQ x1, stream on, no timelines", {"stream": "no-timeline"}),
            ("GoPherQ x1, prefetch (worker.prefetch = batch_size)", {"prefetch": str(NOOP_BATCH)}),
            ("GoPherQ x1, shipped gopherq.toml", {"config": "shipped"}),
        ):
            spec = WorkerSpec("noop", options=options)
            r.configs.append((name, "noop drain", peer.describe(spec)))
            self.repeat(name, "noop_drain", "tasks/s", partial(self._staged, work, peer, spec, name))
        for c in p.concurrency:
            shipped = WorkerSpec("http", concurrency=c, options={"config": "shipped"})
            self._http(peer, work, "GoPherQ (shipped gopherq.toml)", shipped)

    def _variant_drain(self, work: Workloads, peer: GoPherQPeer, spec: WorkerSpec, variant: str) -> float:
        """The noop drain with task-control fields on the tasks (see GoPherQPeer.variant): their cost."""
        peer.variant = variant
        try:
            return work.noop_drain(peer, spec, self.plan.noop)
        finally:
            peer.variant = None

    def _api(self, run_dir: Path, redis: RedisServer) -> None:
        """The /v1 enqueue API (bench/api.py): one `gopherq api` process, single-task POSTs and batches of 1,000."""
        name = "GoPherQ"  # the API's columns of GoPherQ's row
        seconds = min(self.plan.http_window, 10.0) / (4 if self.mode == "smoke" else 1)
        self.results.configs.append((name, "HTTP API", "one `gopherq api` process, token auth, 64 connections"))
        server = ApiServer(run_dir, redis)
        if self.measure("GoPherQ HTTP API start", server.start) is None:
            return
        try:
            self.repeat(name, "api_single", "tasks/s", partial(server.measure, seconds, 0))
            self.repeat(name, "api_batch", "tasks/s", partial(server.measure, seconds, 1000))
        finally:
            server.stop()

    # -- ceilings ------------------------------------------------------------------------------------------------

    def _ceilings(self, redis: RedisServer, target: HttpTarget) -> None:
        p, r = self.plan, self.results
        say("ceilings")
        for name, client in CEILING_CLIENTS.items():
            if not ceilings.available(client):
                continue
            for c in p.concurrency:
                if client == "requests" and c > 100:
                    continue  # hundreds of threads measure the GIL, not the client
                action = partial(ceilings.http_ceiling, client, target.url, p.ceiling_http, c, p.http_window)
                self.repeat(name, f"c={c}", "req/s", action, ceiling=True)
        for _ in range(p.reps):
            found = self.measure("redis-benchmark", partial(ceilings.redis_benchmark, redis.port, p.redis_requests))
            for key, value in (found if isinstance(found, dict) else {}).items():
                r.add_ceiling("redis-benchmark", key, value, "req/s")
        action = partial(ceilings.protocol_ceiling, redis.url, p.protocol)
        self.repeat("GoPherQ claim+settle, no executor", "batch 200", "tasks/s", action, ceiling=True)

    # -- report --------------------------------------------------------------------------------------------------

    def _report(self) -> None:
        results = self.results
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.mode == "smoke":
            results.save(self.out.with_suffix(".json"))
        else:
            results.save(REPO / "bench" / "results" / f"{stamp}-{self.mode}.json")
        chart_path = self.img / "benchmarks.png" if self.mode != "smoke" else self.img / "benchmarks-smoke.png"
        chart = None
        if write_chart(results, chart_path):
            chart = os.path.relpath(chart_path, self.out.parent)
        write_markdown(results, self.out, chart, f"# GoPherQ benchmarks ({self.mode})\n")
        say(f"report written to {self.out}" + (f" and {chart_path}" if chart else ""))


def render_saved(path: Path, out: Path, img: Path) -> None:
    """Write the report of a saved run again (e.g. after a change to the report's layout)."""
    results = Results.load(path)
    chart_path = img / "benchmarks.png"
    chart = os.path.relpath(chart_path, out.parent) if write_chart(results, chart_path) else None
    write_markdown(results, out, chart, f"# GoPherQ benchmarks ({results.mode})\n")
    say(f"report of {path.name} written to {out}")
