"""Flow control shared by every worker: per-key rate (GCRA), global concurrency, circuit breaker, adaptive rate.

The core does not know what a flow key is: an executor may name one per task (the http executor uses the host, or
the task's `flow_key`) with the limits that apply to it, through two optional methods:

    flow(task) -> tuple[str, FlowLimits] | None        # after validation; None = not flow-controlled
    flow_signal(failure: TaskFailure | None) -> str    # how an attempt ended: 'ok', 'error', 'slow',
                                                       # 'slow_error' (both) or 'neutral'
    flow_label(failure: TaskFailure) -> str            # how a failed attempt is counted on the destinations
                                                       # page (e.g. '429', '5xx'; see core/flow_stats.py)

The state of a flow key lives in Redis under the queue's hash tag (`gopherq:{Q}:flow:<key>` and its `:slots`), so
all workers share it. `FlowGate.admit` checks a claimed batch in one script call, and only when the batch holds
flow-controlled tasks: a task over its limit is deferred (no attempt consumed) to when its rate slot opens,
which it reserves (a slow-down cancels older reservations), or for `wait` seconds when a concurrency slot or the
half-open probe is busy, or until the circuit's cool-down ends. `FlowGate.done` frees the concurrency slots at
settle time (or before the worker's next batch is admitted, if that comes first) and feeds the breaker (N
consecutive errors within a window open it; after the cool-down one probe decides) and the adaptive rate (a 'slow'
signal multiplies the rate by `slow_down`, at most once a second; it then regains `ramp_up` of the configured rate
per second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gopherq.core.flow_stats import BUCKET as STATS_BUCKET
from gopherq.core.flow_stats import bucket_of, label_of
from gopherq.core.keys import FLOW_STATS_TTL, QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts

if TYPE_CHECKING:
    from gopherq.core.errors import TaskFailure
    from gopherq.core.events import EventBus
    from gopherq.core.task import Task

log = logging.getLogger(__name__)

SIGNALS = frozenset({"ok", "error", "slow", "slow_error", "neutral"})


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The limits of one flow key; every field is optional (0 / None = that limit is off)."""

    rate: float | None = None
    burst: int = 1
    concurrency: int | None = None
    circuit_failures: int = 0
    circuit_window: float = 30.0
    circuit_cooldown: float = 30.0
    wait: float = 0.25
    slow_down: float = 0.5
    ramp_up: float = 0.05
    min_rate_factor: float = 0.05


@dataclass(slots=True)
class Verdict:
    """What `admit` decided for one task: run now (due == 0) or wait until `due` (Unix ms), holding the rate
    reservation made at `reservation` (Unix ms; 0 = none), which the task carries in its envelope (`flow_slot`)."""

    due: int
    reservation: int
    #: What held it back (when due > 0): "rate", "concurrency" or "circuit" (open, or its half-open probe busy).
    why: str = ""


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """A change of a flow key's shared state: circuit_opened / circuit_half_open / circuit_closed,
    rate_lowered (value: new fraction of the configured rate) / rate_restored."""

    key: str
    name: str
    value: str


class FlowSource(Protocol):
    """What flow control needs of a registered executor (`executor.ExecutorEntry`): its optional `flow` and
    `flow_signal` (see the module docstring). Declared here so that flow control does not import the executor
    module, which imports `FlowLimits` from here."""

    @property
    def flow(self) -> Callable[[Task], tuple[str, FlowLimits] | None] | None: ...

    @property
    def flow_signal(self) -> Callable[[TaskFailure | None], str] | None: ...

    @property
    def flow_label(self) -> Callable[[TaskFailure], str] | None: ...


#: How one flow-controlled attempt ended: flow key, limits, token, signal, label (None: not counted in the
#: statistics, e.g. a task put back at shutdown) and how long it took (seconds, None when unknown).
Ended = tuple[str, FlowLimits, str, str, str | None, float | None]

#: A ready task's executor entry, kept as it is through `WorkerFlow.admit`.
E = TypeVar("E", bound=FlowSource)


class FlowGate:
    """The Redis side of flow control for one queue."""

    def __init__(self, redis: RedisClient, queue: str) -> None:
        self.redis = redis
        self.keys = QueueKeys(queue)
        self._admit = scripts(redis)["flow_admit"]
        self._done = scripts(redis)["flow_done"]

    async def admit(
        self, items: list[tuple[str, FlowLimits, str, int | None]], lease_deadline_ms: int
    ) -> tuple[list[Verdict], list[FlowEvent]]:
        """Check (flow key, limits, token, reservation ms) items in one round trip."""
        index: dict[str, int] = {}
        keys = [self.keys.flows]
        head: list[Any] = []
        tail: list[Any] = []
        for key, limits, token, reserved in items:
            i = index.get(key)
            if i is None:
                i = index[key] = len(index) + 1
                keys += [self.keys.flow(key), self.keys.flow_slots(key)]
                head += [
                    key,
                    limits.rate or 0,
                    limits.burst,
                    limits.concurrency or 0,
                    limits.circuit_failures,
                    int(limits.wait * 1000),
                    limits.ramp_up,
                ]
            tail += [i, token, "" if reserved is None else reserved]
        dues, events = await self._admit(
            keys=keys, args=[int(time.time() * 1000), lease_deadline_ms, len(index), *head, *tail]
        )
        verdicts = [Verdict(int(dues[j]), int(dues[j + 1]), _word(dues[j + 2])) for j in range(0, len(dues), 3)]
        return verdicts, _events(events)

    async def done(self, items: list[Ended]) -> list[FlowEvent]:
        """Record how (flow key, limits, token, signal, label, seconds) items ended, in one round trip; each is
        counted in its key's statistics too (core/flow_stats.py)."""
        index: dict[str, int] = {}
        keys: list[str] = []
        bucket = int(time.time()) // STATS_BUCKET * STATS_BUCKET
        head: list[Any] = []
        tail: list[Any] = []
        for key, limits, token, signal, label, seconds in items:
            i = index.get(key)
            if i is None:
                i = index[key] = len(index) + 1
                keys += [self.keys.flow(key), self.keys.flow_slots(key), self.keys.flow_stats(key, bucket)]
                head += [
                    key,
                    limits.circuit_failures,
                    int(limits.circuit_window * 1000),
                    int(limits.circuit_cooldown * 1000),
                    limits.slow_down,
                    limits.min_rate_factor,
                ]
            tail += [i, token, signal, "" if label is None else label_of(label), bucket_of(seconds)]
        now_ms = int(time.time() * 1000)
        events = await self._done(keys=keys, args=[now_ms, len(index), FLOW_STATS_TTL, *head, *tail])
        return _events(events)

    async def renew(self, slots: dict[str, list[str]], lease_deadline_ms: int) -> None:
        """Extend the concurrency slots (flow key -> tokens) of long-running tasks, with the worker's heartbeat."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, tokens in slots.items():
                pipe.zadd(self.keys.flow_slots(key), {token: lease_deadline_ms for token in tokens}, xx=True)
            await pipe.execute()

    async def close_circuit(self, key: str) -> bool:
        """An operator's "close circuit now": forget the key's failures, cool-down and probe, so its tasks run
        at once (the breaker opens again after as many failures as before). False when the key is unknown."""
        if await self.redis.zscore(self.keys.flows, key) is None:
            return False
        await self.redis.hdel(self.keys.flow(key), "open_until", "fails", "fails_since", "probe", "probe_until")
        return True

    async def reset_rate(self, key: str) -> bool:
        """An operator's "reset rate": back to the full configured rate at once, instead of ramping up from
        where 429s and 503s left it. False when the key is unknown."""
        if await self.redis.zscore(self.keys.flows, key) is None:
            return False
        await self.redis.hdel(self.keys.flow(key), "factor", "factor_at", "slowed_at")
        return True

    async def states(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Every flow key seen on this queue, newest first, with its shared state (for `gopherq hosts`)."""
        names = await self.redis.zrevrange(self.keys.flows, 0, limit - 1, withscores=True)
        now_ms = time.time() * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in names:
                key = name.decode()
                pipe.hgetall(self.keys.flow(key))
                pipe.zcount(self.keys.flow_slots(key), now_ms, "+inf")
            replies = await pipe.execute()
        out = []
        for n, (name, seen) in enumerate(names):
            raw, running = replies[2 * n], replies[2 * n + 1]
            state = {k.decode(): v.decode() for k, v in raw.items()}
            open_until = float(state.get("open_until", 0))
            circuit = "closed"
            if open_until:
                circuit = "open" if open_until > now_ms else "half-open"
            out.append(
                {
                    "key": name.decode(),
                    "circuit": circuit,
                    "open_until": open_until / 1000 if open_until else None,
                    "failures": int(state.get("fails", 0)),
                    "rate_factor": float(state.get("factor", 1)),
                    "running": int(running),
                    "last_seen": seen / 1000,
                }
            )
        return out


def _word(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _events(flat: list[Any]) -> list[FlowEvent]:
    text = [item.decode() if isinstance(item, bytes) else str(item) for item in flat]
    return [FlowEvent(text[j], text[j + 1], text[j + 2]) for j in range(0, len(text), 3)]


class WorkerFlow:
    """One worker's side of flow control: gates claimed batches, remembers which running tasks hold flow state,
    and reports how they ended at settle time. Redis is asked once per claimed batch and once per settle, and only
    when they hold flow-controlled tasks."""

    def __init__(self, gate: FlowGate, bus: EventBus) -> None:
        self.gate = gate
        self.bus = bus
        #: token -> (flow key, limits) of every admitted, running flow-controlled task
        self.running: dict[str, tuple[str, FlowLimits]] = {}
        self._ended: list[Ended] = []
        self._flushing = asyncio.Lock()  # one send at a time: an admission waits for the one under way (see admit)

    async def admit(
        self, ready: list[tuple[str, Task, E]], lease_deadline_ms: int
    ) -> tuple[list[tuple[str, Task, E]], list[tuple[str, Task, int, str, str]]]:
        """Split a batch into the tasks that run now and (token, task, due ms, flow key, what held it back: "rate",
        "concurrency" or "circuit") to defer, after freeing the slots of the attempts that ended meanwhile."""
        gated: list[tuple[int, str, FlowLimits]] = []
        for n, (_token, task, entry) in enumerate(ready):
            if entry.flow is not None:
                found = entry.flow(task)
                if found is not None:
                    gated.append((n, *found))
        if not gated:
            return ready, []
        if self._ended or self._flushing.locked():
            # Attempts that ended free their slots first (they go with the next settle otherwise, or are on their
            # way): a worker's own finished tasks must not hold back the batch it claimed for the slots they left.
            await self.flush()
        verdicts, events = await self.gate.admit(
            [(key, limits, ready[n][0], ready[n][1].flow_slot) for n, key, limits in gated], lease_deadline_ms
        )
        self.announce(events)
        held_back: dict[int, tuple[int, str, str]] = {}
        for (n, key, limits), verdict in zip(gated, verdicts, strict=True):
            token, task, _entry = ready[n]
            if verdict.due:
                task.flow_slot = verdict.reservation or None
                held_back[n] = (verdict.due, key, verdict.why or "rate")
            else:
                task.flow_slot = None
                self.running[token] = (key, limits)
        run = [item for n, item in enumerate(ready) if n not in held_back]
        defer = [(ready[n][0], ready[n][1], due, key, why) for n, (due, key, why) in held_back.items()]
        return run, defer

    def ended(self, token: str, entry: FlowSource, failure: TaskFailure | None, seconds: float | None = None) -> None:
        """Note how a flow-controlled attempt ended (no-op for other tasks) and how long it took; sent with the
        next settle."""
        held = self.running.pop(token, None)
        if held is not None:
            signal = (
                entry.flow_signal(failure) if entry.flow_signal is not None else ("ok" if failure is None else "error")
            )
            label = "ok"  # a success is 'ok' for every executor; a failure is named by the executor, if it can
            if failure is not None:
                label = entry.flow_label(failure) if entry.flow_label is not None else "failed"
            self._ended.append((held[0], held[1], token, signal if signal in SIGNALS else "neutral", label, seconds))

    def released(self, token: str) -> None:
        """A task put back unfinished (shutdown): free its slot without judging the host."""
        held = self.running.pop(token, None)
        if held is not None:
            self._ended.append((held[0], held[1], token, "neutral", None, None))

    def forget(self, token: str) -> None:
        """A task abandoned to the reaper: its slot expires with its lease."""
        self.running.pop(token, None)

    async def flush(self) -> None:
        """Send what ended since the last flush (one round trip), after any send under way; on failure it stays
        pending."""
        if not (self._ended or self._flushing.locked()):
            return
        async with self._flushing:
            if not self._ended:
                return
            ended, self._ended = self._ended, []
            try:
                events = await self.gate.done(ended)
            except BaseException:
                self._ended[:0] = ended
                raise
        self.announce(events)

    async def renew(self, lease_deadline_ms: int) -> None:
        """Extend the concurrency slots of the running tasks with the heartbeat (a slot outlives its task's worker
        by one lease at most)."""
        if self.running:
            slots: dict[str, list[str]] = {}
            for token, (key, limits) in self.running.items():
                if limits.concurrency:
                    slots.setdefault(key, []).append(token)
            if slots:
                await self.gate.renew(slots, lease_deadline_ms)

    def announce(self, events: list[FlowEvent]) -> None:
        """Flow state changes become `host.<name>` events and log lines."""
        for event in events:
            data: dict[str, Any] = {"key": event.key}
            if event.name == "circuit_opened":
                data["until"] = int(event.value) / 1000
                log.warning("circuit of %s opened until %s", event.key, time.ctime(data["until"]))
            elif event.name == "circuit_half_open":
                data["probe"] = event.value
            elif event.name == "rate_lowered":
                data["rate_factor"] = float(event.value)
                log.warning("rate of %s lowered to %.0f%% of its limit", event.key, data["rate_factor"] * 100)
            elif event.name == "rate_restored":
                data["rate_factor"] = 1.0
            else:
                log.info("circuit of %s closed", event.key)
            self.bus.emit(f"host.{event.name}", data=data)
