"""`python -m bench.instructions redis` runs end to end on a small scale (a private redis-server under callgrind):
the count is of the measured tasks only, and writing each task's event costs Redis instructions. No speed asserted."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bench import instructions
from tests.support.common import REPO

pytestmark = [
    pytest.mark.bench,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]


def test_the_redis_count_is_per_task_and_grows_with_the_event_log() -> None:
    python = sys.executable
    off = instructions.redis_row(python, REPO, "off", 300, 100)
    on = instructions.redis_row(python, REPO, "on", 300, 100)
    more = instructions.redis_row(python, REPO, "off", 600, 100)
    assert 10_000 < off < on  # a claim and a settle cost Redis thousands of instructions; an event more
    assert abs(more - off) / off < 0.35  # per task: twice the tasks, about the same count each
    assert Path(instructions.__file__).parent.parent == REPO


def test_the_flow_modes_count_a_fan_ins_children_settled_and_created() -> None:
    """`fanin`: the children of a fan-in claimed and settled as members cost Redis more than plain tasks (their
    flow moves on in the same call); `create`: that fan-in's creation alone, per member."""
    python = sys.executable
    off = instructions.redis_row(python, REPO, "off", 300, 100)
    fanin = instructions.redis_row(python, REPO, "fanin", 300, 100)
    create = instructions.redis_row(python, REPO, "create", 300, 100)
    assert off < fanin
    assert 1_000 < create < off  # pushing a member with its bookkeeping costs less than running one through


def test_the_keyed_mode_counts_the_fair_claim_of_many_keys() -> None:
    """Mode keyed: the tasks of many fair keys, two each, claimed turn by turn: they cost Redis more than keyless
    ones (a pop per key, from the state enqueue.lua leaves)."""
    off = instructions.redis_row(sys.executable, REPO, "off", 300, 100)
    keyed = instructions.redis_row(sys.executable, REPO, "keyed", 300, 100, keys=150, per_key=2)
    assert off < keyed


def test_the_push_mode_counts_the_keyed_enqueue() -> None:
    """Mode push: only the enqueue of keyed tasks is counted, per task (thousands of instructions each)."""
    push = instructions.redis_row(sys.executable, REPO, "push", 300, 100, keys=150)
    assert 5_000 < push < 500_000
