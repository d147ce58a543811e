"""Listing, inspecting, requeueing and purging dead letters (the admin side of the dead-letter queue)."""

from __future__ import annotations

import builtins
from typing import Any

from gopherq.core import codec
from gopherq.core.broker import Broker, load_script
from gopherq.core.outcomes import raw_from_entry

#: Fields reset when a dead letter is requeued: it starts over as a fresh task with the same id.
_RESET_FIELDS = ("attempt", "recoveries", "last_error")


def fresh_envelope(raw: bytes) -> bytes:
    """The envelope to requeue: attempts, recoveries and last error cleared, id and everything else kept.
    Bytes that are not a JSON object are requeued unchanged (they will be dead-lettered again unless fixed)."""
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError:
        return raw
    if not isinstance(obj, dict):
        return raw
    for field in _RESET_FIELDS:
        obj.pop(field, None)
    return codec.dumps(obj)


class DeadLetters:
    """The dead-letter queue of one queue."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.keys = broker.keys
        self._requeue = self.redis.register_script(load_script("requeue"))

    async def count(self) -> int:
        return int(await self.redis.zcard(self.keys.dead_index))

    async def list(self, limit: int = 50, offset: int = 0) -> builtins.list[dict[str, Any]]:
        """Entries, newest first."""
        ids = await self.redis.zrevrange(self.keys.dead_index, offset, offset + limit - 1)
        if not ids:
            return []
        raw = await self.redis.hmget(self.keys.dead, ids)
        return [codec.loads(item) for item in raw if item is not None]

    async def get(self, entry_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.dead, entry_id)
        return None if raw is None else codec.loads(raw)

    async def requeue(self, entry_ids: builtins.list[str] | None = None) -> int:
        """Requeue the given entries (all when None); returns how many went back to the ready list."""
        if entry_ids is None:
            entry_ids = [item.decode() for item in await self.redis.zrange(self.keys.dead_index, 0, -1)]
        moved = 0
        for start in range(0, len(entry_ids), 500):
            chunk = entry_ids[start : start + 500]
            entries = await self.redis.hmget(self.keys.dead, chunk)
            args: list[Any] = []
            for entry_id, raw_entry in zip(chunk, entries, strict=False):
                if raw_entry is not None:
                    args += [entry_id, fresh_envelope(raw_from_entry(codec.loads(raw_entry)))]
            if args:
                moved += int(
                    await self._requeue(keys=[self.keys.dead, self.keys.dead_index, self.keys.ready], args=args)
                )
        return moved

    async def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self.keys.dead_index)
            pipe.delete(self.keys.dead, self.keys.dead_index)
            count, _ = await pipe.execute()
        return int(count)
