"""A worker frozen (SIGSTOP) past its lease: another worker completes its tasks, and when it wakes up (SIGCONT)
its late settles are refused: no task is completed twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_sizes, queue_stats, results
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

HELD = 10  # tasks the frozen worker is running
LATE = 5  # tasks pushed while it is frozen (its pending blocking fetch may catch one)


@pytest.mark.chaos
def test_a_frozen_worker_cannot_complete_tasks_handed_to_another(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = chaos_config(tmp_path, redis_url, queue_name, worker={"concurrency": 20})
    frozen = fleet.start(config)
    wait_until(lambda: "started: queue" in frozen.output, timeout=30, what="worker start")
    held = [f"held{i}" for i in range(HELD)]
    sync_redis.rpush(queue_name, *(codec.dumps({"id": t, "url": loopback.url("/slow?seconds=1")}) for t in held))
    wait_until(lambda: all(loopback.count(t) == 1 for t in held), what="the worker to start every task")
    frozen.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    late = [f"late{i}" for i in range(LATE)]
    sync_redis.rpush(queue_name, *(codec.dumps({"id": t, "url": loopback.url("/ok")}) for t in late))
    fleet.start(config)  # the rescuer
    everything = held + late

    def all_succeeded() -> bool:
        records = results(sync_redis, queue_name, everything)
        return all((record or {}).get("status") == "succeeded" for record in records.values())

    wait_until(all_succeeded, timeout=30, what="the other worker to complete every task")
    rescued_after = time.monotonic() - frozen_at
    acked_before_wake = queue_stats(sync_redis, queue_name).get("acked", 0)
    frozen.signal(signal.SIGCONT)
    wait_until(
        lambda: queue_stats(sync_redis, queue_name).get("refused_acks", 0) >= HELD,
        timeout=20,
        what="the woken worker's late settles to be refused",
    )
    time.sleep(1.0)  # let anything else the woken worker would wrongly settle arrive
    stats = queue_stats(sync_redis, queue_name)
    refused_lines = frozen.output.count("late ack refused") + frozen.output.count("late retry refused")
    print_figures(
        "a worker frozen with SIGSTOP past its lease, then SIGCONT",
        {
            "tasks it held when frozen": HELD,
            "tasks pushed while it was frozen": LATE,
            "time until another worker completed them all (s)": rescued_after,
            "recovered by the reaper": stats.get("recovered", 0),
            "accepted completions (acked)": stats.get("acked", 0),
            "refused late settles (stats)": stats.get("refused_acks", 0),
            "refused late settles (its log)": refused_lines,
            "double completions": stats.get("acked", 0) - len(everything),
        },
    )
    assert acked_before_wake == len(everything)
    assert stats["acked"] == len(everything)  # double completions = 0
    assert stats["refused_acks"] == HELD and refused_lines == HELD
    assert all(loopback.count(t) == 2 for t in held)  # the frozen worker's calls, then the rescuer's
    assert queue_sizes(sync_redis, queue_name) == {"ready": 0, "inflight": 0, "delayed": 0, "dead": 0}
    # The woken worker is alive, registered again, and still takes work.
    sync_redis.rpush(queue_name, codec.dumps({"id": "after", "url": loopback.url("/ok")}))
    wait_until(lambda: sync_redis.get(QueueKeys(queue_name).result("after")), what="a task after the wake-up")
    assert frozen.alive
