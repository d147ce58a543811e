"""Per-destination flow control shared by all workers: global concurrency, rate, adaptive slow-down on 429s and
the circuit breaker, through real workers (processes where it matters) against a real loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq import TaskFailure
from gopherq.client import AsyncClient
from gopherq.core import codec
from gopherq.core.flow import FlowGate, FlowLimits
from gopherq.core.inspect import Inspector
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings
from gopherq.plugins.http import HostRule
from gopherq.plugins.http.flow import HostRules, flow_signal
from gopherq.web.exposition import render_metrics
from tests.support.common import free_port, wait_until, write_config
from tests.support.plugins import CaptureSink, ExecutorPlugin, NoopExecutor, SinkPlugin


class FlowServer:
    """An aiohttp server in its own thread that records arrival times and the most requests in flight at once.

    `/work?ms=` answers 200 after that long; `/storm` answers 429 while `storm` is set, else 200."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.storm = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="flow-http", daemon=True)

    def _serve(self) -> None:
        from aiohttp import web

        async def work(request: web.Request) -> web.Response:
            with self._lock:
                self.arrivals.append(time.time())
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(float(request.query.get("ms", 0)) / 1000)
            finally:
                with self._lock:
                    self.in_flight -= 1
            return web.Response(text="ok")

        async def storm(request: web.Request) -> web.Response:
            with self._lock:
                self.arrivals.append(time.time())
            if self.storm:
                return web.Response(status=429, text="slow down")
            return web.Response(text="ok")

        app = web.Application()
        app.add_routes([web.route("*", "/work", work), web.route("*", "/storm", storm)])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FlowServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def flow_server() -> Iterator[FlowServer]:
    server = FlowServer().start()
    yield server
    server.stop()


def config(directory: Path, redis_url: str, queue: str, hosts: str, concurrency: int = 20) -> Path:
    return write_config(
        directory,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue}"\n'
        f"[worker]\nconcurrency = {concurrency}\nlease_timeout = 5.0\nheartbeat_interval = 0.5\n"
        "promote_interval = 0.05\n"
        '[logging]\nlevel = "INFO"\n[plugins.logging]\nevents = ["worker.started"]\n'
        f"[[plugins.http.hosts]]\n{hosts}\n",
    )


def push(client: redis.Redis, queue: str, urls: list[str], **extra: Any) -> list[str]:
    ids = [f"t{n}" for n in range(len(urls))]
    client.rpush(queue, *[codec.dumps({"id": i, "url": u, **extra}) for i, u in zip(ids, urls, strict=True)])
    return ids


def results(client: redis.Redis, queue: str, ids: list[str]) -> list[dict[str, Any]]:
    keys = QueueKeys(queue)
    raw = client.mget([keys.result(i) for i in ids])
    return [codec.loads(r) for r in raw if r is not None]


# -- the pure parts ------------------------------------------------------------------------------------------------


def test_the_first_matching_host_rule_gives_the_limits() -> None:
    rules = HostRules([HostRule(match="*.example.com", rate=5), HostRule(match="*", concurrency=2)])
    found = rules.limits("api.example.com")
    assert found is not None and found.rate == 5 and found.concurrency is None
    other = rules.limits("partner.io")
    assert other is not None and other.concurrency == 2 and other.rate is None
    assert not HostRules([]) and HostRules([]).limits("x") is None


def test_what_an_http_attempt_signals_to_the_breaker_and_the_rate() -> None:
    def status(code: int) -> TaskFailure:
        return TaskFailure("http_status", f"HTTP {code}", details={"status_code": code})

    assert flow_signal(None) == "ok"
    assert flow_signal(TaskFailure("connect_error", "refused")) == "error"
    assert flow_signal(TaskFailure("timeout", "slow")) == "error"
    assert flow_signal(status(429)) == "slow"
    assert flow_signal(status(503)) == "slow_error"
    assert flow_signal(status(500)) == "error"
    assert flow_signal(status(404)) == "neutral"


async def test_over_the_rate_a_task_reserves_the_next_slot_and_a_slow_down_restarts_the_schedule(
    aredis: Any, queue_name: str
) -> None:
    gate = FlowGate(aredis, queue_name)
    limits = FlowLimits(rate=10, burst=1, slow_down=0.5)
    verdicts, _ = await gate.admit([("h", limits, str(n), None) for n in range(5)], 2**50)
    assert verdicts[0].due == 0 and verdicts[0].reservation == 0  # within the rate: runs now
    dues = [v.due for v in verdicts[1:]]
    assert all(abs((b - a) - 100) <= 2 for a, b in itertools.pairwise(dues))  # 10/s: one slot per 100 ms
    held = verdicts[1].reservation
    assert held > 0 and all(v.reservation == held for v in verdicts[1:])
    back, _ = await gate.admit([("h", limits, "1", held)], 2**50)
    assert back[0].due == 0  # a reserved slot is not checked twice
    await gate.done([("h", limits, "0", "slow", None, None)])  # a 429: half the rate, the schedule restarts
    again, _ = await gate.admit([("h", limits, str(n), held) for n in (2, 3, 4)], 2**50)
    assert again[0].due == 0 and again[1].due > 0  # the old reservations are checked again
    assert abs((again[2].due - again[1].due) - 200) <= 2  # at 5/s
    assert again[1].reservation > held


# -- across worker processes ---------------------------------------------------------------------------------------


def test_global_concurrency_holds_across_three_worker_processes(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    worker_process: Callable[..., Any],
    run_gopherq: Callable[..., Any],
    flow_server: FlowServer,
) -> None:
    cfg = config(tmp_path, redis_url, queue_name, 'match = "127.0.0.1"\nconcurrency = 3\nwait = 0.05')
    procs = [worker_process(["run", "-c", str(cfg)]) for _ in range(3)]
    for proc in procs:
        wait_until(lambda proc=proc: "started: queue" in proc.output, timeout=30, what="worker start")
    ids = push(sync_redis, queue_name, [flow_server.url("/work?ms=60")] * 60)
    wait_until(lambda: len(results(sync_redis, queue_name, ids)) == 60, timeout=60, what="every task done")
    assert flow_server.max_in_flight == 3  # reached, never exceeded (each worker alone would run 20 at once)
    done = results(sync_redis, queue_name, ids)
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in done)  # held back, not retried
    assert sync_redis.zcard(QueueKeys(queue_name).flow_slots("127.0.0.1")) == 0  # every slot given back
    listed = run_gopherq(["hosts", "-c", str(cfg)])
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("127.0.0.1  circuit=closed  failures=0  rate=100%  running=0")
    assert "1 host(s)" in listed.stderr


@pytest.mark.chaos
def test_a_rate_of_20_per_second_holds_within_10_percent_over_10_seconds_across_processes(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    worker_process: Callable[..., Any],
    flow_server: FlowServer,
) -> None:
    cfg = config(tmp_path, redis_url, queue_name, 'match = "127.0.0.1"\nrate = 20')
    procs = [worker_process(["run", "-c", str(cfg)]) for _ in range(3)]
    for proc in procs:
        wait_until(lambda proc=proc: "started: queue" in proc.output, timeout=30, what="worker start")
    ids = push(sync_redis, queue_name, [flow_server.url("/work")] * 280)
    wait_until(lambda: len(flow_server.arrivals) >= 260, timeout=40, what="13 s of requests")
    arrivals = sorted(flow_server.arrivals)
    start = arrivals[0] + 1.0  # the measurement skips the first second
    window = [t for t in arrivals if start <= t < start + 10.0]
    print(f"flow accuracy: {len(window)} requests in 10 s at rate = 20/s ({len(window) / 200 - 1:+.1%})")
    assert 180 <= len(window) <= 220
    wait_until(lambda: len(results(sync_redis, queue_name, ids)) == 280, timeout=30, what="every task done")
    assert all(r["attempts"] == 1 for r in results(sync_redis, queue_name, ids))


# -- adaptive rate and circuit breaker, in-process -----------------------------------------------------------------


async def test_a_429_storm_lowers_the_rate_for_everyone_and_it_recovers(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], flow_server: FlowServer, aredis: Any
) -> None:
    rule = {"match": "127.0.0.1", "rate": 40, "burst": 5, "ramp_up": 1.0, "circuit_failures": 0}
    settings = make_settings(plugins={"http": {"hosts": [rule]}}, queue={"backoff_min": 0.05, "backoff_max": 0.2})
    sink = CaptureSink()
    await start_worker(settings, extra_plugins={"capture": SinkPlugin(sink)})
    flow_server.storm = True
    async with AsyncClient(settings) as client:
        ids = [await client.enqueue_http(flow_server.url("/storm"), max_attempts=50) for _ in range(20)]
        lowered = await sink.wait_named("host.rate_lowered", timeout=20)
        assert lowered[0].data["key"] == "127.0.0.1" and lowered[0].data["rate_factor"] == 0.5
        gate = FlowGate(aredis, settings.queue.name)
        state = (await gate.states())[0]
        assert state["key"] == "127.0.0.1" and state["rate_factor"] < 1
        assert await host_metric(aredis, settings, "gopherq_host_rate_factor") < 1  # visible in /metrics too
        flow_server.storm = False
        await sink.wait_named("host.rate_restored", timeout=30)
        for task_id in ids:
            result = await client.wait(task_id, timeout=30)
            assert result is not None and result.status.value == "succeeded"
    assert (await gate.states())[0]["rate_factor"] == 1.0
    assert await host_metric(aredis, settings, "gopherq_host_rate_factor") == 1.0


async def host_metric(aredis: Any, settings: Settings, name: str) -> float:
    """The value of a per-host gauge of the queue's destination 127.0.0.1, as `/metrics` renders it."""
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = await render_metrics(Inspector(aredis, settings), [settings.queue.name])
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"queue": settings.queue.name, "key": "127.0.0.1"}:
                return float(sample.value)
    raise AssertionError(f"{name} not in the metrics")


async def test_a_refusing_host_opens_its_circuit_without_consuming_attempts_and_a_probe_closes_it(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: Any
) -> None:
    port = free_port()  # nothing listens yet: connections are refused
    rule = {"match": "127.0.0.1", "concurrency": 1, "circuit_failures": 3, "circuit_cooldown": 1.0, "wait": 0.05}
    settings = make_settings(plugins={"http": {"hosts": [rule]}}, queue={"backoff_min": 0.05, "backoff_max": 0.1})
    sink = CaptureSink()
    await start_worker(settings, extra_plugins={"capture": SinkPlugin(sink)})
    async with AsyncClient(settings) as client:
        ids = [await client.enqueue_http(f"http://127.0.0.1:{port}/work", max_attempts=30) for _ in range(10)]
        opened = await sink.wait_named("host.circuit_opened", timeout=20)
        assert opened[0].data["key"] == "127.0.0.1"
        gate = FlowGate(aredis, settings.queue.name)
        assert (await gate.states())[0]["circuit"] in ("open", "half-open")
        assert await host_metric(aredis, settings, "gopherq_host_circuit_open") == 1.0
        # While open, only the single probe per cool-down calls the host: attempts are not burnt.
        await sink.wait_named("host.circuit_half_open", count=2, timeout=20)
        failed = len(sink.named("task.failed"))
        probes = len(sink.named("host.circuit_half_open"))
        assert failed <= 3 + probes
        server = FlowServer(port).start()
        try:
            await sink.wait_named("host.circuit_closed", timeout=20)
            for task_id in ids:
                result = await client.wait(task_id, timeout=30)
                assert result is not None and result.status.value == "succeeded"
            assert sum(r.attempts for r in [await client.result(i) for i in ids] if r) <= 10 + failed
        finally:
            server.stop()
    assert (await gate.states())[0]["circuit"] == "closed"
    assert len(sink.named("task.throttled")) > 0


class OneHost(NoopExecutor):
    """A no-op whose tasks share one flow key, at most `limit` of them running at once (as an http task's host)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def flow(self, task: Any) -> tuple[str, FlowLimits]:
        return "one-host", FlowLimits(concurrency=self.limit)


async def test_a_workers_finished_tasks_free_their_flow_slots_before_its_next_batch_is_admitted(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    """A flow key's concurrency slots are freed with the settle of the attempts that held them, or before the next
    batch is admitted if that comes first: else the batch claimed for the slots a worker's own finished tasks left
    was admitted against those slots, still taken, and deferred (a bounce through the delayed set, no attempt)."""
    settings = make_settings(worker={"concurrency": 10, "batch_size": 10})
    extra = {"capped": ExecutorPlugin("capped", OneHost(limit=10))}
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=extra)) as client:
        ids = await client.enqueue_many([client.task("capped") for _ in range(100)])
        running = await start_worker(settings, extra_plugins=extra)
        for task_id in ids:
            record = await client.wait(task_id, timeout=15)
            assert record is not None and record.status.value == "succeeded"
    assert running.worker.stats["deferred"] == 0  # never held back by its own worker's finished tasks
