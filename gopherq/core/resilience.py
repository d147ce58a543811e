"""Surviving Redis faults: which errors mean "try again later", and the jittered backoff between tries.

A worker never exits because Redis restarted, failed over or refused a command for a while (loading its data,
out of memory, read-only replica): every loop catches `RETRYABLE`, waits with jittered exponential backoff, and
carries on. The wait always grows to at least `low`, so a worker whose Redis is down sleeps instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import random

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


class Backoff:
    """Jittered exponential backoff for reconnecting; logs the first failure and then every `repeat`th (0: only
    the first), and one line when it succeeds again."""

    def __init__(self, what: str, low: float = 0.1, high: float = 2.0, *, repeat: int = 10) -> None:
        self.what, self.low, self.high = what, low, high
        self.repeat = repeat
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
        if self.failures == 1 or (self.repeat and self.failures % self.repeat == 0):
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
