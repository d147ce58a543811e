"""Surviving Redis faults: which errors mean "try again later", and the jittered backoff between tries.

A worker never exits because Redis restarted, failed over or refused a command for a while (loading its data,
out of memory, read-only replica): every loop catches `RETRYABLE`, waits with jittered exponential backoff, and
carries on. The wait always grows to at least `low`, so a worker whose Redis is down sleeps instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "Redis is not reachable right now" (BusyLoadingError is a ConnectionError too).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

#: Errors a long-running loop survives: the transient ones plus any error reply (OOM, MISCONF, READONLY, ...).
RETRYABLE = (RedisError, ConnectionError, OSError)


class Backoff:
    """Jittered exponential backoff for reconnecting; logs the first failure and then every 10th."""

    def __init__(self, what: str, low: float = 0.1, high: float = 2.0) -> None:
        self.what, self.low, self.high = what, low, high
        self.failures = 0

    def delay(self) -> float:
        """The next wait: uniform between `low` and min(high, low * 2**failures) (never below `low`)."""
        cap = min(self.high, self.low * 2 ** min(self.failures, 30))
        return random.uniform(self.low, max(self.low, cap))

    async def wait(self, exc: BaseException) -> None:
        """Count and log a failure, then sleep before the next try."""
        self.failed(exc)
        await asyncio.sleep(self.delay())

    def failed(self, exc: BaseException) -> None:
        """Count and log a failure (for loops that keep their own pace, like the heartbeat)."""
        self.failures += 1
        if self.failures == 1 or self.failures % 10 == 0:
            kind = "unavailable" if isinstance(exc, TRANSIENT) else "refused a command"
            log.warning(
                "%s: Redis %s (%s: %s); retrying (failure %d)",
                self.what,
                kind,
                type(exc).__name__,
                exc,
                self.failures,
            )

    def reset(self) -> None:
        if self.failures:
            log.info("%s: Redis reachable again after %d failures", self.what, self.failures)
        self.failures = 0


async def guarded(
    what: str,
    action: Callable[[], Awaitable[T]],
    *,
    stopping: asyncio.Event | None = None,
    once: bool = False,
    attempts: int = 0,
) -> T | None:
    """Run a Redis action, retrying failures with backoff: `attempts` times, or (0) until `stopping` is set.
    Returns the action's result, or None when it gave up (the failure is logged)."""
    backoff = Backoff(what)
    tries = 0
    while True:
        try:
            result = await action()
            backoff.reset()
            return result
        except RETRYABLE as exc:
            tries += 1
            stopped = stopping is not None and stopping.is_set()
            if once or (attempts and tries >= attempts) or (not attempts and stopped):
                log.warning("%s failed: %s", what, exc)
                return None
            await backoff.wait(exc)
