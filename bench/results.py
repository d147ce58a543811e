"""Measurements and their summaries: every figure is a list of repeated values, shown as median (min-max)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """Repeated measurements of one figure."""

    values: list[float]
    unit: str

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def cell(self) -> str:
        if len(self.values) == 1:
            return f"{fmt(self.median)}"
        return f"{fmt(self.median)} ({fmt(self.low)}-{fmt(self.high)})"


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Results:
    """Everything one harness run produced, in the shape the report needs."""

    mode: str
    command: str
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    #: system label -> metric -> Sample
    table: dict[str, dict[str, Sample]] = field(default_factory=dict)
    #: name -> metric -> Sample (clients with no queue, redis-benchmark, GoPherQ's protocol without executor)
    ceilings: dict[str, dict[str, Sample]] = field(default_factory=dict)
    #: (system, workload) -> worker configuration used
    configs: list[tuple[str, str, str]] = field(default_factory=list)
    #: soak: (tasks processed, worker RSS in MiB, tasks/s over the last segment)
    soak: list[tuple[int, float, float]] = field(default_factory=list)
    #: profile: (function, self %, inclusive %, self µs/task)
    profile: list[tuple[str, float, float, float]] = field(default_factory=list)
    profile_note: str = ""
    #: HTTP drain profile by layer: (layer, % of busy samples, µs/task)
    profile_http: list[tuple[str, float, float]] = field(default_factory=list)
    profile_http_note: str = ""
    errors: list[str] = field(default_factory=list)

    def add(self, system: str, metric: str, value: float, unit: str) -> None:
        self.table.setdefault(system, {}).setdefault(metric, Sample([], unit)).values.append(value)

    def add_ceiling(self, name: str, metric: str, value: float, unit: str) -> None:
        self.ceilings.setdefault(name, {}).setdefault(metric, Sample([], unit)).values.append(value)

    def get(self, system: str, metric: str) -> Sample | None:
        return self.table.get(system, {}).get(metric)

    @classmethod
    def load(cls, path: Path) -> Results:
        """Read a saved run back (to render the report again without measuring)."""
        data = json.loads(path.read_text())
        for key in ("table", "ceilings"):
            data[key] = {
                name: {metric: Sample(**sample) for metric, sample in metrics.items()}
                for name, metrics in data[key].items()
            }
        data["configs"] = [tuple(row) for row in data["configs"]]
        data["soak"] = [tuple(row) for row in data["soak"]]
        data["profile"] = [tuple(row) for row in data["profile"]]
        data["profile_http"] = [tuple(row) for row in data.get("profile_http", [])]
        return cls(**data)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
