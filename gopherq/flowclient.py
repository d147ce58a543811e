"""Flows from a client: create one from its nodes (idempotently by flow id), read it, wait for it, cancel it, list
the queue's flows. `client.flows` on an AsyncClient (blocking on a Client); the builders are in gopherq/canvas.py."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.spec import Node, added_member, plan
from gopherq.core.flows.store import FINAL_STATES, FlowStore, FlowView
from gopherq.core.task import Task, new_task_id

if TYPE_CHECKING:
    from gopherq.client import AsyncClient


class _Silent:
    """The event bus of a client without sinks: events go nowhere."""

    def emit(self, name: str, **fields: Any) -> None:
        return None


class AsyncFlows:
    """The flow operations of one AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    def store(self, queue: str | None = None) -> FlowStore:
        return FlowStore(self.client.connected(), queue or self.client.queue)

    async def create(self, nodes: list[Node], flow_id: str | None = None, queue: str | None = None) -> tuple[str, bool]:
        """Create a flow of `nodes` (tasks built and validated by this client) on `queue`; returns its id and
        whether it was created now (False: a flow of that id exists, and nothing was done)."""
        await self.client.connect()
        flow_id = flow_id or f"f{new_task_id()}"
        name = queue or self.client.queue
        laid_out = plan(flow_id, name, nodes)
        created = await self.store(name).create(laid_out)
        if created:
            await self.client.registry.note(name)
        return flow_id, created

    async def extend(self, flow_id: str, join: str, children: list[tuple[str, Task]], queue: str | None = None) -> int:
        """Add `children` (node name, task built by this client) to open join `join` of a running flow: each is
        ready at once and one more parent of the join. Returns how many were new (a node already in the flow is
        skipped, so a retry is safe); ResponseError when the join is not open (sealed) or the flow is gone."""
        await self.client.connect()
        name = queue or self.client.queue
        members = [(node, added_member(flow_id, name, join, node, task)) for node, task in children]
        return await self.store(name).extend(flow_id, join, members)

    async def seal(self, flow_id: str, join: str, queue: str | None = None) -> bool:
        """Seal open join `join`: no more children; it runs once its parents are final. False when not open."""
        await self.client.connect()
        return await self.store(queue).seal(flow_id, join)

    async def get(self, flow_id: str, queue: str | None = None, members: bool = True) -> FlowView | None:
        """The flow with each member's state (`members=False`: its summary only), or None (unknown, or expired
        after it finished)."""
        await self.client.connect()
        return await self.store(queue).read(flow_id, members)

    async def cancel(self, flow_id: str, queue: str | None = None) -> str | None:
        """Cancel the flow: its members that have not started never will, its running ones are asked to cancel.
        Returns its state afterwards (a flow that already succeeded stays so), None when there is no such flow."""
        await self.client.connect()
        store = self.store(queue)
        state = await store.cancel(flow_id)
        if state == "cancelled":  # announced here (`flow.cancelled` to this client's sinks, if any), not later
            bus = self.client.bus if self.client.bus is not None else _Silent()
            await FlowAnnouncer(store, bus, self.client.settings.queue.result_ttl).changed([flow_id])
        return state

    async def wait(self, flow_id: str, timeout: float, queue: str | None = None) -> FlowView | None:
        """Poll until the flow is final (succeeded, failed or cancelled) or `timeout` passes; the latest view."""
        await self.client.connect()
        store = self.store(queue)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            view = await store.read(flow_id, members=False)
            if (view is not None and view.state in FINAL_STATES) or time.monotonic() >= deadline:
                return await store.read(flow_id) if view is not None else None
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    async def list(self, queue: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The queue's open flows then its finished ones (newest first, at most `limit` of each), with states."""
        await self.client.connect()
        store = self.store(queue)
        out: list[dict[str, Any]] = []
        for finished in (False, True):
            for flow_id, _when in await store.ids(finished, limit):
                view = await store.read(flow_id, members=False)
                if view is not None:
                    out.append({k: v for k, v in view.to_dict().items() if k != "members"})
        return out
