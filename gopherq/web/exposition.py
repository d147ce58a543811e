"""Prometheus metrics of queues as the Inspector sees them, rendered per scrape (what `gopherq web` serves at
/metrics): sizes, latency (overall and per priority level), pause state, live workers, orphaned tasks, the oldest
running task's age, dead letters trimmed, all-time outcome totals from the Redis counters, and the schedules' last
and next slots and last successes; plus `gopherq_build_info` and the serving process's own collectors.

Every scrape builds a fresh registry from one Inspector read per queue, so nothing is kept between scrapes and
any process (the dashboard, a sidecar) can serve the same numbers. Per-worker metrics (outcomes by type and
reason, attempt durations, time in queue, HTTP responses, sink drops) come from each worker's own port: see
gopherq/plugins/metrics_sink.py.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gopherq import __version__
from gopherq.core.inspect.models import OUTCOMES, QueueInfo
from gopherq.web.fair_metrics import FAIR_KEYS_MAX, FairKeySnapshot
from gopherq.web.flow_metrics import dag_snapshot

if TYPE_CHECKING:
    from gopherq.core.inspect import Inspector

#: (metric name, help, QueueInfo attribute) of the per-queue gauges.
QUEUE_GAUGES = (
    ("gopherq_queue_ready_tasks", "Tasks waiting in the ready list.", "ready"),
    ("gopherq_queue_delayed_tasks", "Tasks waiting in the delayed set (retries, tasks with an eta).", "delayed"),
    ("gopherq_queue_running_tasks", "Tasks claimed by a worker and not yet settled.", "running"),
    ("gopherq_queue_dead_tasks", "Dead letters kept.", "dead"),
    (
        "gopherq_queue_latency_seconds",
        "How long the oldest ready task, at any priority level, has waited since it became ready.",
        "latency",
    ),
    ("gopherq_queue_paused", "1 while the queue is paused.", "paused"),
    ("gopherq_workers_alive", "Workers whose heartbeat is younger than the lease timeout.", "workers"),
    (
        "gopherq_queue_orphaned_tasks",
        "Running tasks held by a worker whose heartbeat is gone (recovered when a worker of this queue runs).",
        "orphaned",
    ),
    (
        "gopherq_queue_oldest_running_seconds",
        "How long the longest-running task of a live worker has been running.",
        "oldest_running",
    ),
)

#: The `state` label values of gopherq_queue_state_tasks, each a disjoint part of a queue's tasks: the delayed ones
#: split by why they wait (core/inspect/waiting.py), the running ones apart from the orphaned and from those a live
#: worker claimed ahead and has not started (`worker.prefetch`).
STATES = ("ready", "retrying", "scheduled", "held", "running", "staged", "orphaned", "dead")


def state_counts(info: QueueInfo) -> dict[str, int]:
    """A queue's tasks by state (STATES): every task counted once."""
    return {
        "ready": info.ready,
        "retrying": info.retrying,
        "scheduled": info.scheduled,
        "held": info.held,
        "running": max(0, info.running - info.orphaned - info.staged),
        "staged": info.staged,
        "orphaned": info.orphaned,
        "dead": info.dead,
    }


#: (metric name, help, LevelInfo attribute) of the per-priority-level gauges.
LEVEL_GAUGES = (
    ("gopherq_queue_level_ready_tasks", "Tasks waiting in one priority level's ready list.", "ready"),
    (
        "gopherq_queue_level_latency_seconds",
        "How long the oldest ready task of one priority level has waited since it became ready.",
        "latency",
    ),
)


class QueueSnapshot(Collector):
    """The metric families of a set of QueueInfo read once (a collector for one scrape's registry)."""

    def __init__(self, queues: Iterable[QueueInfo]) -> None:
        self.queues = list(queues)

    def collect(self) -> Iterator[Metric]:
        for name, text, attribute in QUEUE_GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue"])
            for info in self.queues:
                gauge.add_metric([info.name], float(getattr(info, attribute)))
            yield gauge
        totals = CounterMetricFamily(
            "gopherq_queue_tasks",
            "Outcomes settled on the queue since it began (processed = succeeded + failed; failed = retried + dead).",
            labels=["queue", "outcome"],
        )
        for info in self.queues:
            for outcome in OUTCOMES:
                totals.add_metric([info.name, outcome], float(info.totals.get(outcome, 0)))
        yield totals
        states = GaugeMetricFamily(
            "gopherq_queue_state_tasks",
            "Tasks of the queue by state: ready, retrying / scheduled / held (the delayed ones, by why they wait), "
            "running, orphaned (held by a worker whose heartbeat is gone), dead.",
            labels=["queue", "state"],
        )
        for info in self.queues:
            for state, count in state_counts(info).items():
                states.add_metric([info.name, state], float(count))
        yield states
        for name, text, attribute in LEVEL_GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue", "priority"])
            for info in self.queues:
                for level, reading in info.levels.items():
                    gauge.add_metric([info.name, level], float(getattr(reading, attribute)))
            yield gauge
        trimmed = CounterMetricFamily(
            "gopherq_queue_dead_trimmed",
            "Dead letters dropped, oldest first, because the queue held queue.dead_letter_max.",
            labels=["queue"],
        )
        for info in self.queues:
            trimmed.add_metric([info.name], float(info.dead_trimmed))
        yield trimmed


#: (metric name, help, schedule row key) of the per-schedule gauges; a schedule without the value has no sample.
SCHEDULE_GAUGES = (
    ("gopherq_schedule_last_slot_timestamp_seconds", "The last slot of a schedule that was enqueued.", "last_slot"),
    (
        "gopherq_schedule_next_slot_timestamp_seconds",
        "The slot due after the last one enqueued: once it is past, the schedule is late (no worker ticked it).",
        "next_slot",
    ),
    (
        "gopherq_schedule_last_success_timestamp_seconds",
        "When a task of a schedule last succeeded.",
        "last_success",
    ),
)


class ScheduleSnapshot(Collector):
    """The schedules' gauges, from one read of their state (`Inspector.schedules`)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        for name, text, key in SCHEDULE_GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue", "schedule"])
            for row in self.rows:
                if row.get(key) is not None:
                    gauge.add_metric([row["queue"], row["name"]], float(row[key]))
            yield gauge


class BuildInfo(Collector):
    """`gopherq_build_info{version, python}` = 1: which GoPherQ (and Python) a process runs."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "gopherq_build_info",
            "The GoPherQ version and Python version of this process.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


def register_process_collectors(registry: CollectorRegistry) -> None:
    """`gopherq_build_info` and prometheus-client's process, platform (`python_info`) and garbage-collector
    collectors, on `registry`."""
    registry.register(BuildInfo())
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


#: (metric name, help, flow state key) of the per-destination gauges of flow control ([[plugins.http.hosts]]).
FLOW_GAUGES = (
    (
        "gopherq_host_rate_factor",
        "Fraction of a destination's rate limit allowed now (lowered on 429/503).",
        "rate_factor",
    ),
    ("gopherq_host_circuit_open", "1 while a destination's circuit breaker is open or half-open.", "circuit"),
    ("gopherq_host_failures", "Consecutive failures counted towards a destination's circuit breaker.", "failures"),
    ("gopherq_host_running_tasks", "Tasks holding one of a destination's global concurrency slots.", "running"),
)

#: Most destinations per queue in one scrape (the most recently seen): label cardinality stays bounded.
FLOW_KEYS_MAX = 100


class FlowSnapshot(Collector):
    """The flow-control gauges of each queue's destinations, read once per scrape."""

    def __init__(self, flows: dict[str, list[dict[str, Any]]]) -> None:
        self.flows = flows

    def collect(self) -> Iterator[Metric]:
        for name, text, field in FLOW_GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue", "key"])
            for queue, states in self.flows.items():
                for state in states:
                    value = state[field]
                    if field == "circuit":
                        value = value != "closed"
                    gauge.add_metric([queue, state["key"]], float(value))
            yield gauge


async def render_metrics(inspector: Inspector, queues: list[str] | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition of every known queue (or of `queues`): (body, content type)."""
    names = queues if queues is not None else await inspector.queue_names()
    infos = [await inspector.queue(name) for name in names]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueSnapshot(infos))
    registry.register(FlowSnapshot({name: await inspector.flows(name, FLOW_KEYS_MAX) for name in names}))
    registry.register(ScheduleSnapshot(await inspector.schedules()))
    registry.register(await dag_snapshot(inspector.redis, names))  # flows (DAGs of tasks): web/flow_metrics.py
    registry.register(FairKeySnapshot({name: await inspector.fair_keys(name, FAIR_KEYS_MAX) for name in names}))
    register_process_collectors(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
