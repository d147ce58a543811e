"""An operator's actions on one task by id: run a waiting task now, delete it, or cancel it (running or not).

The CLI, the API and the dashboard reach these through the inspection layer's Operator (operations.py: checked,
and recorded as `operator.action` events with their actor). A waiting task is found where its whereabouts record
says (the same lookup as `Inspector.task`, lookup.py), and moved by one script call given its exact bytes
(task_move.lua), so a worker claiming it at the same moment and the operator cannot both have it.
"""

from __future__ import annotations

import time
from typing import Literal

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.errors import TaskRejected
from gopherq.core.inspect.lookup import SEARCH_LIMIT, TaskLocator, ready_list
from gopherq.core.inspect.reading import decode
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.results import ErrorInfo, TaskResult
from gopherq.core.scripts import scripts
from gopherq.core.task import TaskStatus, task_from_dict

#: What an action did: 'done', 'not_waiting' (no ready or delayed task has that id: it runs, ended or never was).
Outcome = Literal["done", "not_waiting"]

#: The message a deleted task's record carries.
DELETED = "deleted by an operator before it ran"


class TaskActions:
    """Run-now, delete and cancel of one queue's tasks."""

    def __init__(self, redis: RedisClient, queue: str, result_ttl: int) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        self.result_ttl = result_ttl
        self._move = scripts(redis)["task_move"]

    async def _find(self, task_id: str) -> tuple[str, str, bytes] | None:
        """(key, 'zset' or 'list', envelope) of the waiting task with this id, or None: its whereabouts record
        says where it is (a bounded search only for a task without one, as a task lookup makes)."""
        k = self.keys
        locator = TaskLocator(self.redis)
        located = await locator.locate(k, task_id, await self.redis.hget(k.where, task_id), False)
        if located.state == "delayed" and located.envelope is not None:
            return k.delayed, "zset", located.envelope
        if located.state == "ready":
            # its level's list, or its fair key's list of that level when its record names a key
            key = ready_list(k, located.where) if located.where is not None else k.level(None)
            if located.envelope is not None:
                return key, "list", located.envelope
            # deeper than a lookup reads: its list is known, so look further in that one list
            found = await locator.find(key, "list", task_id, SEARCH_LIMIT, SEARCH_LIMIT)
            return (key, "list", found[0]) if isinstance(found, tuple) else None
        return None

    async def run_now(self, task_id: str) -> Outcome:
        """Put a waiting task (delayed: a retry or an eta; or ready) at the head of its priority level's list, or of
        its fair key's list of that level (it then runs at its key's next turn, within the key's limits)."""
        return await self._act("run", task_id)

    async def delete(self, task_id: str) -> Outcome:
        """Remove a waiting task; its result record says `cancelled` ("deleted by an operator"), so whoever waits
        for it gets an answer, and its uniqueness lock is freed."""
        return await self._act("delete", task_id)

    async def cancel(self, task_id: str) -> str:
        """Cancel a task wherever it is (Broker.cancel: 'finished', 'cancelled' or 'requested'; a running task's
        worker cancels the attempt within `worker.cancel_poll_interval`)."""
        return await Broker(self.redis, self.keys.queue).cancel(task_id, self.result_ttl)

    async def _act(self, action: str, task_id: str) -> Outcome:
        for _ in range(3):  # the task may move between the search and the script (promoted, claimed): look again
            found = await self._find(task_id)
            if found is None:
                return "not_waiting"
            key, kind, raw = found
            keys = [key, self.keys.stats, self.keys.result(task_id), *self.keys.ready_lists, self.keys.where]
            record = b""
            envelope = decode(raw)
            if action == "delete":
                attempts, task_type = 0, str(envelope.get("type", "http")) if isinstance(envelope, dict) else "?"
                try:
                    task = task_from_dict(envelope)
                    attempts, task_type = task.attempt - 1, task.type
                    if task.unique_key is not None:
                        keys.append(self.keys.unique(task.unique_key))
                except (TaskRejected, TypeError, ValueError):
                    pass
                record = codec.dumps(
                    TaskResult(
                        task_id,
                        self.keys.queue,
                        task_type,
                        TaskStatus.CANCELLED,
                        attempts,
                        finished_at=time.time(),
                        error=ErrorInfo("cancelled", DELETED),
                    ).to_dict()
                )
            args = [action, kind, raw, int(time.time() * 1000), record, self.result_ttl, task_id]
            if await self._move(keys=keys, args=args):
                return "done"
        return "not_waiting"
