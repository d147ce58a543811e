"""The flow reconciler: a periodic check, by one worker of the queue at a time, that no flow can hang silently.

A tick comes every `worker.flow_reconcile_interval` seconds and looks only at flows older than that (a younger one
is still moving; reading a large one costs Redis time in proportion to its size). It takes the oldest open flows, up
to a budget of members, going on from where the last tick stopped, and for each one: reads the result records of
its members the flow still has as ready (a member cancelled while waiting for a retry settles through another
script and its flow never hears of it: the record tells), then lets dag_reconcile.lua record those outcomes,
recompute every counter from the members' states, repair what differs and judge every waiting join again. What
it repaired is logged, counted (`repairs`) and announced (`flow.repaired`); state changes are announced as the
settle's would be.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gopherq.core import codec
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.store import FlowStore

log = logging.getLogger(__name__)

#: A final task status and its member outcome letter.
_OUTCOMES = {"succeeded": "s", "dead": "f", "failed": "f", "cancelled": "c"}

#: Members a tick looks at, at most (a flow larger than this is still reconciled whole, alone in its tick).
MEMBER_BUDGET = 20_000


class Reconciler:
    """Reconciles one queue's open flows; `repairs` and `checked` count since the process started."""

    def __init__(self, store: FlowStore, announcer: FlowAnnouncer, interval: float) -> None:
        self.store, self.announcer, self.interval = store, announcer, interval
        self.repairs = 0
        self.checked = 0
        self._after = 0.0  # creation time (ms) of the last flow checked: the next tick goes on from there
        self._next = 0.0  # monotonic time of the next tick

    async def maybe_tick(self, worker_id: str) -> int:
        """A tick when one is due (called often, e.g. with the reaper); returns the mismatches repaired."""
        if time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.interval
        return await self.tick(int(self.interval * 1000), worker_id, int((time.time() - self.interval) * 1000))

    async def tick(self, lock_ms: int, worker_id: str, older_than_ms: int | None = None) -> int:
        """One round, when this worker gets the queue's reconciler lock, over flows created before `older_than_ms`
        (all when None); returns the mismatches repaired."""
        redis, keys = self.store.redis, self.store.keys
        if not await redis.set(keys.dags_lock, worker_id, nx=True, px=lock_ms):
            return 0
        newest = "+inf" if older_than_ms is None else older_than_ms
        entries = await redis.zrangebyscore(keys.dags, f"({self._after}", newest, start=0, num=200, withscores=True)
        if not entries:
            self._after = 0.0
            return 0
        budget, repaired, touched = MEMBER_BUDGET, 0, []
        for raw_id, score in entries:
            flow_id = raw_id.decode()
            self._after = score
            found = await self.flow(flow_id)
            if found is None:
                await redis.zrem(keys.dags, flow_id)  # expired or deleted: nothing left to reconcile
                continue
            size, mismatches = found
            repaired += mismatches
            touched.append(flow_id)
            budget -= size
            if budget <= 0:
                break
        await self.announcer.changed(touched)
        return repaired

    async def flow(self, flow_id: str) -> tuple[int, int] | None:
        """Reconcile one flow; (its size, mismatches repaired), None when it is gone."""
        view = await self.store.read(flow_id)
        if view is None:
            return None
        if view.building:  # its creation stopped before all its roots were written (the producer died): no join
            # can ever run, so the flow ends here, cancelled and said so (a creation sent again finds it cancelled)
            log.warning(
                "flow %s: its creation never finished (%d roots never written): cancelled", flow_id, view.building
            )
            await self.store.cancel(flow_id)
            self.announcer.bus.emit("flow.repaired", data={"flow": flow_id, "unfinished_creation": view.building})
            return view.size, 0
        ready = [member for member in view.members if member.state == "ready"]
        outcomes: dict[str, str] = {}
        if ready:
            records = await self.store.redis.mget([self.store.keys.result(member.task_id) for member in ready])
            for member, raw in zip(ready, records, strict=True):
                status = _status(raw)
                if status in _OUTCOMES:
                    outcomes[member.node] = _OUTCOMES[status]
        reply = await self.store.reconcile(flow_id, outcomes)
        if reply is None:
            return None
        mismatches, late = reply[0], reply[2]
        self.checked += 1
        if mismatches:
            self.repairs += mismatches
            log.warning(
                "flow %s: reconciliation repaired %d counts that differed from its members' states (%d outcomes "
                "recorded late)",
                flow_id,
                mismatches,
                late,
            )
            self.announcer.bus.emit(
                "flow.repaired", data={"flow": flow_id, "mismatches": mismatches, "late_outcomes": late}
            )
            await self.store.redis.hincrby(self.store.keys.stats, "flow_repairs", mismatches)
        return view.size, mismatches


def _status(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        record: Any = codec.loads(raw)
    except codec.JSONDecodeError:
        return None
    return record.get("status") if isinstance(record, dict) else None
