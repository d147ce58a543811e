"""Listing, inspecting, requeueing and purging dead letters (the admin side of the dead-letter queue)."""

from __future__ import annotations

import builtins
import functools
import re
import time
from collections.abc import Callable
from typing import Any

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.events import EventBus
from gopherq.core.masking import MASK, Masker, drop_cut_url
from gopherq.core.outcomes import raw_from_entry
from gopherq.core.registry import QueueRegistry
from gopherq.core.scripts import scripts
from gopherq.core.task import RESERVED_FIELDS

#: Fields reset when a dead letter is requeued: it starts over as a fresh task with the same id (every field
#: GoPherQ keeps on a task as it moves).
#: A requeued task keeps its flow membership: a dead member that succeeds after its requeue moves its flow on.
_RESET_FIELDS = sorted(RESERVED_FIELDS - {"flow_member"})


def fresh_envelope(raw: bytes, task_id: str | None = None, now: float | None = None) -> bytes:
    """The envelope to requeue: attempts, recoveries, last error and flow slot cleared, id and everything else kept
    (a task pushed without an id gets the one the worker assigned, `task_id`), and `ready_at` stamped `now`: a
    requeued task has waited since its requeue, not since it was first created. Bytes that are not a JSON object
    are requeued unchanged (they will be dead-lettered again unless fixed)."""
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError:
        return raw
    if not isinstance(obj, dict):
        return raw
    for field in _RESET_FIELDS:
        obj.pop(field, None)
    if task_id is not None and "id" not in obj:
        obj = {"id": task_id, **obj}
    obj.pop("ready_at", None)
    obj["ready_at"] = time.time() if now is None else now  # last: where GoPherQ keeps it (see Task.to_wire)
    return codec.dumps(obj)


def _with_id(entry_id: bytes | str, raw_entry: bytes) -> dict[str, Any]:
    """An entry as stored, with its id (the key it is stored under) first."""
    return {"id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id, **codec.loads(raw_entry)}


def masked_entry(entry: dict[str, Any], masker: Masker) -> dict[str, Any]:
    """A dead letter fit to show: every secret masked, the raw envelope's headers included (it is JSON text, so it
    is parsed, masked and written again; text that is not JSON, such as the prefix of a `too_large` task, is masked
    by `masked_raw_text`)."""
    shown: dict[str, Any] = masker.value({key: value for key, value in entry.items() if key != "raw"})
    raw = entry.get("raw")
    if isinstance(raw, str):
        try:
            shown["raw"] = codec.dumps(masker.value(codec.loads(raw))).decode()
        except (codec.JSONDecodeError, TypeError):
            shown["raw"] = masked_raw_text(raw, masker, cut=bool(entry.get("raw_truncated")))
    return shown


def masked_raw(entry: dict[str, Any], masker: Masker) -> bytes:
    """A dead letter's stored bytes, secrets masked, as the download serves them: JSON parsed, masked and written
    again; anything else masked as text, with the bytes that are not UTF-8 kept as they are."""
    raw = raw_from_entry(entry)
    try:
        return codec.dumps(masker.value(codec.loads(raw)))
    except (codec.JSONDecodeError, TypeError):
        text = raw.decode("utf-8", "surrogateescape")
        return masked_raw_text(text, masker, cut=bool(entry.get("raw_truncated"))).encode("utf-8", "surrogateescape")


def masked_raw_text(text: str, masker: Masker, cut: bool = False) -> str:
    """Bytes that are not JSON (or no longer whole), masked as well as text allows: every URL, and the value of
    every `"<secret header>": "..."` pair in them (to its closing quote, or to the end when the text stops first).
    `cut`: the text is a prefix, so a URL it ends in is dropped."""
    if cut:
        text = drop_cut_url(text)
    return _secret_pairs(masker.headers).sub(lambda m: m.group(1) + MASK + m.group(3), masker.text(text))


@functools.lru_cache(maxsize=8)
def _secret_pairs(headers: frozenset[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(name) for name in sorted(headers))
    return re.compile(rf'("(?:{names})"\s*:\s*")((?:[^"\\]|\\.)*)("?)', re.IGNORECASE)


class DeadLetters:
    """The dead-letter queue of one queue. With an event bus, a requeue emits `task.requeued` per entry. With a
    masker, `list` and `get` return entries fit to show (`masked_entry`); requeueing always uses the raw bytes."""

    def __init__(self, broker: Broker, bus: EventBus | None = None, masker: Masker | None = None) -> None:
        self.masker = masker
        self.broker = broker
        self.redis = broker.redis
        self.keys = broker.keys
        self.bus = bus
        self._requeue = scripts(self.redis)["requeue"]

    async def count(self) -> int:
        """How many dead letters the queue holds."""
        return int(await self.redis.zcard(self.keys.dead_index))

    async def trimmed(self) -> int:
        """How many dead letters were dropped, oldest first, because the queue held `dead_letter_max`."""
        return int(await self.redis.hget(self.keys.stats, "dead_trimmed") or 0)

    async def list(self, limit: int = 50, offset: int = 0) -> builtins.list[dict[str, Any]]:
        """Entries, newest first."""
        ids = await self.redis.zrevrange(self.keys.dead_index, offset, offset + limit - 1)
        if not ids:
            return []
        raw = await self.redis.hmget(self.keys.dead, ids)
        entries = [_with_id(entry_id, item) for entry_id, item in zip(ids, raw, strict=True) if item is not None]
        return entries if self.masker is None else [masked_entry(entry, self.masker) for entry in entries]

    async def get(self, entry_id: str) -> dict[str, Any] | None:
        """One entry (its id is the task's id, or `raw-...` for bytes that never became a task), or None."""
        raw = await self.redis.hget(self.keys.dead, entry_id)
        if raw is None:
            return None
        entry = _with_id(entry_id, raw)
        return entry if self.masker is None else masked_entry(entry, self.masker)

    async def requeue(
        self,
        entry_ids: builtins.list[str] | None = None,
        progress: Callable[[int], Any] | None = None,
        moved_tasks: builtins.list[str | None] | None = None,
    ) -> int:
        """Requeue the given entries (all when None) at the tail of the ready list, attempts reset and id kept;
        returns how many went back (an id that is not, or no longer, a dead letter is skipped, and so is the dead
        letter of a `too_large` task, which keeps only a prefix of it). `progress` is
        called with the number of entries handled after each chunk (e.g. a progress bar's `update`);
        `moved_tasks`, when given, gets the task id of each entry that went back (for the audit trail)."""
        await QueueRegistry(self.redis).note(self.keys.queue)  # requeued tasks make it a queue with work to list
        if entry_ids is None:
            entry_ids = [item.decode() for item in await self.redis.zrange(self.keys.dead_index, 0, -1)]
        moved = 0
        for start in range(0, len(entry_ids), 500):
            chunk = entry_ids[start : start + 500]
            entries = await self.redis.hmget(self.keys.dead, chunk)
            args: builtins.list[Any] = []
            task_ids: dict[str, str | None] = {}
            now = time.time()
            for entry_id, raw_entry in zip(chunk, entries, strict=True):
                if raw_entry is not None:
                    entry = codec.loads(raw_entry)
                    if entry.get("raw_truncated"):
                        continue  # only a prefix of a too_large task was kept: there is no task to requeue
                    task_ids[entry_id] = entry.get("task_id")
                    args += [entry_id, fresh_envelope(raw_from_entry(entry), entry.get("task_id"), now)]
            if not args:
                if progress is not None:
                    progress(len(chunk))
                continue
            keys = [self.keys.dead, self.keys.dead_index, *self.keys.ready_lists, self.keys.where]
            done = await self._requeue(keys=keys, args=[*args, int(now * 1000)])
            moved += len(done)
            if moved_tasks is not None:
                moved_tasks += [task_ids.get(item.decode()) for item in done]
            if self.bus is not None:
                for item in done:
                    entry_id = item.decode()
                    self.bus.emit(
                        "task.requeued",
                        queue=self.keys.queue,
                        task_id=task_ids.get(entry_id),
                        data={"entry_id": entry_id},
                    )
            if progress is not None:
                progress(len(chunk))
        return moved

    async def delete(self, entry_ids: builtins.list[str]) -> int:
        """Delete the given entries; returns how many existed."""
        if not entry_ids:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dead, *entry_ids)
            pipe.zrem(self.keys.dead_index, *entry_ids)
            deleted, _ = await pipe.execute()
        return int(deleted)

    async def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self.keys.dead_index)
            pipe.delete(self.keys.dead, self.keys.dead_index)
            count, _ = await pipe.execute()
        return int(count)
