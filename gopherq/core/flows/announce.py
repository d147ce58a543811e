"""Telling the world that flows changed state: the `flow.*` events, once each, and the follow-up of a failed
fail_fast flow (its ready and running members are asked to cancel).

A worker announces beside its settle loop (`later`): a Redis error there (a restart, a failover, a refused write)
is retried with a short, bounded backoff, so a transient fault delays an announcement by milliseconds instead of
leaving it to the reconciler's next look (`worker.flow_reconcile_interval`, 30 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from gopherq.core.flows.store import FlowStore
from gopherq.core.resilience import RETRYABLE, Backoff, Outage

log = logging.getLogger(__name__)

#: The retries of a failed announcement: the first after 5 to 10 ms, then doubling up to half a second apart.
RETRY_LOW, RETRY_HIGH = 0.005, 0.5

#: How long (s) announcements are retried before they are left to the reconciler, which looks at every open flow
#: that often anyway (the default `worker.flow_reconcile_interval`).
RETRY_FOR = 30.0


class FlowAnnouncer:
    """Announces the state changes of one queue's flows; `counts` holds the flows seen finish, by final state,
    since the process started (read by the worker's metrics)."""

    def __init__(self, store: FlowStore, bus: Any, ttl: int, outage: Outage | None = None) -> None:
        self.store, self.bus, self.ttl = store, bus, ttl
        self.outage = outage
        self.counts: Counter[str] = Counter()
        self._halts: set[str] = set()  # failed fail_fast flows whose members are still to be asked to cancel
        self._pending: set[str] = set()  # flows to announce (`later`), not yet announced
        self._announcing: asyncio.Task[None] | None = None

    async def changed(self, flow_ids: list[str]) -> None:
        """Emit the events of flows whose state changed since last announced (whoever claims a change emits it).
        A failed fail_fast flow's cancel requests are kept until sent: a call that raised sends them next time."""
        for flow_id, state, halted in await self.store.announce(sorted(set(flow_ids)), self.ttl):
            if state != "running":
                self.counts[state] += 1
            data: dict[str, Any] = {"flow": flow_id}
            if state == "failed":
                data["halted"] = halted
            log.info("flow %s %s", flow_id, state)
            if state == "running":  # its first outcome, or a failed flow revived by a dead-letter requeue
                self.bus.emit("flow.started", data=data)
            elif state == "succeeded":
                self.bus.emit("flow.succeeded", data=data)
            elif state == "failed":
                self.bus.emit("flow.failed", data=data)
            else:
                self.bus.emit("flow.cancelled", data=data)
            if state == "failed" and halted:
                self._halts.add(flow_id)
        while self._halts:
            flow_id = min(self._halts)
            await self.store.cancel(flow_id, halt_only=True)
            self._halts.discard(flow_id)

    def later(self, flow_ids: Iterable[str]) -> None:
        """Announce these flows' state changes beside the caller (it never waits for this): one round trip for
        every flow handed over meanwhile, retried on a Redis error (see the module docstring)."""
        self._pending.update(flow_ids)
        if self._pending and (self._announcing is None or self._announcing.done()):
            self._announcing = asyncio.create_task(self._announce_pending(), name="gopherq-flow-announce")

    async def _announce_pending(self) -> None:
        backoff = Backoff("flow announcements", low=RETRY_LOW, high=RETRY_HIGH, outage=self.outage)
        failing_since: float | None = None
        while self._pending:
            flow_ids, self._pending = sorted(self._pending), set()
            try:
                await self.changed(flow_ids)
            except RETRYABLE as exc:  # Redis refused or did not answer: the same call succeeds later
                self._pending.update(flow_ids)
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= RETRY_FOR:
                    self._give_up(exc)
                    return
                await backoff.wait(exc)
            except Exception as exc:  # a bug: the settles are recorded, the reconciler announces
                self._pending.update(flow_ids)
                self._give_up(exc)
                return
            else:
                if failing_since is not None:
                    backoff.reset()
                    failing_since = None

    def _give_up(self, exc: BaseException) -> None:
        flow_ids, self._pending = sorted(self._pending), set()
        log.warning("flows %s: their state changes will be announced later: %s", ", ".join(flow_ids[:5]), exc)
