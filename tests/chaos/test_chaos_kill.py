"""SIGKILL random workers while three of them drain 2,000 HTTP tasks: nothing is lost, duplicates are counted."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from gopherq.core import codec
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_sizes, queue_stats, results
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

TASKS = 2000
KILLS = 5


@pytest.mark.chaos
def test_sigkill_of_random_workers_loses_no_task(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = chaos_config(tmp_path, redis_url, queue_name, worker={"concurrency": 5})
    workers = [fleet.start(config) for _ in range(3)]
    for proc in workers:
        wait_until(lambda p=proc: "started: queue" in p.output, timeout=30, what="worker start")
    ids = [f"k{i:04d}" for i in range(TASKS)]
    url = loopback.url("/ok?min_ms=50&max_ms=200")
    began = time.monotonic()
    sync_redis.rpush(queue_name, *(codec.dumps({"id": task_id, "url": url}) for task_id in ids))

    rng = random.Random(7)
    recovery_times: list[float] = []
    for _ in range(KILLS):
        progress = queue_stats(sync_redis, queue_name).get("acked", 0)
        wait_until(
            lambda p=progress: queue_stats(sync_redis, queue_name).get("acked", 0) >= p + 100,
            timeout=30,
            what="progress between kills",
        )
        victim = rng.choice(workers)
        recovered_before = queue_stats(sync_redis, queue_name).get("recovered", 0)
        killed_at = time.monotonic()
        victim.kill()
        workers.remove(victim)
        workers.append(fleet.start(config))  # a replacement, as a supervisor would start
        wait_until(
            lambda r=recovered_before: queue_stats(sync_redis, queue_name).get("recovered", 0) > r,
            timeout=20,
            what="the killed worker's tasks to be recovered",
        )
        recovery_times.append(time.monotonic() - killed_at)
    assert queue_sizes(sync_redis, queue_name)["ready"] > 0, "the queue drained before the last kill"

    def drained() -> bool:
        sizes = queue_sizes(sync_redis, queue_name)
        return sizes["ready"] == sizes["inflight"] == sizes["delayed"] == 0

    wait_until(drained, timeout=120, interval=0.2, what="the queue to drain")
    elapsed = time.monotonic() - began
    records = results(sync_redis, queue_name, ids)
    lost = [task_id for task_id in ids if (records[task_id] or {}).get("status") != "succeeded"]
    calls = loopback.snapshot()
    unseen = [task_id for task_id in ids if calls.get(task_id, 0) == 0]
    stats = queue_stats(sync_redis, queue_name)
    print_figures(
        "SIGKILL 5 random workers of 3 (each replaced) while draining 2,000 HTTP tasks (50-200 ms)",
        {
            "tasks": TASKS,
            "kills": KILLS,
            "lost (no succeeded result)": len(lost),
            "never delivered to the server": len(unseen),
            "duplicate deliveries (extra requests)": sum(max(0, calls.get(t, 0) - 1) for t in ids),
            "tasks delivered more than once": sum(1 for t in ids if calls.get(t, 0) > 1),
            "tasks recovered by the reaper": stats.get("recovered", 0),
            "accepted completions (acked)": stats.get("acked", 0),
            "refused late settles": stats.get("refused_acks", 0),
            "kill -> recovery, longest (s)": max(recovery_times),
            "kill -> recovery, mean (s)": sum(recovery_times) / len(recovery_times),
            "total time to drain (s)": elapsed,
        },
    )
    assert lost == [] and unseen == []
    assert stats["acked"] == TASKS  # every task completed exactly once, whatever the duplicates
    assert stats.get("dead_lettered", 0) == 0
