"""The fair keys' gauges of the `/metrics` endpoint (web/exposition.py): backlog, running tasks and oldest wait of
each queue's most backlogged keys, at most FAIR_KEYS_MAX per queue, so a queue with a million tenants still has a
bounded number of series (the Keys page and `gopherq keys` show the rest)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gopherq.core.inspect.fair_keys import KeyInfo

#: Most keys per queue in one scrape (the most backlogged).
FAIR_KEYS_MAX = 20

#: (metric name, help, KeyInfo attribute) of the per-key gauges.
KEY_GAUGES = (
    ("gopherq_fair_key_backlog", "Tasks of a fair key waiting, all priority levels (most backlogged keys).", "backlog"),
    ("gopherq_fair_key_running", "Tasks of a fair key claimed by a worker and not yet settled.", "running"),
    (
        "gopherq_fair_key_oldest_wait_seconds",
        "How long the oldest waiting task of a fair key has waited since it became ready.",
        "oldest_wait",
    ),
    ("gopherq_fair_key_weight", "A fair key's weight: its share of the claims among busy keys.", "weight"),
)


class FairKeySnapshot(Collector):
    """The per-key gauges of each queue's most backlogged fair keys, read once per scrape."""

    def __init__(self, keys: dict[str, list[KeyInfo]]) -> None:
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        for name, text, attribute in KEY_GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["queue", "key"])
            for queue, infos in self.keys.items():
                for info in infos[:FAIR_KEYS_MAX]:
                    value = info.limits.weight if attribute == "weight" else getattr(info, attribute)
                    if value is not None:
                        gauge.add_metric([queue, info.key], float(value))
            yield gauge
