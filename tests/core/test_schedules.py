"""Periodic schedules: slot arithmetic (every, cron in a time zone), the catch-up policies, each slot enqueued
exactly once by racing workers (in-process here; real worker processes, SIGKILLed and restarted, in the chaos
tests), bad schedules stopping start-up, and `gopherq schedules`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from gopherq import ConfigError, ExecutionContext, Settings, Task
from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.schedules import Schedule, Scheduler
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin


def test_slots_of_every_and_of_cron_in_a_time_zone() -> None:
    every = Schedule(name="e", every=60, task={"type": "x"})
    slots = every.slots_after(1_000_000_030)
    assert [next(slots), next(slots)] == [1_000_000_080, 1_000_000_140]  # aligned to the epoch
    cron = Schedule(name="c", cron="30 9 * * *", timezone="Europe/Berlin", task={"type": "x"})
    start = int(datetime(2026, 3, 27, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    slots = cron.slots_after(start)
    first, second = (datetime.fromtimestamp(next(slots), ZoneInfo("UTC")) for _ in range(2))
    # 09:30 in Berlin: 08:30 UTC in winter time, 07:30 UTC from the spring-forward night of 29 March on.
    assert (first.day, first.hour, first.minute) == (28, 8, 30)
    assert (second.day, second.hour, second.minute) == (29, 7, 30)


def test_a_schedule_is_checked_when_settings_load(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'cron' and 'every'"):
        make_settings(schedules=[{"name": "a", "task": {"type": "x"}}])
    with pytest.raises(ConfigError, match="invalid cron expression"):
        make_settings(schedules=[{"name": "a", "cron": "61 * * * *", "task": {"type": "x"}}])
    with pytest.raises(ConfigError, match="unknown time zone"):
        make_settings(schedules=[{"name": "a", "every": 5, "timezone": "Mars/Olympus", "task": {"type": "x"}}])


async def test_a_bad_scheduled_task_stops_start_up(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings(schedules=[{"name": "bad", "every": 5, "task": {"type": "http", "url": "ftp://x"}}])
    with pytest.raises(ConfigError, match="schedules: bad: task: http task: field 'url'"):
        await start_worker(settings)


async def test_catch_up_policies_after_downtime(aredis: aioredis.Redis, queue_name: str) -> None:
    broker = Broker(aredis, queue_name)
    t0 = 1_800_000_000
    policies = {
        "none": Schedule(name="none", every=10, catch_up="none", task={"type": "x"}),
        "one": Schedule(name="one", every=10, catch_up="one", task={"type": "x"}),
        "all": Schedule(name="all", every=10, catch_up="all", task={"type": "x"}),
    }
    scheduler = Scheduler(list(policies.values()), queue_name, {queue_name: broker})
    assert await scheduler.tick(now=t0 + 1) == 0  # first sight: starts with the next slot
    assert await scheduler.tick(now=t0 + 10.5) == 3  # on time: every policy runs the slot
    # Down for over a minute: slots +20 ... +90 were missed; +100 is due now. `none` runs only the slot that is on
    # time, `one` one task for all of them, `all` each of them.
    assert await scheduler.tick(now=t0 + 100) == 1 + 1 + 9
    ids = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)]
    assert ids[:3] == [f"none@{t0 + 10}", f"one@{t0 + 10}", f"all@{t0 + 10}"]
    assert f"one@{t0 + 100}" in ids and [i for i in ids[3:] if i.startswith("none@")] == [f"none@{t0 + 100}"]
    assert sorted(i for i in ids if i.startswith("all@"))[1:] == [f"all@{t0 + s}" for s in range(20, 101, 10)]


async def test_racing_schedulers_enqueue_each_slot_once(aredis: aioredis.Redis, queue_name: str) -> None:
    schedule = Schedule(name="tick", every=1, task={"type": "x", "priority": "high"})
    schedulers = [Scheduler([schedule], queue_name, {queue_name: Broker(aredis, queue_name)}) for _ in range(8)]
    t0 = 1_800_000_000
    for second in range(0, 20):
        now = t0 + second + 0.5
        await asyncio.gather(*(s.tick(now=now) for s in schedulers))
    high = f"gopherq:{{{queue_name}}}:ready:high"
    ids = [codec.loads(raw)["id"] for raw in await aredis.lrange(high, 0, -1)]
    assert ids == [f"tick@{t0 + s}" for s in range(1, 20)]  # the first tick only starts the schedule


class Counter:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def execute(self, task: Task, context: ExecutionContext) -> None:
        self.ids.append(task.id)


async def test_two_workers_fire_a_schedule_each_slot_once(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, redis_url: str
) -> None:
    settings = make_settings(schedules=[{"name": "beat", "every": 1, "task": {"type": "count"}}])
    counter = Counter()
    other = aioredis.Redis.from_url(redis_url)
    try:
        await start_worker(settings, extra_plugins={"count": ExecutorPlugin("count", counter)})
        await start_worker(settings, extra_plugins={"count": ExecutorPlugin("count", counter)}, redis_client=other)
        await async_wait_until(lambda: len(counter.ids) >= 4, timeout=15, what="four slots")
    finally:
        await asyncio.sleep(0)
    slots = sorted(int(task_id.split("@")[1]) for task_id in counter.ids[:4])
    assert len(set(counter.ids)) == len(counter.ids)
    assert slots == list(range(slots[0], slots[0] + 4))  # consecutive seconds, none twice, none skipped
    await other.aclose()


def test_the_schedules_command(run_gopherq: Callable[..., Any], redis_url: str, tmp_path: Any) -> None:
    config = tmp_path / "gopherq.toml"
    config.write_text(
        f"[redis]\nurl = '{redis_url}'\n"
        "[[schedules]]\nname = 'nightly'\ncron = '0 3 * * *'\ntimezone = 'Europe/Berlin'\n"
        "task = { method = 'GET', url = 'https://example.com/nightly' }\n"
    )
    done = run_gopherq(["schedules", "-c", str(config), "--json"])
    assert done.returncode == 0, done.stderr
    [row] = codec.loads(done.stdout)
    assert row["name"] == "nightly" and row["last_slot"] is None
    assert datetime.fromtimestamp(row["next_run"], ZoneInfo("Europe/Berlin")).hour == 3


def test_gopherq_config_masks_secrets_in_scheduled_tasks(run_gopherq: Callable[..., Any], tmp_path: Any) -> None:
    config = tmp_path / "gopherq.toml"
    config.write_text(
        "[[schedules]]\nname = 'sync'\nevery = 60\n"
        "task = { url = 'https://user:pw@example.com/x?token=abc', headers = { Authorization = 'Bearer s3cr3t' } }\n"
    )
    done = run_gopherq(["config", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    assert "s3cr3t" not in done.stdout and "abc" not in done.stdout and ":pw@" not in done.stdout
    assert codec.loads(done.stdout)["schedules"][0]["name"] == "sync"


async def test_a_unique_scheduled_task_never_overlaps_itself(aredis: aioredis.Redis, queue_name: str) -> None:
    schedule = Schedule(name="sync", every=1, catch_up="all", task={"type": "x", "unique_for": 600})
    scheduler = Scheduler([schedule], queue_name, {queue_name: Broker(aredis, queue_name)})
    t0 = 1_800_000_000
    assert await scheduler.tick(now=t0 + 0.5) == 0  # starts the schedule
    assert await scheduler.tick(now=t0 + 3.5) == 1  # three slots due, one task: it is unique
    assert await scheduler.tick(now=t0 + 4.5) == 0  # skipped: the task of slot 3 still holds the key
    [raw] = await aredis.lrange(queue_name, 0, -1)
    task = codec.loads(raw)
    assert task["id"] == f"sync@{t0 + 3}"
    lock = f"gopherq:{{{queue_name}}}:unique:{task['unique_key']}"
    assert await aredis.get(lock) == task["id"].encode()
    await aredis.delete(lock)  # the task ended (settle frees the lock)
    assert await scheduler.tick(now=t0 + 5.5) == 1
