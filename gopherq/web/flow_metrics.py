"""The flows' part of `/metrics` (flows are DAGs of tasks, docs/flows.md): per queue, the flows in progress, the
finished ones still kept, and the counts the reconciler repaired. Three small reads per queue per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient


class DagSnapshot(Collector):
    """`gopherq_flows_in_progress`, `gopherq_flows_finished` and `gopherq_flow_repairs_total`, per queue."""

    def __init__(self, rows: dict[str, tuple[int, int, int]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("gopherq_flows_in_progress", "Flows not yet finished.", labels=["queue"])
        finished = GaugeMetricFamily(
            "gopherq_flows_finished", "Finished flows still kept (queue.result_ttl after they end).", labels=["queue"]
        )
        repairs = CounterMetricFamily(
            "gopherq_flow_repairs", "Counts the flow reconciler found wrong and repaired.", labels=["queue"]
        )
        for queue, (open_count, done_count, repaired) in self.rows.items():
            running.add_metric([queue], open_count)
            finished.add_metric([queue], done_count)
            repairs.add_metric([queue], repaired)
        yield running
        yield finished
        yield repairs


async def dag_snapshot(redis: RedisClient, queues: list[str]) -> DagSnapshot:
    rows: dict[str, tuple[int, int, int]] = {}
    for queue in queues:
        keys = QueueKeys(queue)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.dags)
            pipe.zcard(keys.dags_done)
            pipe.hget(keys.stats, "flow_repairs")
            open_count, done_count, repaired = await pipe.execute()
        rows[queue] = (int(open_count), int(done_count), int(repaired or 0))
    return DagSnapshot(rows)
