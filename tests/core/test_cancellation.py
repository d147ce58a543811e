"""Stopping tasks when a cancellation can be lost: redis-py writes every command through `asyncio.wait_for`, which on
Python before 3.12 drops a cancel that arrives as the write completes, so a loop talking to Redis can outlive one
`cancel()`. Shutdown, the watchdog and cancel requests ask again until the task ends."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq.core.cancellation import awaiting_at, cancel_and_wait
from gopherq.core.settings import Settings
from gopherq.core.watchdog import Watchdog


async def swallows_first_cancel() -> None:
    """Loses its first cancellation, as a `wait_for` whose inner await just finished does."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(60)


async def test_a_task_that_loses_its_first_cancellation_is_asked_again_and_stops() -> None:
    task = asyncio.create_task(swallows_first_cancel())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=5.0, recancel_after=0.05) == set()
    assert task.cancelled()


async def test_one_that_never_stops_is_returned_and_where_it_waits_is_named() -> None:
    release = asyncio.Event()

    async def ignores_cancellation() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    async def outer() -> None:
        await ignores_cancellation()

    task = asyncio.create_task(outer(), name="stubborn")
    await asyncio.sleep(0)
    pending = await cancel_and_wait([task], timeout=0.3, recancel_after=0.05)
    assert pending == {task}
    where = awaiting_at(task)
    assert where.startswith("outer:") and " > ignores_cancellation:" in where and " > wait:" in where
    release.set()
    await task


async def test_loops_talking_to_redis_always_stop(redis_url: str) -> None:
    """Real redis-py with a socket timeout (as every GoPherQ connection has): a single cancel of a loop of commands
    is lost in most of these trials on Python 3.10/3.11; asked again, every loop stops."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)

    async def commands() -> None:
        while True:
            await client.ping()

    rng = random.Random(7)
    try:
        for _ in range(40):
            task = asyncio.create_task(commands())
            await asyncio.sleep(rng.uniform(0, 0.002))
            assert await cancel_and_wait([task], timeout=5.0, recancel_after=0.01) == set()
    finally:
        await client.aclose()


async def test_the_watchdog_cancels_an_overdue_attempt_again_until_it_ends() -> None:
    watchdog = Watchdog()
    loop_task = asyncio.create_task(watchdog.run())
    runner = asyncio.create_task(swallows_first_cancel())
    watchdog.watch(runner, 0.05)
    await asyncio.wait({runner}, timeout=5)
    assert runner.cancelled() and watchdog.expired(runner)
    loop_task.cancel()


@pytest.mark.parametrize("cycle", range(4))
async def test_a_worker_promoting_all_the_time_stops_without_a_stuck_loop(
    cycle: int,
    make_settings: Callable[..., Settings],
    start_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The case seen: the maintenance loop, cancelled inside a promote, slept on until the 3 s bound."""
    worker = await start_worker(make_settings(worker={"promote_interval": 0.001}))
    await asyncio.sleep(0.05 + cycle * 0.013)
    with caplog.at_level(logging.WARNING, logger="gopherq"):
        await worker.stop()
    assert not [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
