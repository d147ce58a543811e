"""The Redis side of the delivery protocol: enqueue, claim, settle, lease renewal, reaping and delayed tasks.

Every state change of a task is one Lua script (in `lua/` beside this module) that receives all its keys in
KEYS, so a task is always somewhere in Redis (ready list, processing list, in-flight hash, delayed set, dead
letters) and never only in a worker's memory. The worker batches: one `claim` takes up to N tasks and one
`settle` records the outcomes of every task that finished since the last one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gopherq.core import codec
from gopherq.core.keys import COUNTS_TTL, QueueKeys

log = logging.getLogger(__name__)


def load_script(name: str) -> str:
    return resources.files("gopherq.core").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Settlement:
    """The outcome of one claimed task, recorded by `Broker.settle`.

    kind: 'ack' (finished, result written), 'retry' (data: new envelope, extra: due ms), 'dead' (data: entry
    JSON, extra: entry id) or 'release' (back to the head of the ready list, unchanged).
    """

    kind: str
    token: str
    task_id: str
    result: bytes = b""
    data: bytes = b""
    extra: str = ""


class Broker:
    """One queue on one Redis, as seen by one worker (or by a client, with `worker_id=None`)."""

    def __init__(self, redis: Any, queue: str, worker_id: str | None = None) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        self.worker_id = worker_id
        self._claim = redis.register_script(load_script("claim"))
        self._settle = redis.register_script(load_script("settle"))
        self._reap = redis.register_script(load_script("reap"))
        self._promote = redis.register_script(load_script("promote"))
        self._adopt = redis.register_script(load_script("adopt"))
        self._create = redis.register_script(load_script("create"))

    @property
    def processing(self) -> str:
        assert self.worker_id is not None, "only a worker has a processing list"
        return self.keys.processing(self.worker_id)

    # -- producing -------------------------------------------------------------------------------------------

    async def push(self, envelopes: list[bytes]) -> None:
        """Append envelopes to the ready list in one round trip."""
        if envelopes:
            await self.redis.rpush(self.keys.ready, *envelopes)

    async def create(self, items: list[tuple[str | None, bytes, int | None]], window: int) -> list[bool]:
        """Enqueue (task id, envelope, due ms or None) items unless their id was seen within `window` seconds,
        in one round trip; returns, per item, whether it was created. An item without an id (None: one the
        server assigned) is always created and leaves no marker."""
        if not items:
            return []
        keys = [self.keys.ready, self.keys.delayed]
        args: list[Any] = [window]
        for task_id, envelope, due in items:
            if task_id is not None:
                keys.append(self.keys.seen(task_id))
            args += [envelope, "" if due is None else due, "" if task_id is None else "1"]
        flags = await self._create(keys=keys, args=args)
        return [bool(flag) for flag in flags]

    async def push_delayed(self, due: list[tuple[bytes, int]]) -> None:
        """Add envelopes to the delayed set, each with its due time in ms."""
        if due:
            await self.redis.zadd(self.keys.delayed, {envelope: when for envelope, when in due})

    # -- consuming -------------------------------------------------------------------------------------------

    async def claim(self, count: int, lease_ms: int) -> list[tuple[str, bytes]] | None:
        """Claim up to `count` tasks; returns (attempt token, envelope) pairs, or None when the queue is paused."""
        k = self.keys
        flat = await self._claim(
            keys=[k.ready, self.processing, k.leases, k.inflight, k.seq, k.paused], args=[count, now_ms() + lease_ms]
        )
        if flat is None:
            return None
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def wait_for_task(self, timeout: float) -> bool:
        """Block until a task arrives, moving it into this worker's processing list (claimed next)."""
        moved = await self.redis.blmove(self.keys.ready, self.processing, timeout, "LEFT", "RIGHT")  # type: ignore[arg-type]
        return moved is not None

    async def adopt(self, envelopes: dict[str, bytes]) -> None:
        """Rewrite in-flight envelopes (token -> envelope), e.g. after assigning an id."""
        if envelopes:
            args: list[Any] = []
            for token, envelope in envelopes.items():
                args += [token, envelope]
            await self._adopt(keys=[self.keys.inflight], args=args)

    async def settle(self, items: list[Settlement], result_ttl: int, dead_cap: int) -> list[bool]:
        """Record outcomes in one round trip; returns, per item, False when its token was stale (refused)."""
        if not items:
            return []
        k = self.keys
        stamp = now_ms()
        keys = [k.ready, k.leases, k.inflight, k.delayed, k.dead, k.dead_index, k.stats, k.counts(stamp // 60000 * 60)]
        args: list[Any] = [stamp, result_ttl, dead_cap, COUNTS_TTL]
        for item in items:
            keys.append(k.result(item.task_id))
            args += [item.kind, item.token, item.result, item.data, item.extra]
        flags = await self._settle(keys=keys, args=args)
        return [bool(flag) for flag in flags]

    async def heartbeat(
        self, tokens: list[str], lease_ms: int, info: dict[str, Any] | None = None, info_ttl: int = 60
    ) -> None:
        """Say this worker is alive, extend the leases of the tasks it is running and refresh what it tells
        others about itself (`info`, kept `info_ttl` seconds), in one round trip."""
        assert self.worker_id is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            stamp = now_ms()
            pipe.zadd(self.keys.workers, {self.worker_id: stamp})
            if tokens:
                deadline = stamp + lease_ms
                pipe.zadd(self.keys.leases, {token: deadline for token in tokens}, xx=True)
            if info:
                info_key = self.keys.worker_info(self.worker_id)
                pipe.hset(info_key, mapping=info)
                pipe.expire(info_key, info_ttl)
            await pipe.execute()

    async def deregister(self) -> None:
        """Remove this worker's heartbeat and info (on clean shutdown, after its processing list is empty)."""
        assert self.worker_id is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.workers, self.worker_id)
            pipe.delete(self.keys.worker_info(self.worker_id))
            await pipe.execute()

    async def release_staged(self) -> int:
        """Put anything a blocking fetch left in this worker's processing list back at the ready list's head."""
        moved = 0
        while await self.redis.lmove(self.processing, self.keys.ready, "RIGHT", "LEFT") is not None:
            moved += 1
        return moved

    async def reap(
        self, worker_ttl_ms: int, lock_ms: int, owner: str, limit: int = 1000, forget_after_ms: int = 15000
    ) -> list[bytes] | None:
        """Recover expired leases and the processing lists of workers silent for `worker_ttl_ms`; None when
        another worker holds the lock. A silent worker stays listed (and its list checked) for `forget_after_ms`
        more, so a blocking fetch it left pending on the server cannot strand a task in its list."""
        k = self.keys
        stamp = now_ms()
        silent_before = stamp - worker_ttl_ms
        silent = await self.redis.zrangebyscore(k.workers, "-inf", silent_before)
        silent_ids = [w.decode() for w in silent if w.decode() != self.worker_id]
        keys = [k.ready, k.leases, k.inflight, k.workers, k.reaper_lock, k.stats]
        keys += [k.processing(w) for w in silent_ids]
        args = [stamp, lock_ms, owner, limit, silent_before, silent_before - forget_after_ms, *silent_ids]
        recovered = await self._reap(keys=keys, args=args)
        if recovered is None:
            return None
        return list(recovered)

    async def promote(self, limit: int = 1000) -> int:
        """Move due delayed tasks to the ready list; returns how many moved."""
        return int(await self._promote(keys=[self.keys.delayed, self.keys.ready], args=[now_ms(), limit]))

    # -- reading ---------------------------------------------------------------------------------------------

    async def get_result(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(task_id))
        return None if raw is None else codec.loads(raw)

    async def counts(self) -> dict[str, int]:
        """Sizes of the queue's parts, for status output and tests."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.ready)
            pipe.hlen(k.inflight)
            pipe.zcard(k.delayed)
            pipe.zcard(k.dead_index)
            ready, inflight, delayed, dead = await pipe.execute()
        return {"ready": ready, "inflight": inflight, "delayed": delayed, "dead": dead}

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {key.decode(): int(value) for key, value in raw.items()}
