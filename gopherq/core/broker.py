"""The Redis side of the delivery protocol: enqueue, claim, settle, lease renewal, reaping and delayed tasks.

Every state change of a task is one Lua script (in `lua/` beside this module) that receives all its keys in
KEYS, so a task is always somewhere in Redis (ready list, processing list, in-flight hash, delayed set, dead
letters) and never only in a worker's memory. The worker batches: one `claim` takes up to N tasks and one
`settle` records the outcomes of every task that finished since the last one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gopherq.core import codec
from gopherq.core.errors import TaskRejected
from gopherq.core.eventlog import EventLog
from gopherq.core.keys import QueueKeys
from gopherq.core.priorities import LETTERS
from gopherq.core.redis_client import RedisClient
from gopherq.core.results import TaskResult
from gopherq.core.scripts import scripts
from gopherq.core.settle_call import Settlement as Settlement  # re-exported: the callers of Broker.settle make them
from gopherq.core.settle_call import Timing as Timing
from gopherq.core.settle_call import settle_call
from gopherq.core.task import TaskStatus, task_from_dict
from gopherq.core.whereabouts import Whereabouts, delayed_record, ready_record, with_layout

log = logging.getLogger(__name__)


def glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def now_ms() -> int:
    return int(time.time() * 1000)


#: Settlement kinds that end a task (its uniqueness lock and any cancel request for it go with it).

#: How long (ms) and how many of the attempt tokens the reaper took back are remembered (see QueueKeys.reaped): a
#: late settle arriving after that is taken for a repeated one, and accepted without writing anything.
REAPED_KEEP_MS = 24 * 3600 * 1000
REAPED_MAX = 100_000


@dataclass(slots=True)
class SpecialPush:
    """A task for `Broker.push_special`: its priority level (None: default) and/or uniqueness key (held for
    `lock_ms` at most), and its due time when it is delayed."""

    task_id: str
    envelope: bytes
    due_ms: int | None = None
    priority: str | None = None
    unique_key: str | None = None
    lock_ms: int = 0
    #: Seconds the task id is remembered, so the same id is not enqueued again (None: not remembered).
    seen_for: int | None = None


class Broker:
    """One queue on one Redis, as seen by one worker (or by a client, with `worker_id=None`)."""

    def __init__(self, redis: RedisClient, queue: str, worker_id: str | None = None) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        self._levels = self.keys.ready_lists[1:]  # the high and low lists, passed last to settle and reap
        self.worker_id = worker_id
        registry = scripts(redis)  # registered once per client, shared by every broker on it
        self._claim = registry["claim"]
        self._settle = registry["settle"]
        self._reap = registry["reap"]
        self._promote = registry["promote"]
        self._adopt = registry["adopt"]
        self._enqueue = registry["enqueue"]
        self._cancel_delayed = registry["cancel"]
        self._schedule = registry["schedule"]
        #: Ids of tasks whose cancellation is pending, as the last claim saw them (empty almost always).
        self.cancel_requests: frozenset[str] = frozenset()
        #: Attempt tokens the claim counted among their fair keys' running tasks (keys with limits): only their
        #: settles free a place (a 'fair' item); a key without limits costs its settles nothing. Each goes when its
        #: settle got a reply.
        self.fair_counted: set[str] = set()

    @property
    def processing(self) -> str:
        assert self.worker_id is not None, "only a worker has a processing list"
        return self.keys.processing(self.worker_id)

    # -- producing -------------------------------------------------------------------------------------------

    async def push(self, envelopes: list[bytes], ids: list[str] | None = None) -> None:
        """Append envelopes to the ready list in one round trip; with `ids` (the tasks' ids, in the same order),
        their whereabouts are recorded first (see `stage_push`)."""
        if envelopes:
            if ids is None:
                await self.redis.rpush(self.keys.ready, *envelopes)
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                self.stage_push(pipe, envelopes, ids)
                await pipe.execute()

    def stage_push(self, pipe: Any, envelopes: list[bytes], ids: list[str]) -> None:
        """Queue on `pipe` the whereabouts of tasks pushed to the plain ready list, then the push itself. The
        record goes first: no worker can claim a task before it is pushed, so its `running` record is never
        overwritten by a late `ready` one (a failed push leaves a record the lookup finds stale)."""
        record = ready_record("default", now_ms(), "enqueued")
        pipe.hset(self.keys.where, mapping=with_layout(dict.fromkeys(ids, record)))
        pipe.rpush(self.keys.ready, *envelopes)

    def stage_delayed(self, pipe: Any, due: list[tuple[bytes, int]], ids: list[str]) -> None:
        """Queue on `pipe` the whereabouts (`delayed|scheduled`) of tasks with an eta, then their ZADD."""
        records = {task_id: delayed_record("scheduled", when) for task_id, (_, when) in zip(ids, due, strict=True)}
        pipe.hset(self.keys.where, mapping=with_layout(records))
        pipe.zadd(self.keys.delayed, {envelope: when for envelope, when in due})

    async def push_delayed(self, due: list[tuple[bytes, int]], ids: list[str] | None = None) -> None:
        """Add envelopes to the delayed set, each with its due time in ms (and their whereabouts, given `ids`)."""
        if due:
            if ids is None:
                await self.redis.zadd(self.keys.delayed, {envelope: when for envelope, when in due})
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                self.stage_delayed(pipe, due, ids)
                await pipe.execute()

    async def push_special(self, items: list[SpecialPush]) -> list[str | None]:
        """Enqueue tasks of a priority level, with a uniqueness key and/or remembered by id, in one call (see
        enqueue.lua); returns, per task, None when it was enqueued, or the id of the task it duplicates (the holder
        of its uniqueness key, or itself when its id was seen): nothing enqueued."""
        k = self.keys
        keys = [k.ready, *self._levels, k.delayed]
        ids: list[bytes] = []
        specs: list[str] = []
        for item in items:
            if item.unique_key is not None:
                keys.append(k.unique(item.unique_key))
            if item.seen_for is not None:
                keys.append(k.seen(item.task_id))
            task_id = item.task_id.encode()
            ids.append(task_id)
            level = LETTERS[item.priority or "default"]
            due = "" if item.due_ms is None else item.due_ms
            lock = item.lock_ms if item.unique_key is not None else ""
            seen = "" if item.seen_for is None else item.seen_for
            specs.append(f"{len(item.envelope)},{len(task_id)},{level},{due},{lock},{seen}\n")
        keys.append(k.where)
        args = [b"".join(item.envelope for item in items), b"".join(ids), "".join(specs), now_ms()]
        replies = await self._enqueue(keys=keys, args=args)
        return [reply.decode() or None for reply in replies]

    # -- consuming -------------------------------------------------------------------------------------------

    async def claim(self, count: int, lease_ms: int, order: str = "hdl") -> list[tuple[str, bytes]] | None:
        """Claim up to `count` tasks, taking the priority levels in `order` (h, d, l); returns (attempt token,
        envelope) pairs, or None when the queue is paused; updates `cancel_requests`."""
        k = self.keys
        flat = await self._claim(
            keys=[k.ready, self.processing, k.leases, k.inflight, k.seq, k.paused, k.cancels, *self._levels, k.where],
            args=[count, now_ms() + lease_ms, order, self.worker_id, now_ms()],
        )
        if flat is None:
            return None
        if len(flat) >= 2 and flat[-2] == b"!cancels":
            self.cancel_requests = frozenset(item.decode() for item in flat[-1])
            flat = flat[:-2]
        elif self.cancel_requests:
            self.cancel_requests = frozenset()
        if len(flat) >= 2 and flat[-2] == b"!counted":
            self.fair_counted.update(token.decode() for token in flat[-1])
            flat = flat[:-2]
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
            args += [self.worker_id or "", now_ms()]
            await self._adopt(keys=[self.keys.inflight, self.keys.where], args=args)

    async def settle(
        self,
        items: list[Settlement],
        result_ttl: int,
        dead_cap: int,
        log: EventLog | None = None,
        timing: Timing = (0, 0, 0, 0),
        moved: list[str] | None = None,
        shorts: bytes = b"",
    ) -> list[bool]:
        """Record outcomes in one round trip; returns, per item, False when its token was stale (refused: the reaper
        handed the task to another worker). Sending the same settle again (its reply was lost) is safe: an item an
        earlier run already recorded is reported True, and nothing is written twice. The items' `events` go to the
        queue's event log `log` (its stream and the tasks' timelines, with the result TTL) in the same call, each
        with its item: none of a refused or repeated item. `timing`: the batch's attempt durations and times in
        queue (see Timing), added to this minute's and this hour's counts. The ids of the flows whose state the
        settled members changed (their first outcome, their end...) are added to `moved`, for announcing. `shorts`:
        the forms of the items' short events (core/eventlog.py `ShortEvents`), completed by the script."""
        if not items:
            return []
        limits, pending, counted = (result_ttl, dead_cap), self.cancel_requests, self.fair_counted
        keys, args = settle_call(self.keys, items, limits, now_ms(), log, timing, pending, counted, shorts)
        flags = await self._settle(keys=keys, args=args)
        if len(flags) > len(items):  # '!flows', then the flows whose state changed
            if moved is not None:
                moved += [flow_id.decode() for flow_id in flags[-1]]
            flags = flags[: len(items)]
        if self.fair_counted:  # settled now or before, or refused: either way this attempt's place is not ours
            self.fair_counted.difference_update(item.token for item in items)
        return [bool(flag) for flag in flags]

    async def heartbeat(
        self,
        tokens: list[str],
        lease_ms: int,
        info: dict[str, Any] | None = None,
        info_ttl: int = 60,
        successes: dict[str, float] | None = None,
    ) -> None:
        """Say this worker is alive, extend the leases of the tasks it is running and refresh what it tells
        others about itself (`info`, kept `info_ttl` seconds), in one round trip; `successes` (schedule name ->
        when a task of it last succeeded) go into the queue's schedule successes in the same round trip."""
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
            if successes:
                pipe.hset(self.keys.schedule_successes, mapping=successes)
            await pipe.execute()

    async def record_schedule_successes(self, successes: dict[str, float]) -> None:
        """Write schedule successes the heartbeat has not written yet (at shutdown)."""
        if successes:
            await self.redis.hset(self.keys.schedule_successes, mapping=successes)

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
        keys += [*self._levels, k.reaped, k.where]
        forget_before = silent_before - forget_after_ms
        args = [stamp, lock_ms, owner, limit, silent_before, forget_before, stamp - REAPED_KEEP_MS, REAPED_MAX]
        args += silent_ids
        recovered = await self._reap(keys=keys, args=args)
        if recovered is None:
            return None
        return list(recovered)

    async def promote(self, limit: int = 1000) -> int:
        """Move due delayed tasks to the ready list; returns how many moved."""
        keys = [self.keys.delayed, *self.keys.ready_lists, self.keys.where]
        return int(await self._promote(keys=keys, args=[now_ms(), limit]))

    async def run_schedule(
        self,
        name: str,
        last: int | None,
        new_last: int,
        envelopes: list[tuple[str, bytes]],
        priority: str | None = None,
        unique: tuple[str, int] | None = None,
    ) -> tuple[bool, int]:
        """Move schedule `name`'s last slot from `last` to `new_last` and enqueue `envelopes` ((task id, envelope)
        pairs), atomically (see schedule.lua). `unique`: (uniqueness key, lock ms) of a unique task, of which one
        envelope at most is given. Returns (True, how many were enqueued: 0 when the key was held), or (False, the
        current last slot, -1 for none) when `last` was stale."""
        k = self.keys
        keys = [k.schedules, k.level(priority), k.ready]
        lock_ms: Any = ""
        holder = ""
        if unique is not None and envelopes:
            keys.append(k.unique(unique[0]))
            lock_ms, holder = unique[1], envelopes[0][0]
        keys.append(k.where)
        args = [name, "" if last is None else last, new_last, lock_ms, holder, *(env for _, env in envelopes)]
        reply = await self._schedule(keys=keys, args=args)
        if int(reply[0]) == 1:
            return True, int(reply[1])
        return False, int(reply[1]) if reply[1] else -1

    async def paused(self) -> bool:
        """Whether an operator paused this queue (its claims then return None): asked by a worker that holds
        tasks it claimed ahead and has not started (`worker.prefetch`), which must not start them while paused."""
        return await self.redis.get(self.keys.paused) is not None

    async def schedule_paused(self, name: str) -> bool:
        """Whether schedule `name` (of this queue) is paused by an operator (asked only when a slot is due)."""
        return bool(await self.redis.hexists(self.keys.schedules_paused, name))

    # -- cancelling ------------------------------------------------------------------------------------------

    async def cancel(self, task_id: str, result_ttl: int) -> str:
        """Ask for a task to be cancelled; returns what happened:

        - 'finished': it already has a final result; nothing to cancel.
        - 'cancelled': it was waiting in the delayed set and is now removed and recorded as cancelled.
        - 'requested': the request is recorded; a worker that claims the task records it as cancelled instead
          of running it, and a worker running it cancels the attempt within `worker.cancel_poll_interval`.

        A ready task is not searched for (that would scan the list): the claim script hands every worker the
        pending requests with each batch, so it never starts. A delayed task is found by its whereabouts (a scan of
        the delayed set only for a task without a record). Requests older than `result_ttl` are dropped.
        """
        k = self.keys
        record = await self.get_result(task_id)
        if record is not None and TaskStatus(record["status"]).final:
            return "finished"
        await self.redis.zadd(k.cancels, {task_id: now_ms()})
        async for envelope in self._delayed_candidates(task_id):
            try:
                task = task_from_dict(codec.loads(envelope))
            except (TaskRejected, codec.JSONDecodeError):
                continue
            if task.id != task_id:
                continue
            stamp = time.time()
            body = TaskResult(
                task.id, self.keys.queue, task.type, TaskStatus.CANCELLED, task.attempt - 1, finished_at=stamp
            ).to_dict()
            keys = [k.delayed, k.cancels, k.stats, k.result(task_id)]
            if task.unique_key is not None:
                keys.append(k.unique(task.unique_key))
            keys.append(k.where)
            if await self._cancel_delayed(keys=keys, args=[envelope, codec.dumps(body), result_ttl, task_id]):
                return "cancelled"
        return "requested"

    async def _delayed_candidates(self, task_id: str) -> AsyncIterator[bytes]:
        """The delayed envelopes that may be the task's: those due when its whereabouts say it is (one range read),
        none when they say it is elsewhere, or a scan of the delayed set for a task without a record."""
        where = Whereabouts.parse(await self.redis.hget(self.keys.where, task_id))
        if where is not None:
            if where.place == "delayed" and where.at is not None:
                due = round(where.at * 1000)
                for envelope in await self.redis.zrangebyscore(self.keys.delayed, due, due, start=0, num=100):
                    yield envelope
            return
        pattern = '*"id":' + glob_escape(codec.dumps(task_id).decode()) + "*"
        async for envelope, _score in self.redis.zscan_iter(self.keys.delayed, match=pattern, count=1000):
            yield envelope

    async def cancel_requests_now(self, older_than_ms: int) -> set[str]:
        """The ids whose cancellation is pending, after dropping requests older than `older_than_ms` (so a request
        for a task that never comes is not kept for ever)."""
        entries = await self.redis.zrange(self.keys.cancels, 0, 999, withscores=True)
        oldest = now_ms() - older_than_ms
        if entries and min(score for _, score in entries) < oldest:
            await self.redis.zremrangebyscore(self.keys.cancels, "-inf", oldest)
        return {item.decode() for item, score in entries if score >= oldest}

    # -- reading ---------------------------------------------------------------------------------------------

    async def get_result(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(task_id))
        return None if raw is None else codec.loads(raw)

    async def counts(self) -> dict[str, int]:
        """Sizes of the queue's parts, for status output and tests."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in k.ready_lists:
                pipe.llen(name)
            pipe.hlen(k.inflight)
            pipe.zcard(k.delayed)
            pipe.zcard(k.dead_index)
            pipe.hvals(k.fair_count)  # tasks waiting in fair keys' lists
            default, high, low, inflight, delayed, dead, fair = await pipe.execute()
        ready = default + high + low + sum(max(0, int(n)) for n in fair)
        return {"ready": ready, "inflight": inflight, "delayed": delayed, "dead": dead}

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.stats)
        return {key.decode(): int(value) for key, value in raw.items()}
