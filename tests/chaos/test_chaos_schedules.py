"""Periodic schedules on real worker processes: two workers ticking a schedule every second for 30 s enqueue each
slot exactly once; a schedule keeps firing, without a gap, while workers are SIGKILLed and restarted."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.chaos.conftest import Fleet, chaos_config, queue_sizes
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer


def schedule_config(tmp_path: Path, redis_url: str, queue_name: str, url: str) -> Path:
    """A schedule firing every second. `catch_up = "all"`: every slot gets its own task however late the tick that
    enqueues it, so "no slot skipped" holds on a machine that stalls; with the default ("one") a tick late by
    seconds rightly folds the slots it missed into one task (a loaded CI machine once stalled both workers for 3 s)."""
    config = chaos_config(tmp_path, redis_url, queue_name, worker={"concurrency": 5})
    schedule = f'name = "beat"\nevery = 1\ncatch_up = "all"\ntask = {{ method = "GET", url = "{url}" }}\n'
    config.write_text(config.read_text() + f"\n[[schedules]]\n{schedule}")
    return config


def slots_seen(sync_redis: redis.Redis, queue_name: str) -> list[int]:
    """The slots of every scheduled task that has a result record (one per task id, whatever the deliveries)."""
    keys = sync_redis.scan_iter(match=f"gopherq:{{{queue_name}}}:result:beat@*", count=1000)
    return sorted(int(key.decode().rsplit("@", 1)[1]) for key in keys)


def schedule_lines(fleet: Fleet) -> str:
    """What the workers logged about the schedule, to explain a failed assertion."""
    return "\n".join(line for line in fleet.outputs().splitlines() if "schedule beat" in line)


def wait_drained(sync_redis: redis.Redis, queue_name: str) -> None:
    def drained() -> bool:
        sizes = queue_sizes(sync_redis, queue_name)
        return sizes["ready"] == sizes["inflight"] == sizes["delayed"] == 0

    wait_until(drained, timeout=30, interval=0.2, what="the queue to drain")


@pytest.mark.chaos
def test_two_workers_fire_each_slot_of_a_one_second_schedule_exactly_once(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = schedule_config(tmp_path, redis_url, queue_name, loopback.url("/ok"))
    workers = [fleet.start(config) for _ in range(2)]
    for proc in workers:
        wait_until(lambda p=proc: "started: queue" in p.output, timeout=30, what="worker start")
    wait_until(lambda: len(slots_seen(sync_redis, queue_name)) >= 15, timeout=120, interval=0.5, what="15 slots")
    for proc in workers:
        proc.signal(15)
        proc.wait(30)
    wait_drained(sync_redis, queue_name)
    slots = slots_seen(sync_redis, queue_name)
    assert len(slots) >= 15, slots
    assert slots == list(range(slots[0], slots[-1] + 1)), f"a slot was skipped:\n{schedule_lines(fleet)}"
    requests = loopback.snapshot()
    assert {key: n for key, n in requests.items() if n != 1} == {}, "a slot ran twice"
    assert len(requests) == len(slots)


@pytest.mark.chaos
def test_a_schedule_keeps_firing_while_workers_are_sigkilled_and_restarted(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = schedule_config(tmp_path, redis_url, queue_name, loopback.url("/ok"))
    workers = [fleet.start(config) for _ in range(2)]
    for proc in workers:
        wait_until(lambda p=proc: "started: queue" in p.output, timeout=30, what="worker start")
    for round_ in range(4):
        seen = len(slots_seen(sync_redis, queue_name))
        wait_until(lambda s=seen: len(slots_seen(sync_redis, queue_name)) >= s + 2, timeout=30, what="two more slots")
        victim = workers[round_ % 2]
        victim.kill()
        workers[round_ % 2] = fleet.start(config)
    seen = len(slots_seen(sync_redis, queue_name))
    wait_until(lambda: len(slots_seen(sync_redis, queue_name)) >= seen + 2, timeout=30, what="slots after the kills")
    for proc in workers:
        proc.signal(15)
        proc.wait(30)
    wait_drained(sync_redis, queue_name)
    slots = slots_seen(sync_redis, queue_name)
    assert len(slots) >= 8, slots
    assert slots == list(range(slots[0], slots[-1] + 1)), f"a slot was lost:\n{schedule_lines(fleet)}"
    assert all(loopback.count(f"beat@{slot}") >= 1 for slot in slots)
