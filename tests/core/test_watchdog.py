"""The worker's watchdog: one timer cancels every attempt that outlives its limit, and finished attempts do not
pile up in it."""

from __future__ import annotations

import asyncio

from gopherq.core.watchdog import Watchdog


async def test_cancels_only_overdue_attempts_and_says_which() -> None:
    watchdog = Watchdog()
    loop_task = asyncio.create_task(watchdog.run())
    slow = asyncio.create_task(asyncio.sleep(10))
    quick = asyncio.create_task(asyncio.sleep(0.01))
    watchdog.watch(slow, 0.2)
    watchdog.watch(quick, 0.2)
    done, _ = await asyncio.wait({slow, quick}, timeout=5)
    assert slow in done and slow.cancelled()
    assert quick in done and not quick.cancelled()
    assert watchdog.expired(slow) and not watchdog.expired(slow)  # reported once
    assert not watchdog.expired(quick)
    loop_task.cancel()


async def test_an_earlier_deadline_wakes_it_up() -> None:
    watchdog = Watchdog()
    loop_task = asyncio.create_task(watchdog.run())
    late = asyncio.create_task(asyncio.sleep(10))
    watchdog.watch(late, 30)
    await asyncio.sleep(0.05)  # the watchdog now sleeps until the late deadline
    early = asyncio.create_task(asyncio.sleep(10))
    watchdog.watch(early, 0.1)
    await asyncio.wait({early}, timeout=5)
    assert early.cancelled() and not late.done()
    late.cancel()
    loop_task.cancel()


async def test_finished_attempts_do_not_accumulate() -> None:
    watchdog = Watchdog()
    for _ in range(20000):
        runner = asyncio.create_task(asyncio.sleep(0))
        watchdog.watch(runner, 60)
        await runner
    assert len(watchdog._heap) <= 2048
