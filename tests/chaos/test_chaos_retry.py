"""The retry schedule seen from the server: an endpoint that answers 503 with Retry-After twice, then 200, gets
three attempts spaced as Retry-After asks (in seconds or as an HTTP date), and the task succeeds once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import redis

from gopherq.core import codec
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_stats, results
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer


@pytest.mark.chaos
def test_retry_after_spaces_the_attempts(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = chaos_config(
        tmp_path,
        redis_url,
        queue_name,
        queue_settings={"backoff_min": 0.01, "backoff_max": 30.0},  # so any wait seen is Retry-After's
        events=("task.retrying", "task.succeeded", "task.dead_lettered", "worker.*"),
    )
    worker = fleet.start(config)
    wait_until(lambda: "started: queue" in worker.output, timeout=30, what="worker start")
    tasks = {
        "after-seconds": loopback.url("/flaky/2?status=503&retry_after=1"),
        "after-date": loopback.url("/flaky/2?status=503&retry_after=date:2"),
    }
    sync_redis.rpush(queue_name, *(codec.dumps({"id": key, "url": url}) for key, url in tasks.items()))
    wait_until(
        lambda: all(
            (r or {}).get("status") == "succeeded" for r in results(sync_redis, queue_name, list(tasks)).values()
        ),
        timeout=30,
        what="both tasks to succeed",
    )
    # Events follow the settle that writes the record, through the sink's own buffer: wait for the log lines.
    wait_until(
        lambda: all(f"task.succeeded task={key} " in worker.output for key in tasks),
        timeout=10,
        what="the success events to be logged",
    )
    records = results(sync_redis, queue_name, list(tasks))
    gaps = {}
    for key in tasks:
        times = loopback.times(key)
        gaps[key] = [b - a for a, b in itertools.pairwise(times)]
    output = worker.output
    print_figures(
        "503 + Retry-After twice, then 200",
        {
            "attempts (Retry-After: 1)": records["after-seconds"]["attempts"],
            "gaps between attempts, s (Retry-After: 1)": ", ".join(f"{g:.2f}" for g in gaps["after-seconds"]),
            "attempts (Retry-After: HTTP date +2 s)": records["after-date"]["attempts"],
            "gaps between attempts, s (HTTP date +2 s)": ", ".join(f"{g:.2f}" for g in gaps["after-date"]),
            "success events": output.count("task.succeeded task=after-"),
            "retrying events": output.count("task.retrying task=after-"),
        },
    )
    for key in tasks:
        assert records[key]["attempts"] == 3 and loopback.count(key) == 3
        assert output.count(f"task.succeeded task={key} ") == 1
        assert output.count(f"task.retrying task={key} ") == 2
    assert all(1.0 <= gap < 2.5 for gap in gaps["after-seconds"])
    retrying = [line for line in output.splitlines() if "task.retrying task=after-seconds " in line]
    assert all(" delay=1.0 " in line for line in retrying)  # the event carries the delay
    assert all(1.0 <= gap < 3.5 for gap in gaps["after-date"])  # a date has whole seconds: the wait is 1-2 s
    assert queue_stats(sync_redis, queue_name)["acked"] == 2
