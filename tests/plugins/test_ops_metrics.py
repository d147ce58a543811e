"""Metrics completeness (issue 20, part 6) and the alert rules of docs/operations.md, on a real Redis and real
workers: the worker port's time-in-queue histogram, exact (bounded) status codes, process and Python collectors and
`gopherq_build_info`; `/metrics`' oldest running task, dead letters trimmed and schedule times; and each alert rule
(backlog age, stuck running, missed schedule, no workers) firing in its incident and quiet in a healthy queue.

The rules are read from docs/operations.md and evaluated by tests/alerting.py on the scrape. One threshold cannot be
reached in a test's lifetime without a clock of its own: the stuck-running rule's 15 minutes is lowered to 1 second
for the incident (the documented expression is also checked, and must stay quiet at 1-2 seconds).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import gopherq
from gopherq import AsyncClient
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.schedules import Scheduler
from gopherq.core.settings import Settings
from gopherq.plugins.metrics_sink import status_class, status_code
from tests.support.alerting import Unsupported, alert_rules, evaluate, scrape
from tests.support.common import async_wait_until, free_port
from tests.support.faces import Faces, sample, write_ops_config
from tests.support.loopback import LoopbackServer
from tests.support.plugins import ExecutorPlugin, FailExecutor, GateExecutor, NoopExecutor

Start = Callable[..., Any]

#: The alerts the issue asks to be writable, each checked in its incident below.
REQUIRED = ("GopherqBacklogAge", "GopherqStuckRunning", "GopherqScheduleMissed", "GopherqNoWorkers")


def test_every_documented_rule_is_understood_and_the_required_ones_exist() -> None:
    rules = alert_rules()
    assert set(REQUIRED) <= set(rules)
    for name, expr in rules.items():
        if "increase(" in expr:
            with pytest.raises(Unsupported):
                evaluate(expr, {}, time.time())
        else:
            assert evaluate(expr, {}, time.time()) == {}, name  # parses; nothing fires on an empty scrape


def test_status_code_labels_are_exact_and_bounded() -> None:
    assert [status_code(code) for code in (100, 200, 404, 599)] == ["100", "200", "404", "599"]
    for bad in (99, 600, 1000, -1, "200", 200.0, True, None):
        assert status_code(bad) == "other" and status_class(bad) == "other", bad
    assert status_class(503) == "5xx"


# -- the worker's port ------------------------------------------------------------------------------------------


def scrape_port(port: int) -> dict[str, Any]:
    return scrape(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())


async def test_the_worker_port_has_time_in_queue_exact_codes_and_process_metrics(
    make_settings: Callable[..., Settings],
    queue_name: str,
    aredis: aioredis.Redis,
    loopback: LoopbackServer,
    start_worker: Start,
) -> None:
    port = free_port()
    settings = make_settings(metrics={"port": port})
    async with AsyncClient(settings) as client:
        await client.inspect.pause(queue_name)  # everything waits in the queue first
        ok = loopback.url("/ok")
        await client.enqueue_many([client.http(ok, id=f"ok{n}") for n in range(3)])
        await client.enqueue_many([client.http(loopback.url("/status/404"), id="missing")])
        await client.enqueue_many([client.http(ok, id="urgent", priority="high")])
        old = {"id": "old", "url": ok, "created_at": time.time() - 30}  # waited 30 s before the worker came
        await client.enqueue_raw(codec.dumps(old))
        await aredis.rpush(queue_name, codec.dumps({"id": "seed", "url": ok}))  # no time: not observed
        await start_worker(settings)
        await client.inspect.resume(queue_name)

        def done() -> bool:
            found = scrape_port(port)
            return sample(found, "gopherq_http_responses_total", code="200", queue=queue_name) == 6

        await async_wait_until(lambda: asyncio.to_thread(done), timeout=20, what="every response counted")
    found = scrape_port(port)
    assert sample(found, "gopherq_http_responses_total", queue=queue_name, status_class="4xx", code="404") == 1
    waits = {
        priority: sample(found, "gopherq_task_queue_wait_seconds_count", queue=queue_name, priority=priority)
        for priority in ("high", "default")
    }
    assert waits == {"high": 1, "default": 5}  # every task but the raw one, which says nothing of its arrival
    bucket = "gopherq_task_queue_wait_seconds_bucket"
    assert sample(found, bucket, queue=queue_name, priority="default", le="15.0") == 4  # all but the old one
    assert sample(found, bucket, queue=queue_name, priority="default", le="60.0") == 5
    assert sample(found, "gopherq_build_info", version=gopherq.__version__) == 1
    assert sample(found, "process_cpu_seconds_total") is not None
    assert sample(found, "python_info") == 1
    assert sample(found, "gopherq_worker_oldest_running_seconds", queue=queue_name) is not None


# -- /metrics, and the alerts ----------------------------------------------------------------------------------


async def test_oldest_running_dead_trimmed_and_schedule_times(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    schedule = '[[schedules]]\nname = "tick"\nevery = 1\ntask = { type = "noop" }\n'
    config = write_ops_config(tmp_path, redis_url, queue_name, f"{schedule}")
    config.write_text(config.read_text().replace("max_attempts = 2", "max_attempts = 2\ndead_letter_max = 2"))
    gate = GateExecutor()
    plugins = {
        "noop": ExecutorPlugin("noop", NoopExecutor()),
        "fail": ExecutorPlugin("fail", FailExecutor()),
        "gate": ExecutorPlugin("gate", gate),
    }
    async with Faces(config, aredis) as faces:
        await start_worker(faces.settings, extra_plugins=plugins)
        for n in range(4):
            await aredis.rpush(queue_name, codec.dumps({"id": f"f{n}", "type": "fail"}))
        await aredis.rpush(queue_name, codec.dumps({"id": "held", "type": "gate"}))
        await async_wait_until(lambda: gate.started == 1, what="the held task to start")

        async def settled() -> bool:
            found = await faces.metrics()
            return (
                (sample(found, "gopherq_queue_oldest_running_seconds", queue=queue_name) or 0) >= 1.0
                and sample(found, "gopherq_queue_dead_trimmed_total", queue=queue_name) == 2
                and sample(found, "gopherq_schedule_last_success_timestamp_seconds", schedule="tick") is not None
            )

        await async_wait_until(settled, timeout=20, what="running age, trimming and a schedule success")
        found = await faces.metrics()
        assert sample(found, "gopherq_queue_dead_tasks", queue=queue_name) == 2
        last = sample(found, "gopherq_schedule_last_slot_timestamp_seconds", queue=queue_name, schedule="tick")
        following = sample(found, "gopherq_schedule_next_slot_timestamp_seconds", queue=queue_name, schedule="tick")
        success = sample(found, "gopherq_schedule_last_success_timestamp_seconds", queue=queue_name, schedule="tick")
        assert last is not None and following == last + 1
        assert success is not None and time.time() - 30 < success <= time.time()
        assert sample(found, "gopherq_build_info", version=gopherq.__version__) == 1
        assert sample(found, "process_resident_memory_bytes") is not None

        # The documented stuck-running rule is quiet at a second or two; the same rule at a 1 s threshold fires.
        stuck = faces.rules["GopherqStuckRunning"]
        assert "GopherqStuckRunning" not in await faces.firing(queue_name, found)
        assert "> 900" in stuck
        lowered = evaluate(stuck.replace("> 900", "> 1"), found, time.time())
        assert any(dict(labels).get("queue") == queue_name for labels in lowered)
        assert not {"GopherqNoWorkers", "GopherqScheduleMissed", "GopherqBacklogAge"} & await faces.firing(
            queue_name, found
        )
        rows = await faces.cli("schedules", "--json")
        [row] = codec.loads(rows.stdout)
        assert row["last_success"] is not None and row["next_slot"] == row["last_slot"] + 1
        gate.gate.set()


async def test_a_missed_schedule_and_an_old_backlog_without_workers_fire(
    tmp_path: Path, redis_url: str, queue_name: str, aredis: aioredis.Redis, start_worker: Start
) -> None:
    schedule = '[[schedules]]\nname = "minutely"\nevery = 60\ntask = { type = "noop" }\n'
    async with Faces(write_ops_config(tmp_path, redis_url, queue_name, schedule), aredis) as faces:
        # The state the last worker left ten minutes ago, when it died: its scheduler's last tick (the same code
        # a worker runs, at that time) and a backlog that has waited since.
        scheduler = Scheduler(faces.settings.schedules, queue_name, {queue_name: Broker(aredis, queue_name)})
        then = time.time() - 600
        await scheduler.tick(now=then - 60)
        await scheduler.tick(now=then)
        old = [codec.dumps({"id": f"b{n}", "type": "noop", "created_at": then}) for n in range(5)]
        await aredis.rpush(queue_name, *old)

        fired = await faces.firing(queue_name)
        assert {"GopherqScheduleMissed", "GopherqBacklogAge", "GopherqNoWorkers"} <= fired
        late = sample(await faces.metrics(), "gopherq_schedule_next_slot_timestamp_seconds", schedule="minutely")
        assert late is not None and late < time.time() - 120
        done = await faces.cli("schedules")
        assert "LATE" in done.stdout

        # A worker comes back: it enqueues the missed slot, drains the backlog, and every alert goes quiet.
        await start_worker(faces.settings, extra_plugins={"noop": ExecutorPlugin("noop", NoopExecutor())})

        async def quiet() -> bool:
            return not {"GopherqScheduleMissed", "GopherqBacklogAge", "GopherqNoWorkers"} & await faces.firing(
                queue_name
            )

        await async_wait_until(quiet, timeout=20, what="the alerts to clear")
        info = await faces.api_queue(queue_name)
        assert info["ready"] == 0 and info["workers"] == 1
