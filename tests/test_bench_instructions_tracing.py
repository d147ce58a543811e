"""`python -m bench.instructions_tracing` runs end to end on a small scale (a worker under callgrind draining HTTP
tasks against nginx): the count is per task, and a worker that records every attempt's spans runs more
instructions per task than one with tracing off. No speed asserted beyond that."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import instructions_tracing
from tests.support.common import REPO

pytestmark = [
    pytest.mark.bench,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]


def test_the_count_is_per_http_task_and_recording_spans_costs_more() -> None:
    # Both rows at once (each is one single-threaded process under valgrind, with its own Redis and nginx), after a
    # shorter warm-up than the benchmark's: the pools are full after 200 tasks at concurrency 100.
    with ThreadPoolExecutor(2) as pool:
        rows = [pool.submit(instructions_tracing.worker_row, REPO, mode, 200, 200) for mode in ("off", "1.0")]
        off, traced = (row.result() for row in rows)
    assert 100_000 < off < traced  # an HTTP task costs a worker far more than 100k instructions; its spans more
