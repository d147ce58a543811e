"""Fair keys: the Python side of per-tenant fairness (the claim itself is lua/fair_claim.lua).

A task may name a `fair_key` (a tenant, customer, API key). Within its priority level, the keys with waiting tasks
take turns, each a share of the claims in proportion to its weight, and each key may have limits of its own:
running tasks across all workers, tasks started per second, `ordered` (one in flight, in enqueue order) and
paused. What applies to a key comes from a run-time setting (`gopherq keys set`, kept in Redis) or else the first
`[[fair.keys]]` rule of the settings whose pattern matches it, or else `[fair] default_weight`. The workers publish
their rules to Redis when they start (the scripts read them there); run-time settings are kept until reset.

`FairKeys` is that control (set, pause, resume, reset) and the workers' upkeep (publish, heal); what a key looks
like now (backlog, running, oldest wait) is read by core/inspect/fair_keys.py.
"""

from __future__ import annotations

import logging
from typing import Any

from gopherq.core.errors import ConfigError
from gopherq.core.fairspec import KeyLimits, glob_to_lua
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts
from gopherq.core.sections import FairSettings
from gopherq.core.task import name_problem

log = logging.getLogger(__name__)

#: Most keys parked until a task ends that one upkeep round looks at again.
HEAL_BATCH = 1000


def check_fair_key(fair_key: str) -> str:
    """A fair key given to a command (`gopherq keys set K`, the API): the task field's own rule."""
    problem = name_problem(fair_key)
    if problem is not None:
        raise ConfigError(f"fair key {problem}, got {fair_key!r}")
    return fair_key


def rules_for_scripts(fair: FairSettings) -> list[str]:
    """The settings' rules as the scripts read them: "<Lua pattern>\\n<spec>", first match first, then the
    default weight for every other key. Empty when the settings are the defaults (nothing is stored then)."""
    rules = [f"{glob_to_lua(rule.pattern)}\n{rule.limits().spec()}" for rule in fair.keys]
    if rules or fair.default_weight != 1.0:
        rules.append(f"^.*$\n{KeyLimits(weight=fair.default_weight).spec()}")
    return rules


class FairKeys:
    """Control of one queue's fair keys: run-time settings, pause and resume, and the workers' upkeep."""

    def __init__(self, redis: RedisClient, queue: str, fair: FairSettings) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        self.fair = fair
        self._ctl = scripts(redis)["fair_ctl"]

    async def publish_rules(self) -> None:
        """Store this worker's `[fair]` rules where the scripts read them (the last worker to start wins: every
        worker of a queue is meant to share its settings)."""
        rules = rules_for_scripts(self.fair)
        await self._ctl(keys=[self.keys.ready], args=["rules", HEAL_BATCH, *rules])

    async def limits(self, fair_key: str) -> tuple[KeyLimits, str]:
        """What applies to `fair_key` now, and where it comes from: 'run-time' or 'settings'."""
        spec = await self.redis.hget(self.keys.fair_config, fair_key)
        if spec is not None:
            return KeyLimits.from_spec(spec.decode()), "run-time"
        return self.fair.limits_for(fair_key), "settings"

    async def set(self, fair_key: str, **changes: Any) -> KeyLimits:
        """Change what applies to `fair_key` from now on (weight, concurrency, rate, burst, ordered, paused; None
        leaves a field as it is), starting from what applies now; returns the result."""
        check_fair_key(fair_key)
        current, _ = await self.limits(fair_key)
        limits = current.changed(**changes)
        await self.redis.hset(self.keys.fair_config, fair_key, limits.spec())
        await self._ctl(keys=[self.keys.ready], args=["keys", fair_key])
        return limits

    async def pause(self, fair_key: str) -> KeyLimits:
        """Claim no task of `fair_key` until it is resumed (running tasks finish)."""
        return await self.set(fair_key, paused=True)

    async def resume(self, fair_key: str) -> KeyLimits:
        return await self.set(fair_key, paused=False)

    async def reset(self, fair_key: str) -> KeyLimits:
        """Forget the run-time settings of `fair_key`: the settings' rules apply again."""
        check_fair_key(fair_key)
        await self.redis.hdel(self.keys.fair_config, fair_key)
        await self._ctl(keys=[self.keys.ready], args=["keys", fair_key])
        return self.fair.limits_for(fair_key)

    async def heal(self) -> int:
        """Look again at keys parked until one of their tasks ends (an end a dead worker never reported): the
        claim recounts their running tasks from the in-flight record. Returns how many were looked at."""
        return int(await self._ctl(keys=[self.keys.ready], args=["heal", HEAL_BATCH]))
