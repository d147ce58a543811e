"""Settling: the worker's outcomes, recorded in Redis in batches, then announced.

Each finished (or refused, released, cancelled...) task becomes a `Decision`; `_settle_loop` writes every decision
made since its last round trip with one settle script call, then counts and announces each one the script accepted.
Follow-up tasks an executor asks for when a task ends (e.g. callbacks) are pushed before the settle that ends it,
so a crash between the two repeats them and never loses them. A mixin of `Worker`, like `Upkeep`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gopherq.core.broker import Broker
from gopherq.core.events import EventBus
from gopherq.core.flow import WorkerFlow
from gopherq.core.outcomes import Decision
from gopherq.core.plugins import PluginManager
from gopherq.core.resilience import RETRYABLE, Backoff, Outage
from gopherq.core.settings import Settings
from gopherq.core.task import Task

log = logging.getLogger("gopherq.core.worker")  # the worker's log lines, under the name operators filter on


class Settling:
    """The settle side of the worker; needs the attributes declared below."""

    id: str
    settings: Settings
    broker: Broker
    bus: EventBus
    plugins: PluginManager
    flow: WorkerFlow
    outage: Outage
    held: dict[str, Task | None]
    stats: dict[str, int]
    _decisions: list[Decision]
    _followups: list[bytes]
    _flush_lock: asyncio.Lock
    _settle_wakeup: asyncio.Event
    schedule_names: frozenset[str]
    schedule_successes: dict[str, float]

    def _decide(self, decision: Decision) -> None:
        self._decisions.append(decision)
        task = decision.task
        if task is not None and decision.settlement.kind in ("ack", "dead"):
            entry = self.plugins.executors.get(task.type)
            if entry is not None and entry.followups is not None:
                followups = entry.followups(task, decision.settlement.result, decision.settlement.kind == "ack")
                hook = self.plugins.before_enqueue
                if followups and hook is not None:
                    followups = [
                        hook.envelope(envelope, task.queue or self.broker.keys.queue, "callback", parent=task)
                        for envelope in followups
                    ]
                self._followups += followups
        self._settle_wakeup.set()

    async def _settle_loop(self) -> None:
        backoff = Backoff("settle", outage=self.outage)
        while True:
            await self._settle_wakeup.wait()
            self._settle_wakeup.clear()
            try:
                await self._flush()
                backoff.reset()
            except RETRYABLE as exc:
                self._settle_wakeup.set()
                await backoff.wait(exc)

    async def _flush(self) -> None:
        """Settle every pending decision in one round trip; on failure they stay pending. When it returns, every
        decision made before the call is settled (a flush in progress elsewhere is waited for)."""
        async with self._flush_lock:
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        while self._decisions:
            decisions, self._decisions = self._decisions, []
            if self._followups:  # before the settle that ends their tasks: a crash between repeats, never loses
                followups, self._followups = self._followups, []
                try:
                    await self.broker.push(followups)
                except BaseException:
                    self._decisions[:0] = decisions
                    self._followups[:0] = followups
                    raise
            try:
                accepted = await self.broker.settle(
                    [d.settlement for d in decisions],
                    self.settings.queue.result_ttl,
                    self.settings.queue.dead_letter_max,
                )
            except BaseException:
                self._decisions[:0] = decisions
                raise
            for decision, ok in zip(decisions, accepted, strict=False):
                self.held.pop(decision.settlement.token, None)
                self._announce(decision, ok)
        await self.flow.flush()

    def _announce(self, decision: Decision, ok: bool) -> None:
        task = decision.task
        task_id = task.id if task else decision.settlement.task_id
        if not ok:
            self.stats["refused"] += 1
            log.warning(
                "task %s: late %s refused: its lease expired and it was handed to another worker",
                task_id,
                decision.settlement.kind,
            )
            return
        kind = decision.settlement.kind
        if kind == "ack":
            self.stats["succeeded"] += 1
            if self.schedule_names:  # a schedule's task is named "<schedule>@<slot>" (see Schedule.task_id)
                name, at, slot = task_id.rpartition("@")
                if at and name in self.schedule_names and slot.isdigit():
                    self.schedule_successes[name] = time.time()
        elif kind == "retry":
            self.stats["retried"] += 1
        elif kind == "defer":
            self.stats["deferred"] += 1
            if decision.event:
                log.debug("task %s deferred by flow control until %s", task_id, (decision.data or {}).get("until"))
        elif kind == "cancel":
            self.stats["cancelled"] += 1
        elif kind == "dead":
            self.stats["dead"] += 1
            reason = (decision.data or {}).get("reason")
            log.warning(
                "task %s dead-lettered (%s): %s", task_id, reason, decision.error.message if decision.error else ""
            )
        if not decision.event:
            return
        self.bus.emit(
            decision.event,
            task_id=task_id,
            task_type=task.type if task else None,
            attempt=task.attempt if task else None,
            duration=decision.duration,
            error=decision.error.to_dict() if decision.error else None,
            data=decision.data or {},
            trace=task.trace if task else None,
        )
