"""The throughput chart: per-minute counts turned into the geometry of a small inline SVG bar chart.

Drawn on the server, so the page needs no charting script and the CSP can stay free of inline code: the template
only places the rectangles this module computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 600
HEIGHT = 120
GAP = 1.0


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute: a green part (attempts that succeeded) under a red part (attempts that failed: retried or
    dead-lettered)."""

    x: float
    width: float
    ok_y: float
    ok_height: float
    bad_y: float
    bad_height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    peak: int
    total_ok: int
    total_bad: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return self.peak == 0


def _count(minute: Any, name: str) -> int:
    value = minute.get(name, 0) if isinstance(minute, dict) else getattr(minute, name, 0)
    return int(value or 0)


def throughput_chart(minutes: Sequence[Any]) -> Chart:
    """Bars for `minutes` (oldest first: MinuteCounts, or dicts with their fields)."""
    counts = [(_count(m, "succeeded"), _count(m, "failed"), _count(m, "minute")) for m in minutes]
    peak = max((ok + bad for ok, bad, _ in counts), default=0)
    slot = WIDTH / max(len(counts), 1)
    bars = []
    for index, (ok, bad, minute) in enumerate(counts):
        scale = (HEIGHT - 2) / peak if peak else 0.0
        ok_height = ok * scale
        bad_height = bad * scale
        ok_y = HEIGHT - ok_height
        when = _clock(minute)
        bars.append(
            Bar(
                x=round(index * slot, 2),
                width=round(max(slot - GAP, 0.5), 2),
                ok_y=round(ok_y, 2),
                ok_height=round(ok_height, 2),
                bad_y=round(ok_y - bad_height, 2),
                bad_height=round(bad_height, 2),
                title=f"{when}: {ok} succeeded, {bad} failed",
            )
        )
    return Chart(bars, peak, sum(c[0] for c in counts), sum(c[1] for c in counts))


def _clock(minute: int) -> str:
    if minute <= 0:
        return "-"
    from datetime import datetime, timezone

    return datetime.fromtimestamp(minute, timezone.utc).strftime("%H:%M UTC")
