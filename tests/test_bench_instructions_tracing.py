"""`python -m bench.instructions_tracing` runs end to end on a small scale (a worker under callgrind draining HTTP
tasks against nginx): the count is per task, and a worker that records every attempt's spans runs more
instructions per task than one with tracing off. No speed asserted beyond that."""

from __future__ import annotations

import shutil

import pytest

from bench import instructions_tracing
from tests.support.common import REPO

pytestmark = [
    pytest.mark.bench,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]


def test_the_count_is_per_http_task_and_recording_spans_costs_more() -> None:
    off = instructions_tracing.worker_row(REPO, "off", 200)
    traced = instructions_tracing.worker_row(REPO, "1.0", 200)
    assert 100_000 < off < traced  # an HTTP task costs a worker far more than 100k instructions; its spans more
