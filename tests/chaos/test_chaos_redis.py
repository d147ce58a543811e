"""Redis killed and restarted under a running worker (1,000 tasks queued, 50 in flight): nothing is lost, the same
worker process resumes on its own, without spinning the CPU while Redis is away, and a task that ran once is never
reported as a refused late ack (a settle Redis ran just before it died is sent again and recognised), nor loses its
`task.succeeded` event."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq.core import codec
from gopherq.core.scripts import load_script
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_sizes, queue_stats, results
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

QUEUED = 1000
IN_FLIGHT = 50
DOWNTIME = 2.0
SCRIPTS = ("claim", "settle", "promote", "reap")  # the ones a worker uses all the time


@pytest.mark.chaos
def test_a_redis_restart_loses_nothing_and_the_worker_resumes_by_itself(
    tmp_path: Path,
    queue_name: str,
    private_redis: Callable[..., Any],
    fleet: Fleet,
    loopback: LoopbackServer,
) -> None:
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    config = chaos_config(
        tmp_path,
        server.url,
        queue_name,
        worker={"concurrency": IN_FLIGHT, "lease_timeout": 5.0},
        events=("task.succeeded", "task.recovered", "worker.*"),
    )
    worker = fleet.start(config)
    wait_until(lambda: "started: queue" in worker.output, timeout=30, what="worker start")
    client = redis.Redis.from_url(server.url)
    ids = [f"r{i:04d}" for i in range(QUEUED + IN_FLIGHT)]
    url = loopback.url("/ok?min_ms=300&max_ms=600")
    client.rpush(queue_name, *(codec.dumps({"id": task_id, "url": url}) for task_id in ids))
    wait_until(lambda: queue_sizes(client, queue_name)["inflight"] == IN_FLIGHT, what="50 tasks in flight")
    at_restart = queue_sizes(client, queue_name)
    client.close()

    server.kill()
    cpu_before = worker.cpu_seconds()
    time.sleep(DOWNTIME)
    cpu_during = worker.cpu_seconds() - cpu_before
    server.start()
    restarted = time.monotonic()
    client = redis.Redis.from_url(server.url)
    acked_at_restart = queue_stats(client, queue_name).get("acked", 0)
    wait_until(
        lambda: queue_stats(client, queue_name).get("acked", 0) > acked_at_restart,
        timeout=30,
        what="the worker to complete a task after the restart",
    )
    resumed_after = time.monotonic() - restarted

    def drained() -> bool:
        sizes = queue_sizes(client, queue_name)
        return sizes["ready"] == sizes["inflight"] == sizes["delayed"] == 0

    wait_until(drained, timeout=90, interval=0.2, what="the queue to drain")

    def succeeded_events() -> Counter[str]:
        return Counter(re.findall(r"task\.succeeded task=(r\d{4}) ", worker.output))

    wait_until(lambda: len(succeeded_events()) == len(ids), timeout=30, what="every task.succeeded event")
    records = results(client, queue_name, ids)
    lost = [task_id for task_id in ids if (records[task_id] or {}).get("status") != "succeeded"]
    calls = loopback.snapshot()
    stats = queue_stats(client, queue_name)
    # The restart forgot every script; redis-py loaded them again on NOSCRIPT.
    reloaded = client.script_exists(*(hashlib.sha1(load_script(name).encode()).hexdigest() for name in SCRIPTS))
    client.close()
    print_figures(
        "Redis SIGKILLed and restarted (appendfsync always) under a running worker",
        {
            "queued at the restart": at_restart["ready"],
            "in flight at the restart": at_restart["inflight"],
            "Redis down for (s)": DOWNTIME,
            "worker CPU while Redis was down (s)": cpu_during,
            "restart -> first completion (s)": resumed_after,
            "lost": len(lost),
            "never delivered to the server": sum(1 for t in ids if calls.get(t, 0) == 0),
            "duplicate deliveries": sum(max(0, calls.get(t, 0) - 1) for t in ids),
            "accepted completions (acked)": stats.get("acked", 0),
            "refused late settles": stats.get("refused_acks", 0),
            "settles recognised as repeats": stats.get("settles_repeated", 0),
            "recovered by the reaper": stats.get("recovered", 0),
            "worker restarted": "no" if worker.alive else "it died",
            "scripts loaded again after the restart": f"{sum(reloaded)} of {len(SCRIPTS)}",
        },
    )
    assert at_restart["ready"] >= QUEUED - 50 and at_restart["inflight"] == IN_FLIGHT
    assert lost == []
    assert stats["acked"] == len(ids)
    # Each task ran once and succeeded: none of its settles is a refused late ack, and its event is there, once.
    ran_once = [t for t in ids if calls.get(t, 0) == 1]
    assert stats.get("refused_acks", 0) == 0, [t for t in ran_once if f"task {t}: late" in worker.output]
    assert succeeded_events() == Counter(ids)
    assert worker.alive  # the same process resumed on its own
    assert all(reloaded)
    assert cpu_during < DOWNTIME * 0.5  # backing off, not spinning
    assert "Redis reachable again" in worker.output and "Traceback" not in worker.output
