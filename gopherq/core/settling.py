"""Settling: the worker's outcomes, recorded in Redis in batches, then announced.

Each finished (or refused, released, cancelled...) task becomes a `Decision` (made in outcomes.py) handed to
`Settler.decide`; `Settler.run` writes every decision made since its last round trip with one settle script call,
then counts and announces each one the script accepted. Follow-up tasks an executor asks for when a task ends (e.g.
callbacks) are pushed before the settle that ends it, so a crash between the two repeats them and never loses them.
"""

from __future__ import annotations

import asyncio
import logging

from gopherq.core.outcomes import Decision
from gopherq.core.resilience import RETRYABLE, Backoff
from gopherq.core.shared import Shared

log = logging.getLogger("gopherq.core.worker")  # the worker's log lines, under the name operators filter on


class Settler:
    """The settle side of one worker: collects decisions, records them in batches, counts and announces them."""

    def __init__(self, shared: Shared) -> None:
        self.queue = shared.settings.queue
        self.broker, self.bus, self.flow, self.plugins = shared.broker, shared.bus, shared.flow, shared.plugins
        self.held, self.stats, self.outage = shared.holdings.tasks, shared.stats, shared.outage
        self.schedule_runs = shared.schedule_runs
        self._decisions: list[Decision] = []
        self._followups: list[bytes] = []  # envelopes tasks asked for when they ended (e.g. callbacks)
        self._flush_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()

    def decide(self, decision: Decision) -> None:
        """Take a decision about a held task; the settle loop records it with the next round trip."""
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
        self._wakeup.set()

    async def run(self) -> None:
        """The settle loop: flush whenever decisions wait; a Redis error keeps them pending and backs off."""
        backoff = Backoff("settle", outage=self.outage)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
                backoff.reset()
            except RETRYABLE as exc:
                self._wakeup.set()
                await backoff.wait(exc)

    async def flush(self) -> None:
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
            for decision in decisions:  # a task with a fair key frees its place among its key's running tasks
                if decision.task is not None and decision.task.fair_key is not None:
                    decision.settlement.fair_key = decision.task.fair_key
            try:
                accepted = await self.broker.settle(
                    [d.settlement for d in decisions], self.queue.result_ttl, self.queue.dead_letter_max
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
            if self.schedule_runs.names:
                self.schedule_runs.succeeded(task_id)
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
