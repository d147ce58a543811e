"""Ordered fair keys under fire: three worker subprocesses drain 20 ordered keys while 10 % of attempts fail and
are retried and workers are SIGKILLed (and replaced). Every task of a key must start only after the key's earlier
tasks have succeeded: 0 out-of-order executions, nothing lost."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq import Client, load_settings
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_stats, results
from tests.support.common import wait_until
from tests.support.plugins import ExecutorPlugin

KEYS = 20
PER_KEY = 40
KILLS = 4

#: A worker with an executor `ordered` that logs each attempt's start (key, sequence number, attempt) to a list
#: of the queue's hash tag, then fails 10 % of its attempts (retried) and otherwise succeeds after a little work.
ORDERED_WORKER = """
import asyncio
import random
import sys
import zlib

import redis.asyncio as aioredis

from gopherq import hookimpl, load_settings
from gopherq.core.errors import RetryTask
from gopherq.core.runner import configure_logging, run_worker

settings = load_settings(sys.argv[1])
LOG = "gopherq:{" + settings.queue.name + "}:test:starts"


class Ordered:
    def __init__(self):
        self.redis = None

    async def execute(self, task, context):
        if self.redis is None:
            self.redis = aioredis.Redis.from_url(settings.redis.url)
        seq = task.fields["seq"]
        await self.redis.rpush(LOG, f"{task.fair_key} {seq} {task.attempt}")
        await asyncio.sleep(random.uniform(0.005, 0.03))
        if zlib.crc32(f"{task.id}/{task.attempt}".encode()) % 10 == 0:
            raise RetryTask("one attempt in ten fails", delay=0.02)


class OrderedPlugin:
    @hookimpl
    def gopherq_register_executors(self, register, settings):
        register("ordered", Ordered())


configure_logging(settings.logging.level)
sys.exit(run_worker(settings, extra_plugins={"ordered": OrderedPlugin()}))
"""


class NeverRun:
    """The `ordered` type as the producer knows it (the workers run the real one)."""

    async def execute(self, task: Any, context: Any) -> None:
        raise AssertionError("the producer runs no task")


@pytest.mark.chaos
def test_ordered_keys_keep_their_order_through_retries_and_sigkills(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet
) -> None:
    config = chaos_config(
        tmp_path,
        redis_url,
        queue_name,
        worker={"concurrency": 6},
        queue_settings={"backoff_min": 0.01, "backoff_max": 0.05, "max_attempts": 20},
    )
    with config.open("a") as toml:
        toml.write('[[fair.keys]]\npattern = "tenant-*"\nordered = true\n')
    script = tmp_path / "ordered_worker.py"
    script.write_text(ORDERED_WORKER)
    workers = [fleet.start(config, script) for _ in range(3)]
    for proc in workers:
        wait_until(lambda p=proc: "started: queue" in p.output, timeout=30, what="worker start")

    keys = QueueKeys(queue_name)
    settings = load_settings(config)
    plugins = load_plugins(settings, extra={"ordered": ExecutorPlugin("ordered", NeverRun())})
    ids: list[str] = []
    began = time.monotonic()
    with Client(settings, plugins=plugins) as client:
        for seq in range(PER_KEY):  # interleaved, as tenants' tasks arrive; each key's own in sequence order
            batch = [client.task("ordered", id=f"t{k}-{seq}", fair_key=f"tenant-{k}", seq=seq) for k in range(KEYS)]
            ids += client.enqueue_many(batch)

    rng = random.Random(11)
    log_key = f"gopherq:{{{queue_name}}}:test:starts"
    for _ in range(KILLS):
        seen = sync_redis.llen(log_key)
        wait_until(lambda s=seen: sync_redis.llen(log_key) >= s + 60, timeout=30, what="progress between kills")
        victim = rng.choice(workers)
        victim.kill()
        workers.remove(victim)
        workers.append(fleet.start(config, script))

    def all_done() -> bool:
        records = results(sync_redis, queue_name, ids)
        return all((record or {}).get("status") == "succeeded" for record in records.values())

    wait_until(all_done, timeout=50, interval=0.25, what="every task to succeed")
    elapsed = time.monotonic() - began

    # Each key's starts, in the order they happened: a start may repeat the current task (a retry, or a recovery
    # after a kill) but never go back to an earlier one nor skip ahead past one that has not succeeded.
    out_of_order = 0
    last: dict[str, int] = {}
    starts = 0
    for entry in sync_redis.lrange(log_key, 0, -1):
        key, seq_text, _attempt = entry.decode().split()
        seq = int(seq_text)
        starts += 1
        previous = last.get(key, -1)
        if seq < previous or seq > previous + 1:
            out_of_order += 1
        last[key] = max(previous, seq)
    stats = queue_stats(sync_redis, queue_name)
    print_figures(
        f"{KEYS} ordered keys x {PER_KEY} tasks, 10 % failed attempts, {KILLS} SIGKILLs of 3 workers",
        {
            "tasks": len(ids),
            "attempt starts": starts,
            "retried": stats.get("retried", 0),
            "recovered": stats.get("recovered", 0),
            "out-of-order starts": out_of_order,
            "seconds to drain": elapsed,
        },
    )
    assert out_of_order == 0
    assert stats.get("retried", 0) > 0 and stats.get("recovered", 0) > 0
    assert last == {f"tenant-{k}": PER_KEY - 1 for k in range(KEYS)}
    leftover = list(sync_redis.scan_iter(match=f"gopherq:{{{queue_name}}}:fair:*", count=1000))
    assert leftover == [keys.fair_rules.encode()]  # only the published rules: idle keys leave nothing
