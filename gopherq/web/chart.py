"""The throughput chart: per-minute counts turned into the geometry of a small inline SVG bar chart.

Drawn on the server, so the page needs no charting script and the CSP can stay free of inline code: the template
only places the rectangles this module computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gopherq.core.inspect.models import MinuteCounts

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


def throughput_chart(minutes: Sequence[Any], titles: Sequence[str] | None = None) -> Chart:
    """Bars for `minutes` (oldest first: MinuteCounts, or dicts with their fields); `titles`: each bar's tooltip
    (default: its time and its two counts)."""
    counts = [(_count(m, "succeeded"), _count(m, "failed"), _count(m, "minute")) for m in minutes]
    peak = max((ok + bad for ok, bad, _ in counts), default=0)
    slot = WIDTH / max(len(counts), 1)
    bars = []
    for index, (ok, bad, minute) in enumerate(counts):
        scale = (HEIGHT - 2) / peak if peak else 0.0
        ok_height = ok * scale
        bad_height = bad * scale
        ok_y = HEIGHT - ok_height
        when = _clock(minute) if titles is None else ""
        bars.append(
            Bar(
                x=round(index * slot, 2),
                width=round(max(slot - GAP, 0.5), 2),
                ok_y=round(ok_y, 2),
                ok_height=round(ok_height, 2),
                bad_y=round(ok_y - bad_height, 2),
                bad_height=round(bad_height, 2),
                title=titles[index] if titles is not None else f"{when}: {ok} succeeded, {bad} failed",
            )
        )
    return Chart(bars, peak, sum(c[0] for c in counts), sum(c[1] for c in counts))


def _clock(minute: int, fmt: str | None = None) -> str:
    """A bar's time: "HH:MM UTC" by arithmetic (a chart has hundreds of bars per page), or `fmt` (strftime)."""
    if minute <= 0:
        return "-"
    if fmt is None:
        return f"{minute // 3600 % 24:02d}:{minute // 60 % 60:02d} UTC"
    return datetime.fromtimestamp(minute, timezone.utc).strftime(fmt)


#: Per span: what one bar is, how its time is written, and the label of the left end of the axis.
SPANS: dict[str, tuple[str, str | None, str]] = {
    "1h": ("minute", None, "60 min ago"),
    "24h": ("hour", "%d %b %H:00 UTC", "24 h ago"),
    "7d": ("hour", "%d %b %H:00 UTC", "7 days ago"),
}


@dataclass(frozen=True, slots=True)
class Line:
    """A series drawn over the bars (mean attempt duration, or time in queue), scaled to its own peak."""

    name: str
    points: str
    peak: float | None


@dataclass(frozen=True, slots=True)
class History:
    """A chart of one span: outcome bars whose tooltips give every value of their bucket, and two lines."""

    chart: Chart
    lines: list[Line]
    span: str
    unit: str
    since: str


def history_chart(buckets: Sequence[MinuteCounts], span: str) -> History:
    """The chart of `span` (one of SPANS) from its buckets (MinuteCounts, oldest first): throughput bars, and the
    mean duration and time in queue as lines; each bar's tooltip (an SVG title, shown on hover) says it all."""
    unit, fmt, since = SPANS.get(span, SPANS["1h"])
    titles = [
        f"{_clock(bucket.minute, fmt)}: {bucket.succeeded} succeeded, {bucket.failed} failed attempts "
        f"({bucket.retried} retried, {bucket.dead} dead-lettered); mean duration {_seconds(bucket.duration)}, "
        f"mean time in queue {_seconds(bucket.wait)}"
        for bucket in buckets
    ]
    chart = throughput_chart(buckets, titles)
    slot = WIDTH / max(len(buckets), 1)
    lines = []
    for name in ("duration", "wait"):
        values = [bucket.duration if name == "duration" else bucket.wait for bucket in buckets]
        peak = max((v for v in values if v is not None), default=None)
        points = " ".join(  # a step across each bucket's width: one bucket alone is still a visible line
            f"{round(index * slot + edge, 2)},{round(HEIGHT - 2 - (HEIGHT - 6) * value / peak, 2)}"
            for index, value in enumerate(values)
            if value is not None and peak
            for edge in (0.0, max(slot - GAP, 0.5))
        )
        lines.append(Line(name, points, peak))
    return History(chart, lines, span, unit, since)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
