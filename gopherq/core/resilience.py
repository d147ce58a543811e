"""Surviving Redis faults: which errors mean "try again later", and the jittered backoff between tries.

A worker never exits because Redis restarted, failed over or refused a command for a while (loading its data,
out of memory, read-only replica): every loop catches `RETRYABLE`, waits with jittered exponential backoff, and
carries on. The wait always grows to at least `low`, so a worker whose Redis is down sleeps instead of spinning.

A worker's loops share one `Outage`: when Redis stops answering, the first loop that notices says so in one
WARNING (`Redis not answering (...)`), a reminder follows every half minute while it lasts, and one line says when
it answers again; the loops themselves stay quiet meanwhile. Commands have a deadline shorter than the lease
(connection.command_timeout), so a freeze is reported within seconds, before the leases it holds up expire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "Redis is not reachable right now" (BusyLoadingError is a ConnectionError too).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

#: Errors a long-running loop survives: the transient ones plus any error reply (OOM, MISCONF, READONLY, ...).
RETRYABLE = (RedisError, ConnectionError, OSError)

#: Error replies that say Redis refuses writes for now, not that the command is wrong: out of memory under
#: `noeviction`, a read-only replica (the old master during a failover), the master or the cluster down, a slot
#: on the move. The same command succeeds later, as after a lost connection.
REFUSED = (OutOfMemoryError, ReadOnlyError, MasterDownError, ClusterDownError, TryAgainError)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` means "Redis cannot take this now, but will": unreachable, loading its data, or refusing
    writes (REFUSED, and MISCONF: a failed background save stops writes until one succeeds). A writer that must
    not lose what it writes holds it and tries again; any other error reply is the command's own fault."""
    if isinstance(exc, (*TRANSIENT, *REFUSED)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith("MISCONF")


class Outage:
    """Whether Redis answers, as one process sees it through all its loops (see the module docstring)."""

    #: Seconds between two reminders that Redis still does not answer.
    REMIND_EVERY = 30.0

    def __init__(self, who: str) -> None:
        self.who = who
        self.since: float | None = None
        self.failures = 0
        self._reminded = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        """Count a transient failure seen by `what`; the first of an outage is logged, then a reminder now and
        then."""
        self.failures += 1
        now = time.monotonic()
        kind = "not answering" if isinstance(exc, (RedisTimeoutError, TimeoutError)) else "unavailable"
        if self.since is None:
            self.since = self._reminded = now
            log.warning(
                "%s: Redis %s (%s: %s), noticed by %s; retrying until it answers",
                self.who,
                kind,
                type(exc).__name__,
                exc,
                what,
            )
        elif now - self._reminded >= self.REMIND_EVERY:
            self._reminded = now
            log.warning(
                "%s: Redis still %s after %.0fs (%d failed calls; last: %s: %s)",
                self.who,
                kind,
                now - self.since,
                self.failures,
                type(exc).__name__,
                exc,
            )

    def answered(self) -> None:
        """A command succeeded: the outage, if any, is over (one INFO line)."""
        if self.since is not None:
            log.info(
                "%s: Redis reachable again after %.1fs (%d failed calls)",
                self.who,
                time.monotonic() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0


class Backoff:
    """Jittered exponential backoff for reconnecting. On its own it logs the first failure and then every
    `repeat`th (0: only the first), and one line when it succeeds again; with an `outage`, transient failures (no
    answer, no connection) are the outage's to report, and only error replies (OOM, READONLY, ...) are logged
    here."""

    def __init__(
        self, what: str, low: float = 0.1, high: float = 2.0, outage: Outage | None = None, *, repeat: int = 10
    ) -> None:
        self.what, self.low, self.high = what, low, high
        self.outage = outage
        self.repeat = repeat
        self.failures = 0
        self.logged = False

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
        if self.outage is not None and isinstance(exc, TRANSIENT):
            self.outage.failed(self.what, exc)
            return
        if self.failures == 1 or (self.repeat and self.failures % self.repeat == 0):
            self.logged = True
            kind = "unavailable" if isinstance(exc, TRANSIENT) else "refused a command"
            log.warning(
                "%s%s: Redis %s (%s: %s); retrying (failure %d)",
                f"{self.outage.who}: " if self.outage is not None else "",
                self.what,
                kind,
                type(exc).__name__,
                exc,
                self.failures,
            )

    def reset(self) -> None:
        if self.outage is not None:
            self.outage.answered()
        if self.failures and self.logged:
            who = f"{self.outage.who}: " if self.outage is not None else ""
            log.info("%s%s: Redis reachable again after %d failures", who, self.what, self.failures)
        self.failures = 0
        self.logged = False


async def with_retries(
    what: str,
    action: Callable[[], Awaitable[T]],
    *,
    outage: Outage | None = None,
    stopping: asyncio.Event | None = None,
    once: bool = False,
    attempts: int = 0,
) -> T | None:
    """Run a Redis action, retrying failures with backoff: `attempts` times, or (0) until `stopping` is set.
    Returns the action's result, or None when it gave up (the failure is logged)."""
    backoff = Backoff(what, outage=outage)
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
