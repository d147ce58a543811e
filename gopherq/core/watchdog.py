"""One timer for every running attempt: cancels the attempts that outlive their time limit.

A per-attempt `asyncio.timeout` arms and disarms a loop timer for every task, which costs close to a tenth of
the worker's time on short tasks. The watchdog keeps the deadlines in a heap and sleeps until the earliest one,
so watching an attempt is one heap push, and an attempt that finishes in time costs nothing more.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from gopherq.core.cancellation import RECANCEL_AFTER


class Watchdog:
    """Cancels watched asyncio tasks whose deadline (event-loop time) has passed, again every RECANCEL_AFTER
    seconds until they end; remembers which it cancelled."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Task[None]]] = []
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._expired: set[asyncio.Task[None]] = set()
        self._compact_at = 1024

    def watch(self, runner: asyncio.Task[None], seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        if not self._heap or deadline < self._heap[0][0]:
            self._wakeup.set()
        heapq.heappush(self._heap, (deadline, next(self._order), runner))
        if len(self._heap) > self._compact_at:
            self._compact()

    def _compact(self) -> None:
        """Drop finished attempts. Most finish long before their deadline, and without this the heap would keep
        every task of the last `task_timeout` seconds alive; compacting at twice the live size keeps memory flat
        at an amortised O(1) cost per attempt."""
        self._heap = [entry for entry in self._heap if not entry[2].done()]
        heapq.heapify(self._heap)
        # An attempt that ran on through a lost cancellation and then ended was never asked about.
        self._expired = {runner for runner in self._expired if not runner.done()}
        self._compact_at = max(1024, 2 * len(self._heap))

    def expired(self, runner: asyncio.Task[None] | None) -> bool:
        """True (once) when the watchdog cancelled `runner` for running past its deadline."""
        if runner in self._expired:
            self._expired.discard(runner)  # type: ignore[arg-type]
            return True
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._heap and (self._heap[0][2].done() or self._heap[0][0] <= loop.time()):
                _, _, runner = heapq.heappop(self._heap)
                if not runner.done():
                    self._expired.add(runner)
                    runner.cancel()
                    # Asked again until it ends: a cancellation can be lost on its way (core.cancellation).
                    heapq.heappush(self._heap, (loop.time() + RECANCEL_AFTER, next(self._order), runner))
            self._wakeup.clear()
            if not self._heap:
                await self._wakeup.wait()
                continue
            # A timer that sets the event, not asyncio.wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as its inner wait completes, and this loop must stop when the worker cancels it.
            alarm = loop.call_at(self._heap[0][0], self._wakeup.set)
            try:
                await self._wakeup.wait()
            finally:
                alarm.cancel()
