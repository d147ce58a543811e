"""Unique tasks: of identical enqueues racing from many producers exactly one gets in, the others get its id; the
lock is freed when the task ends or dead-letters, or when its window lapses; raw producers are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, ExecutionContext, PermanentFailure, Settings, Task
from gopherq.core.plugins import load_plugins
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin


class Work:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def execute(self, task: Task, context: ExecutionContext) -> Any:
        self.calls.append(task.id)
        if task.fields.get("fail"):
            raise PermanentFailure("no")
        return task.fields


def plugins_for(settings: Settings, work: Work) -> dict[str, Any]:
    return {"work": ExecutorPlugin("work", work)}


def client_for(settings: Settings, work: Work) -> AsyncClient:
    return AsyncClient(settings, plugins=load_plugins(settings, extra=plugins_for(settings, work)))


async def test_twenty_racing_producers_enqueue_one_task(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    work = Work()
    clients = [client_for(settings, work) for _ in range(20)]
    for client in clients:
        await client.connect()
    try:
        tasks = [client.task("work", n=1, unique_for=60) for client in clients]
        assert len({task.unique_key for task in tasks}) == 1  # same type and fields: same key
        outcomes = await asyncio.gather(*(client.submit([task]) for client, task in zip(clients, tasks, strict=True)))
    finally:
        for client in clients:
            await client.close()
    flat = [outcome for [outcome] in outcomes]
    winners = [outcome for outcome in flat if not outcome.duplicate]
    assert len(winners) == 1
    assert {outcome.id for outcome in flat} == {winners[0].id}  # the losers were told the winner's id
    assert await aredis.llen(queue_name) == 1


async def test_the_lock_is_freed_when_the_task_ends_or_dead_letters(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(queue={"max_attempts": 1})
    work = Work()
    async with client_for(settings, work) as client:
        first = (await client.submit([client.task("work", unique_key="report-7")]))[0]
        again = (await client.submit([client.task("work", unique_key="report-7")]))[0]
        assert again == (first.id, True)
        await start_worker(settings, extra_plugins=plugins_for(settings, work))
        record = await client.wait(first.id, timeout=10)
        assert record is not None and record.status.value == "succeeded"
        second = (await client.submit([client.task("work", unique_key="report-7", fail=True)]))[0]
        assert not second.duplicate and second.id != first.id
        record = await client.wait(second.id, timeout=10)
        assert record is not None and record.status.value == "dead"  # dead-lettered
        third = (await client.submit([client.task("work", unique_key="report-7")]))[0]
        assert not third.duplicate
        await client.wait(third.id, timeout=10)
    assert await aredis.exists(f"gopherq:{{{queue_name}}}:unique:report-7") == 0


async def test_the_lock_lapses_with_its_window_and_delayed_tasks_hold_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    work = Work()
    async with client_for(settings, work) as client:
        first = (await client.submit([client.task("work", x=1, unique_for=0.3, delay=60)]))[0]
        assert (await client.submit([client.task("work", x=1, unique_for=0.3)]))[0].duplicate

        async def accepted() -> bool:
            return not (await client.submit([client.task("work", x=1, unique_for=60)]))[0].duplicate

        await async_wait_until(accepted, timeout=5, interval=0.1, what="the window to lapse")
        assert first.id  # the delayed one is still there; only its lock lapsed
        # Different fields: a different key, never a duplicate.
        assert not (await client.submit([client.task("work", x=2, unique_for=60)]))[0].duplicate


async def test_the_enqueue_command_reports_a_duplicate(
    run_gopherq: Callable[..., Any], redis_url: str, queue_name: str, aredis: aioredis.Redis
) -> None:
    env = {"GOPHERQ_REDIS__URL": redis_url, "GOPHERQ_QUEUE__NAME": queue_name}
    args = ["enqueue", "--url", "https://example.com/x", "--unique-for", "60", "--priority", "low"]
    first = await asyncio.to_thread(run_gopherq, args, env=env)
    second = await asyncio.to_thread(run_gopherq, args, env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout and "already queued or running" in second.stderr
    assert await aredis.llen(f"gopherq:{{{queue_name}}}:ready:low") == 1
