"""`python -m bench.http_executor` and `python -m bench.http_worker_cpu` run end to end on a small scale against
nginx (skipped without it: the bench installs it only when run by hand). No speed asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.services import find_nginx
from tests.support.common import REPO

pytestmark = [
    pytest.mark.bench,
    pytest.mark.timeout(300),
    pytest.mark.skipif(find_nginx(install=False) is None, reason="nginx is not installed"),
]


def run(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_executor_alone_reports_cpu_per_task() -> None:
    shown = run("bench.http_executor", "--tasks", "300", "--rounds", "1", "--concurrency", "20")
    assert re.search(r"aiohttp: best [\d.]+ µs CPU per task", shown), shown


def test_a_real_worker_reports_cpu_per_http_task() -> None:
    shown = run("bench.http_worker_cpu", "--tasks", "300", "--rounds", "1")
    assert re.search(r"now +best [\d.]+ µs worker CPU per HTTP task", shown), shown
