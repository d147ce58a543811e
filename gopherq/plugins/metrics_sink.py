"""The built-in `metrics` sink: Prometheus metrics of one worker process on its own port (`[metrics] port`).

It counts what the worker's events say: task outcomes by queue, type, outcome and reason
(`gopherq_tasks_total`), attempt durations (`gopherq_attempt_duration_seconds`, with the attempt's trace id as an
exemplar when the `otel` plugin recorded its span), time in queue from ready to start
(`gopherq_task_queue_wait_seconds`, from `task.started`), retries, recoveries and HTTP responses by status class and
exact code (and by target host when `[metrics] http_host_label` is on); at each scrape it adds the event sinks'
delivered and dropped counts, the tasks running now and the age of the longest-running one, `gopherq_build_info`
and prometheus-client's process, platform and garbage-collector collectors. Label values that come from task data
(type, reason, host, status code) are bounded: past a limit (or outside 100-599 for a code), new values count as
`other`, so a producer cannot blow up the number of series. Off by default: without a port nothing is registered
and no event is built for it.

With `worker.processes` = N the supervisor gives child i the port `port + i` (N children: port..port+N-1). The
server runs in a daemon thread of the worker process (prometheus-client's own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gopherq import Event, RegisterSink, Settings, WorkerView, hookimpl
from gopherq.web.exposition import register_process_collectors

log = logging.getLogger(__name__)

#: The events this sink reads.
EVENTS = ("task.started", "task.succeeded", "task.retrying", "task.dead_lettered", "task.recovered")

#: Distinct task types and failure reasons kept as label values before the rest count as "other".
LABEL_VALUES_MAX = 50

#: Attempt duration buckets, seconds: from a no-op to a slow HTTP call.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: Time-in-queue buckets, seconds: from a task taken at once to one that waited an hour.
WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

#: The priority levels, the only values of the `priority` label.
PRIORITIES = frozenset({"high", "default", "low"})

OUTCOME_OF = {"task.succeeded": "succeeded", "task.retrying": "retried", "task.dead_lettered": "dead"}


class BoundedLabel:
    """Passes the first `limit` distinct values through and maps every later new one to "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        text = "" if value is None else str(value)
        if text in self.seen:
            return text
        if len(self.seen) < self.limit:
            self.seen.add(text)
            return text
        return "other"


def _valid_status(status: Any) -> bool:
    return type(status) is int and 100 <= status <= 599


def status_class(status: Any) -> str:
    return f"{status // 100}xx" if _valid_status(status) else "other"


def status_code(status: Any) -> str:
    """The exact code as a label value: one of the 500 valid codes (100-599), anything else "other"."""
    return str(status) if _valid_status(status) else "other"


class LiveCollector(Collector):
    """What is read at scrape time from the worker itself: sink counters and the tasks running now."""

    def __init__(self) -> None:
        self.worker: WorkerView | None = None

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        if worker is None:
            return
        delivered = CounterMetricFamily("gopherq_event_sink_delivered", "Events handed to a sink.", labels=["sink"])
        dropped = CounterMetricFamily(
            "gopherq_event_sink_dropped", "Events a sink lost (buffer full or sink broken).", labels=["sink"]
        )
        for name, stats in worker.bus.stats().items():
            delivered.add_metric([name], float(stats.get("delivered", 0)))
            dropped.add_metric([name], float(stats.get("dropped", 0)))
        yield delivered
        yield dropped
        running = GaugeMetricFamily("gopherq_worker_running_tasks", "Tasks this worker is running.", labels=["queue"])
        running.add_metric([worker.queue], float(len(worker.executing)))
        yield running
        since = worker.oldest_claimed  # as of the last heartbeat (read here, never computed in this thread)
        oldest = GaugeMetricFamily(
            "gopherq_worker_oldest_running_seconds",
            "How long this worker's longest-running task has been running (0 when none).",
            labels=["queue"],
        )
        oldest.add_metric([worker.queue], max(0.0, time.time() - since) if since is not None else 0.0)
        yield oldest


class MetricsSink:
    """Turns events into Prometheus counters and serves them (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.metrics
        self.port = cfg.port
        self.host = cfg.host
        self.registry = CollectorRegistry(auto_describe=True)
        self.live = LiveCollector()
        self.registry.register(self.live)
        register_process_collectors(self.registry)
        self.task_type = BoundedLabel(LABEL_VALUES_MAX)
        self.reason = BoundedLabel(LABEL_VALUES_MAX)
        self.http_host = BoundedLabel(cfg.http_hosts_max) if cfg.http_host_label else None
        self.tasks = Counter(
            "gopherq_tasks",
            "Task outcomes: succeeded, retried (an attempt failed, another follows) or dead (dead-lettered).",
            ["queue", "type", "outcome", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gopherq_attempt_duration_seconds",
            "Duration of attempts, by how they ended.",
            ["queue", "type", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter("gopherq_task_retries", "Retries scheduled.", ["queue", "type"], registry=self.registry)
        self.recovered = Counter(
            "gopherq_tasks_recovered",
            "Tasks recovered from a dead worker or an expired lease.",
            ["queue"],
            registry=self.registry,
        )
        self.wait = Histogram(
            "gopherq_task_queue_wait_seconds",
            "Time in queue: from when a task became ready (enqueued, retry or eta due, requeued, recovered) to the "
            "start of its attempt. Tasks whose envelope does not tell (a raw push without created_at) are left out.",
            ["queue", "priority"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        http_labels = ["queue", "status_class", "code"] + (["host"] if self.http_host else [])
        self.http = Counter(
            "gopherq_http_responses", "HTTP responses the executor received.", http_labels, registry=self.registry
        )
        self.server: Any = None

    async def handle(self, events: list[Event]) -> None:
        for event in events:
            queue = event.queue or ""
            if event.name == "task.started":
                waited = event.data.get("waited")
                if isinstance(waited, (int, float)):
                    priority = event.data.get("priority")
                    self.wait.labels(queue, priority if priority in PRIORITIES else "default").observe(waited)
                continue
            if event.name == "task.recovered":
                self.recovered.labels(queue).inc()
                continue
            outcome = OUTCOME_OF[event.name]
            task_type = self.task_type(event.task_type)
            data = event.data
            if outcome == "succeeded":
                reason = ""
            elif outcome == "dead":
                reason = self.reason(data.get("reason"))
            else:
                reason = self.reason((event.error or {}).get("reason"))
                self.retries.labels(queue, task_type).inc()
            self.tasks.labels(queue, task_type, outcome, reason).inc()
            if event.duration is not None:
                # An exemplar links the observation to the attempt's trace when it was recorded (the otel plugin
                # puts `attempt_trace_id` in the data); the OpenMetrics exposition shows it.
                trace_id = data.get("attempt_trace_id")
                exemplar = {"trace_id": trace_id} if isinstance(trace_id, str) and len(trace_id) == 32 else None
                self.duration.labels(queue, task_type, outcome).observe(event.duration, exemplar)
            status = data.get("http_status")
            if status is not None:
                if self.http_host is not None:
                    host = self.http_host(data.get("http_host"))
                    self.http.labels(queue, status_class(status), status_code(status), host).inc()
                else:
                    self.http.labels(queue, status_class(status), status_code(status)).inc()

    def serve(self, worker: WorkerView) -> None:
        """Start the HTTP server (called once the worker is up); a port in use is logged, not fatal."""
        assert self.port is not None
        self.live.worker = worker
        try:
            self.server, _thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            log.error("metrics: cannot serve on %s port %d: %s", self.host, self.port, exc)
            return
        log.info("worker %s serves Prometheus metrics on http://%s:%d/metrics", worker.id, self.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _State:
    """The metrics sink of this process, shared by the registration and lifecycle hooks."""

    sink: MetricsSink | None = None


STATE = _State()


@hookimpl
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    STATE.sink = None
    if settings.metrics.port is not None:
        STATE.sink = MetricsSink(settings)
        register("metrics", STATE.sink, events=EVENTS, batch_size=500)


@hookimpl
def gopherq_startup(worker: WorkerView) -> None:
    if STATE.sink is not None:
        STATE.sink.serve(worker)


@hookimpl
def gopherq_shutdown(worker: WorkerView) -> None:
    if STATE.sink is not None:
        STATE.sink.stop()
