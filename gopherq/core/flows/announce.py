"""Telling the world that flows changed state: the `flow.*` events, once each, and the follow-up of a failed
fail_fast flow (its ready and running members are asked to cancel)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from gopherq.core.flows.store import FlowStore

log = logging.getLogger(__name__)


class FlowAnnouncer:
    """Announces the state changes of one queue's flows; `counts` holds the flows seen finish, by final state,
    since the process started (read by the worker's metrics)."""

    def __init__(self, store: FlowStore, bus: Any, ttl: int) -> None:
        self.store, self.bus, self.ttl = store, bus, ttl
        self.counts: Counter[str] = Counter()

    async def changed(self, flow_ids: list[str]) -> None:
        """Emit the events of flows whose state changed since last announced (whoever claims a change emits it)."""
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
                await self.store.cancel(flow_id, halt_only=True)
