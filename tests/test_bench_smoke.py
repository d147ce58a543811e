"""The benchmark harness runs end to end: `python -m bench --smoke` (GoPherQ only, a few hundred tasks, its own
Redis on a free port, nginx or a Python HTTP target) writes a well-formed report. No assertion on speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import REPO

pytestmark = [pytest.mark.bench, pytest.mark.timeout(90)]

NUMBER = re.compile(r"^[\d,]+(\.\d+)?( \([\d,]+(\.\d+)?-[\d,]+(\.\d+)?\))?$")


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of the text, as rows of stripped cells (separator rows left out)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-:") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_smoke_run_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "BENCH_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--img", str(tmp_path / "img")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench:results:start -->" in text and "<!-- bench:results:end -->" in text
    assert "Runs that failed" not in text, text

    tables = markdown_tables(text)
    results = next(t for t in tables if t[0][0] == "system")
    header = results[0]
    assert header[1:4] == ["enqueue 1-by-1 (tasks/s)", "enqueue bulk (tasks/s)", "noop drain (tasks/s)"]
    assert any(cell.startswith("HTTP c=") for cell in header)
    assert "latency p50 (ms)" in header and "latency p99 (ms)" in header
    for row in tables[tables.index(results)][1:]:
        assert len(row) == len(header), row
        assert all(NUMBER.match(cell) or cell == "—" for cell in row[1:]), row
    gopherq = next(row for row in results if row[0] == "GoPherQ")
    assert all(NUMBER.match(cell) for cell in gopherq[1:]), gopherq  # every workload produced a figure
    for table in tables:
        assert all(len(row) == len(table[0]) for row in table), table

    data = json.loads(out.with_suffix(".json").read_text())
    assert data["mode"] == "smoke"
    assert data["table"]["GoPherQ"]["noop_drain"]["values"][0] > 0
    assert len(data["soak"]) == 2
