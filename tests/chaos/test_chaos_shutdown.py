"""SIGTERM while tasks outlast shutdown_timeout: the worker exits 0 in time, the unfinished tasks are back at the
head of the queue with their attempts unchanged, and another worker completes them."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_stats, results
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

SHUTDOWN_TIMEOUT = 1.5


@pytest.mark.chaos
def test_sigterm_returns_tasks_that_outlast_the_grace_period(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = chaos_config(
        tmp_path, redis_url, queue_name, worker={"concurrency": 4, "shutdown_timeout": SHUTDOWN_TIMEOUT}
    )
    first = fleet.start(config)
    wait_until(lambda: "started: queue" in first.output, timeout=30, what="worker start")
    long = [codec.dumps({"id": f"long{i}", "url": loopback.url("/slow_once?seconds=30")}) for i in range(3)]
    short = codec.dumps({"id": "short", "url": loopback.url("/slow?seconds=0.5")})
    waiting = [codec.dumps({"id": f"waiting{i}", "url": loopback.url("/ok")}) for i in range(2)]
    sync_redis.rpush(queue_name, *long, short, *waiting)  # the worker runs 4 at once: the last 2 wait
    wait_until(lambda: len(loopback.snapshot()) == 4, what="four tasks to start")
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    status = first.wait(SHUTDOWN_TIMEOUT + 10)
    took = time.monotonic() - started
    keys = QueueKeys(queue_name)
    ready = sync_redis.lrange(queue_name, 0, -1)
    stats = queue_stats(sync_redis, queue_name)
    head_ok = sorted(ready[:3]) == sorted(long) and ready[3:] == waiting
    registered = sync_redis.zcard(keys.workers)  # its heartbeat is removed on a clean exit
    # Another worker completes them.
    fleet.start(config)
    ids = [f"long{i}" for i in range(3)] + ["short", "waiting0", "waiting1"]
    wait_until(
        lambda: all((r or {}).get("status") == "succeeded" for r in results(sync_redis, queue_name, ids).values()),
        timeout=30,
        what="the second worker to complete every task",
    )
    records = results(sync_redis, queue_name, ids)
    print_figures(
        "SIGTERM with 3 tasks that outlast shutdown_timeout",
        {
            "shutdown_timeout (s)": SHUTDOWN_TIMEOUT,
            "exit status": status,
            "time from SIGTERM to exit (s)": took,
            "finished within the grace period": 1 if records["short"]["worker"] in first.output else 0,
            "released to the head unchanged": stats.get("released", 0),
            "attempts of the released tasks when completed": sorted(records[f"long{i}"]["attempts"] for i in range(3)),
        },
    )
    assert status == 0
    assert took < SHUTDOWN_TIMEOUT + 2
    assert head_ok, ready  # the same bytes (attempt not counted), at the head, before the tasks that waited
    assert stats["released"] == 3 and stats.get("recovered", 0) == 0
    assert registered == 0 and "stopped:" in first.output
    assert records["short"]["worker"] in first.output  # it finished within the grace period, on the first worker
    assert all(records[f"long{i}"]["attempts"] == 1 for i in range(3))
