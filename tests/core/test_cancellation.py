"""Stopping tasks when a cancellation can be lost: redis-py writes every command through `asyncio.wait_for`, which on
Python before 3.12 drops a cancel that arrives as the write completes, so a loop talking to Redis can outlive one
`cancel()`. GoPherQ's connections write otherwise on 3.11, and shutdown, the watchdog and cancel requests ask again
until the task ends, whatever else loses one."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gopherq.core.cancellation import awaiting_at, cancel_and_wait
from gopherq.core.connection import RedisConnection
from gopherq.core.settings import Settings
from gopherq.core.watchdog import Watchdog
from tests.support.redis_servers import PrivateRedis


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


async def test_a_loop_of_commands_on_gopherq_connections_stops_at_the_first_cancel(redis_url: str) -> None:
    """On GoPherQ's connections (socket_timeout set, as always) a command's write cannot lose a cancellation: a loop
    of PINGs, cancelled once at a random moment, always stops. Through redis-py's own write path on Python 3.11 a
    median of 20 cancels was needed, some loops needed over 300."""
    connection = RedisConnection(Settings(redis={"url": redis_url}), "test")
    client = await connection.open()
    assert client.connection_pool.connection_kwargs.get("socket_timeout")

    async def commands() -> None:
        while True:
            await client.ping()

    rng = random.Random(7)
    try:
        for _ in range(100):
            task = asyncio.create_task(commands())
            await asyncio.sleep(rng.uniform(0, 0.002))
            assert await cancel_and_wait([task], timeout=2.0, recancel_after=10.0) == set()  # one cancel only
    finally:
        await connection.close()


async def test_a_write_to_a_redis_that_stopped_reading_still_times_out(
    private_redis: Callable[..., PrivateRedis],
) -> None:
    """The write's bound, now an `asyncio.timeout`, holds as redis-py's did: a frozen server (SIGSTOP) stops reading,
    the socket's buffers fill, and the send fails with redis-py's TimeoutError and drops the connection."""
    server = private_redis()
    connection = RedisConnection(Settings(redis={"url": server.url, "command_timeout": 1.0}), "test")
    client = await connection.open()
    try:
        await client.ping()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
                await client.set("big", b"x" * (64 << 20))  # far more than the kernel buffers
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert await client.ping()  # a new connection: the timed-out one was dropped
    finally:
        await connection.close()


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
