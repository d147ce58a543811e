"""The Inspector's operator pages and actions: destinations (flow keys), schedules, the Redis server, and acting on
one task (run now, delete, cancel). Every face (CLI, API, dashboard) reads through these, none reads Redis on its
own; the faces change things through the Operator (operations.py), which calls the actions here, checks the names
and records each change with its actor.
"""

from __future__ import annotations

from typing import Any

from gopherq.core.errors import ConfigError
from gopherq.core.flow import FlowGate
from gopherq.core.flow_stats import HourStats, last_hour
from gopherq.core.health import server_facts
from gopherq.core.inspect.actions import Outcome, TaskActions
from gopherq.core.redis_client import RedisClient
from gopherq.core.schedules import Schedule, run_now, set_paused
from gopherq.core.settings import Settings

#: Most flow keys per queue the destinations page reads (the most recently seen first).
DESTINATIONS_PER_QUEUE = 50


class OperationsReader:
    """The Inspector's operator methods (a mixin; needs `redis`, `settings` and `queue_names`)."""

    redis: RedisClient
    settings: Settings

    async def queue_names(self) -> list[str]:
        raise NotImplementedError

    # -- destinations ----------------------------------------------------------------------------------------

    async def destinations(self, per_queue: int = DESTINATIONS_PER_QUEUE) -> list[dict[str, Any]]:
        """Every flow key (e.g. a host) seen on any queue, with how its attempts ended over the last hour (`attempts`,
        `labels`: counts per label, `success`: the share that were 'ok', `p95`: seconds, at most) and its state in
        each queue (circuit, failures, rate factor, running slots), the keys with an open circuit first. At most
        `per_queue` keys of each queue, the most recently seen."""
        merged: dict[str, dict[str, Any]] = {}
        for queue in await self.queue_names():
            states = await FlowGate(self.redis, queue).states(per_queue)
            stats = await last_hour(self.redis, queue, [state["key"] for state in states])
            for state, hour in zip(states, stats, strict=True):
                row = merged.setdefault(state["key"], {"key": state["key"], "queues": [], "labels": {}, "buckets": {}})
                row["queues"].append({"queue": queue, **{k: v for k, v in state.items() if k != "key"}})
                for label, count in hour.labels.items():
                    row["labels"][label] = row["labels"].get(label, 0) + count
                for index, count in hour.buckets.items():
                    row["buckets"][index] = row["buckets"].get(index, 0) + count
        out = []
        for row in merged.values():
            hour = HourStats(row.pop("labels"), row.pop("buckets"))
            attempts = hour.attempts
            out.append(
                {
                    **row,
                    "attempts": attempts,
                    "labels": dict(sorted(hour.labels.items())),
                    "success": hour.share("ok"),
                    "p95": hour.quantile(0.95),
                    "circuit": worst(q["circuit"] for q in row["queues"]),
                    "running": sum(q["running"] for q in row["queues"]),
                }
            )
        out.sort(key=lambda row: (row["circuit"] == "closed", row["key"]))
        return out

    async def open_circuits(self, queue: str, limit: int = 200) -> list[dict[str, Any]]:
        """The flow keys of `queue` whose circuit is open or half-open (for the overview)."""
        return [state for state in await FlowGate(self.redis, queue).states(limit) if state["circuit"] != "closed"]

    async def close_circuit(self, key: str, queue: str | None = None) -> list[str]:
        """Close the circuit of flow key `key` now, on `queue` or on every queue that knows it; returns those."""
        return [name for name in await self._queues_of(queue) if await FlowGate(self.redis, name).close_circuit(key)]

    async def reset_rate(self, key: str, queue: str | None = None) -> list[str]:
        """Put flow key `key` back at its full configured rate, on `queue` or on every queue that knows it."""
        return [name for name in await self._queues_of(queue) if await FlowGate(self.redis, name).reset_rate(key)]

    async def _queues_of(self, queue: str | None) -> list[str]:
        return [queue] if queue is not None else await self.queue_names()

    # -- schedules -------------------------------------------------------------------------------------------

    def schedule(self, name: str) -> Schedule:
        """The configured schedule called `name`; ConfigError when there is none."""
        for schedule in self.settings.schedules:
            if schedule.name == name:
                return schedule
        raise ConfigError(f"no schedule named {name!r} (see [[schedules]] in the configuration)")

    async def pause_schedule(self, name: str, paused: bool = True) -> None:
        """Pause (or resume) a schedule on every worker: while paused, its slots pass without a task."""
        await set_paused(self.schedule(name), self.settings.queue.name, self.redis, paused)

    async def run_schedule_now(self, name: str) -> str | None:
        """Enqueue a schedule's task once, now (its slots are not touched); the new task's id, or None when its
        unique task is still queued or running."""
        return await run_now(self.schedule(name), self.settings.queue.name, self.redis)

    # -- one task --------------------------------------------------------------------------------------------

    def task_actions(self, queue: str) -> TaskActions:
        return TaskActions(self.redis, queue, self.settings.queue.result_ttl)

    async def run_now(self, queue: str, task_id: str) -> Outcome:
        """Move a waiting (delayed or ready) task to the head of its priority level's ready list (its fair key's list
        when it has one)."""
        return await self.task_actions(queue).run_now(task_id)

    async def delete_task(self, queue: str, task_id: str) -> Outcome:
        """Remove a waiting task, recorded as cancelled ("deleted by an operator")."""
        return await self.task_actions(queue).delete(task_id)

    async def cancel_task(self, queue: str, task_id: str) -> str:
        """Cancel a task wherever it is: 'finished', 'cancelled' (it was delayed) or 'requested' (a worker running
        it, or about to claim it, stops it)."""
        return await self.task_actions(queue).cancel(task_id)

    # -- the server ------------------------------------------------------------------------------------------

    async def server(self) -> dict[str, Any]:
        """The Redis server: version, role, memory and maxmemory policy, clients, persistence, and the durability
        warnings `gopherq check` gives (core/health.py)."""
        return await server_facts(self.redis)


def worst(circuits: Any) -> str:
    """The most alarming of circuit states: open, then half-open, then closed."""
    seen = set(circuits)
    return next((state for state in ("open", "half-open") if state in seen), "closed")
