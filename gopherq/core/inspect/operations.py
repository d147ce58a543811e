"""What an operator changes, from whichever face (CLI, `/v1` API, dashboard): pause, resume, cancel, requeue and
delete dead letters (by id or by filter), edit-and-requeue a dead task, run now or delete a waiting task, close a
destination's circuit or reset its rate, and run, pause or resume a schedule. One place, so every face checks the
same things and leaves the same trail:

- an unknown queue, task, dead letter or schedule is `NotFound` (the CLI exits 1 with one line, the API answers
  404) and nothing is changed: a typo never prints "paused";
- work per call is bounded: a filtered requeue or delete handles one window of SCAN_WINDOW dead letters
  (selection.py) and says where to go on from;
- every change is an `operator.action` event with its actor and source, one per task touched (core/audit.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gopherq.core import codec
from gopherq.core.audit import Actor, record
from gopherq.core.broker import Broker
from gopherq.core.errors import ConfigError, NotFound, TaskRejected
from gopherq.core.events import EventBus
from gopherq.core.inspect.actions import Outcome
from gopherq.core.inspect.editing import edited_envelope, stored_task
from gopherq.core.inspect.explain import locate
from gopherq.core.inspect.selection import DeadFilter

if TYPE_CHECKING:
    from gopherq.core.inspect.inspector import Inspector


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a filtered bulk action did in its window: `matched` dead letters, `done` of them requeued or deleted,
    `scanned` looked at, and the cursor of the next window (None: the last one was done)."""

    action: str
    matched: int
    done: int
    scanned: int
    next_cursor: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Operator:
    """The changes one actor makes through one inspection layer; `bus` receives the audit events (and the
    `task.requeued` / `task.cancelled` events the same changes always emit)."""

    def __init__(self, inspector: Inspector, actor: Actor, bus: EventBus | None = None) -> None:
        self.inspector = inspector
        self.actor = actor
        self.bus = bus

    async def check_queue(self, queue: str) -> None:
        """NotFound unless the queue is known: it has anything in Redis, or is queue.name, or a schedule's."""
        self.inspector.keys(queue)  # a malformed name is a ConfigError first
        if queue not in await self.inspector.queue_names():
            raise NotFound(f"no queue {queue!r}: nothing of it is in Redis (`gopherq queues` lists the known ones)")

    async def pause(self, queue: str) -> None:
        await self.check_queue(queue)
        await self.inspector.pause(queue)
        record(self.bus, self.actor, "pause", queue)

    async def resume(self, queue: str) -> None:
        await self.check_queue(queue)
        await self.inspector.resume(queue)
        record(self.bus, self.actor, "resume", queue)

    async def cancel(self, queue: str, task_id: str) -> str:
        """Cancel a task (see Broker.cancel for the outcomes); NotFound when nothing is known of it, so no
        cancel request is left behind for an id that was mistyped."""
        await self.check_queue(queue)
        where = await locate(self.inspector, queue, task_id)
        if where.state == "unknown" and where.result is None:
            raise NotFound(f"no task {task_id!r} in queue {queue!r} (unknown, or its result expired)")
        outcome = await Broker(self.inspector.redis, queue).cancel(task_id, self.inspector.settings.queue.result_ttl)
        if outcome == "cancelled" and self.bus is not None:
            self.bus.emit("task.cancelled", queue=queue, task_id=task_id, data={"running": False})
        if outcome != "finished":
            record(self.bus, self.actor, "cancel", queue, [task_id], outcome=outcome)
        return outcome

    async def requeue(
        self, queue: str, entry_ids: list[str] | None, progress: Callable[[int], Any] | None = None
    ) -> int:
        """Requeue dead letters (all when None); returns how many went back (see DeadLetters.requeue)."""
        moved: list[str | None] = []
        letters = self.inspector.dead_letters(queue, self.bus)
        count = await letters.requeue(entry_ids, progress=progress, moved_tasks=moved)
        record(self.bus, self.actor, "requeue", queue, moved)
        return count

    async def delete(self, queue: str, entry_ids: list[str] | None) -> int:
        """Delete dead letters (all when None: a purge); returns how many there were."""
        letters = self.inspector.dead_letters(queue)
        if entry_ids is None:
            count = await letters.purge()
            record(self.bus, self.actor, "purge", queue, count=count)
            return count
        tasks = await self._task_ids(queue, entry_ids)
        count = await letters.delete(entry_ids)
        record(self.bus, self.actor, "delete", queue, tasks)
        return count

    async def _task_ids(self, queue: str, entry_ids: list[str]) -> list[str | None]:
        """The task ids of the entries that exist (for the audit trail), read before they are deleted."""
        if not entry_ids:
            return []
        raw = await self.inspector.redis.hmget(self.inspector.keys(queue).dead, entry_ids)
        out: list[str | None] = []
        for item in raw:
            if item is not None:
                entry = codec.loads(item)
                out.append(entry.get("task_id") if isinstance(entry, dict) else None)
        return out

    async def bulk(self, queue: str, action: str, where: DeadFilter, cursor: float | None = None) -> BulkOutcome:
        """Requeue or delete (`action`) the dead letters matching `where` in one window from `cursor`."""
        if action not in ("requeue", "delete"):
            raise ValueError(f"unknown bulk action {action!r}")
        chosen = await self.inspector.select_dead(queue, where, cursor)
        done = 0
        if chosen.ids:
            done = await (self.requeue(queue, chosen.ids) if action == "requeue" else self.delete(queue, chosen.ids))
        return BulkOutcome(action, len(chosen.ids), done, chosen.scanned, chosen.next_cursor)

    async def edit_requeue(self, queue: str, entry_id: str, edited: Any, submit: Any) -> str:
        """Enqueue an edited copy of a dead task as a new task; the dead letter is kept as it is. `edited` is the
        operator's edit of the envelope offered by `editing.editable` (masked): the values left as shown are put
        back from the stored task. `submit` (the client's: it knows the executors) validates the envelope as any
        producer's and enqueues it, returning the new id."""
        if not isinstance(edited, dict):
            raise TaskRejected("schema_invalid", "the edited task must be a JSON object")
        task = await stored_task(self.inspector, queue, entry_id)
        envelope = edited_envelope(task, edited, self.inspector.masker)
        new_id = str(await submit(envelope))
        record(self.bus, self.actor, "edit_requeue", queue, [task.get("id") or entry_id], new_task=new_id)
        record(self.bus, self.actor, "edit_requeue", queue, [new_id], edited_from=entry_id)
        return new_id

    async def run_now(self, queue: str, task_id: str) -> Outcome:
        """Move a waiting task to the head of its ready list ('not_waiting': it runs, ended or never was)."""
        return await self._task_action("run_now", queue, task_id)

    async def delete_task(self, queue: str, task_id: str) -> Outcome:
        """Remove a waiting task, recorded as cancelled (actions.py)."""
        return await self._task_action("delete_task", queue, task_id)

    async def _task_action(self, action: str, queue: str, task_id: str) -> Outcome:
        await self.check_queue(queue)
        actions = self.inspector.task_actions(queue)
        outcome = await (actions.run_now if action == "run_now" else actions.delete)(task_id)
        if outcome == "done":
            record(self.bus, self.actor, action, queue, [task_id])
        return outcome

    async def close_circuit(self, key: str, queue: str | None = None) -> list[str]:
        """Close flow key `key`'s circuit on `queue` (or every queue that knows it); the queues it was closed on."""
        queues = await self.inspector.close_circuit(key, queue)
        for name in queues:
            record(self.bus, self.actor, "close_circuit", name, key=key)
        return queues

    async def reset_rate(self, key: str, queue: str | None = None) -> list[str]:
        """Put flow key `key` back at its full rate on `queue` (or every queue that knows it); those queues."""
        queues = await self.inspector.reset_rate(key, queue)
        for name in queues:
            record(self.bus, self.actor, "reset_rate", name, key=key)
        return queues

    async def run_schedule(self, name: str) -> str | None:
        """Enqueue schedule `name`'s task once, now: its id (the event is in the new task's timeline), or None
        when its unique task is still queued or running (nothing recorded: nothing changed)."""
        queue = self._schedule_queue(name)
        task_id = await self.inspector.run_schedule_now(name)
        if task_id is not None:
            record(self.bus, self.actor, "schedule_run", queue, [task_id], schedule=name)
        return task_id

    async def pause_schedule(self, name: str, paused: bool = True) -> None:
        """Pause (or resume) schedule `name` on every worker."""
        queue = self._schedule_queue(name)
        await self.inspector.pause_schedule(name, paused)
        record(self.bus, self.actor, "schedule_pause" if paused else "schedule_resume", queue, schedule=name)

    def _schedule_queue(self, name: str) -> str:
        """The queue schedule `name` enqueues into; NotFound when no schedule has that name."""
        try:
            schedule = self.inspector.schedule(name)
        except ConfigError as exc:
            raise NotFound(str(exc)) from None
        return schedule.queue or self.inspector.settings.queue.name
