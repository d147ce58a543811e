"""`python -m bench.fairness` runs end to end on a small scale (its own Redis on a free port) and prints every row,
the fairness rows sized from the rate it measured. No assertion on speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import REPO

pytestmark = [pytest.mark.bench, pytest.mark.timeout(120)]


def test_fairness_bench_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "fairness.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "BENCH_"))}
    args = ["--big", "2000", "--keys", "2000", "--window", "0.5", "--windows", "2", "--rounds", "2", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fairness", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in out.read_text().splitlines()[4:]}
    assert rows["noisy neighbour: small keys' wait p99 (target <= 1 s)"].endswith(" s")
    jain = rows["Jain's index, 10 equal keys, 0.5 s windows (target >= 0.98)"]
    assert len(jain.split(", ")) == 2 and "ran out" not in jain, jain
    assert rows["weighted shares 1:2:3:4, largest error (target <= 5 %)"].endswith(" %")
    assert rows["claim + settle, 2,000 active keys x 2 tasks (target >= 85 % of plain)"].endswith("%)")
    assert "µs" in rows["CPU per task, 2,000 keys: redis-server / this process"]
    paired = rows["the same, median of the 2 rounds' own ratios (target >= 85 %)"]
    assert paired.endswith("%)") and paired.count("%") == 2, paired
