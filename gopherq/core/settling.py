"""Settling: the worker's outcomes, recorded in Redis in batches, then announced.

Each finished (or refused, released, cancelled...) task becomes a `Decision` (made in outcomes.py) handed to
`Settler.decide`; `Settler.run` writes every decision made since its last round trip with one settle script call,
then counts and announces each one the script accepted. When the queue's event log is on (the `stream` sink), the
outcome events go with their decisions into that same call, masked here (core/eventlog.py says why), and the event
bus hands them to the other sinks only: the log holds exactly the outcomes the script recorded. Follow-up tasks an
executor asks for when a task ends (e.g. callbacks) are pushed before the settle that ends it, so a crash between the
two repeats them and never loses them. The claim that the finished tasks make due goes to Redis before their settle
(`Holdings.waiting_for_slot` says why), unless their settle may make a task claimable (`Settler._settle_first`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gopherq.core import codec
from gopherq.core.broker import Timing
from gopherq.core.eventlog import ShortEvents, duration_json, entry_line, plain_line
from gopherq.core.outcomes import Decision
from gopherq.core.resilience import RETRYABLE, Backoff
from gopherq.core.shared import Shared
from gopherq.core.tracecontext import trace_id

log = logging.getLogger("gopherq.core.worker")  # the worker's log lines, under the name operators filter on

#: Most loop turns a settle waits for the claim its runners' freed slots make due (`Holdings.waiting_for_slot`):
#: their done callbacks run in the turn after they ended and wake the fetcher for the next, so two, as a rule.
CLAIM_FIRST_TURNS = 3

#: The settlement kinds whose one outcome event rides in the item (settle_call.py), so may take its short form.
SHORT_KINDS = frozenset({"ack", "cancel"})

#: An announced decision's event fields as the event log has them: (timestamp, error, data, facts), masked.
Logged = tuple[float, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]


def envelope_ids(envelopes: list[bytes]) -> list[str] | None:
    """The ids of follow-up envelopes (GoPherQ made them: each is a task with an id), for their whereabouts; None
    when one has none (then none is recorded: a worker that claims them records them)."""
    ids = []
    for envelope in envelopes:
        task_id = codec.loads(envelope).get("id")
        if not isinstance(task_id, str):
            return None
        ids.append(task_id)
    return ids


def timing(decisions: list[Decision]) -> Timing:
    """The batch's attempt durations and times in queue (ms) for the charts: a decision with a duration ended an
    attempt, which started `duration` before now; its time in queue runs from when its task became ready."""
    now = time.time()
    duration_ms = timed = wait_ms = waited = 0
    for decision in decisions:
        if decision.duration is None:
            continue
        duration_ms += int(decision.duration * 1000)
        timed += 1
        since = decision.task.ready_since() if decision.task is not None else None
        if since is not None:
            wait_ms += int(max(0.0, now - decision.duration - since) * 1000)
            waited += 1
    return duration_ms, timed, wait_ms, waited


class Settler:
    """The settle side of one worker: collects decisions, records them in batches, counts and announces them."""

    def __init__(self, shared: Shared) -> None:
        self.queue = shared.settings.queue
        self.broker, self.bus, self.flow, self.plugins = shared.broker, shared.bus, shared.flow, shared.plugins
        self.held, self.stats, self.outage = shared.holdings.tasks, shared.stats, shared.outage
        self.holdings = shared.holdings
        self.schedule_runs = shared.schedule_runs
        writer = self.bus.log_writer
        #: The queue's event log, when a sink writes it: the settle writes the outcome events it accepts.
        self.log = writer.event_log if writer is not None else None
        self._log_accepts = writer.accepts if writer is not None else None
        self._logs: dict[str, bool] = {}  # event name -> whether the log takes it
        self.worker_id = shared.worker_id
        self.dags = shared.dags
        self._decisions: list[Decision] = []
        #: Whether a decision waiting to be settled may make a task claimable: a flow member's outcome (its flow's
        #: join, or a fail_fast flow's halt of its other members) or a counted fair key's freed place (the key's
        #: next task). Its settle then goes before a claim that is due, so that the claim sees what it changed.
        #: (Flow-controlled attempts free their slots before a claimed batch is admitted: `WorkerFlow.admit`.)
        self._settle_first = False
        self._followups: list[bytes] = []  # envelopes tasks asked for when they ended (e.g. callbacks)
        self._flush_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()

    def decide(self, decision: Decision) -> None:
        """Take a decision about a held task; the settle loop records it with the next round trip."""
        self._decisions.append(decision)
        settlement = decision.settlement
        if settlement.dag is not None or settlement.token in self.broker.fair_counted:
            self._settle_first = True
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
        decision made before the call is settled (a flush in progress elsewhere is waited for). A claim that is
        due goes to Redis first, unless a decision may make a task claimable (`_settle_first`)."""
        async with self._flush_lock:
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        while self._decisions:
            holdings, claims = self.holdings, self.holdings.claims
            for _ in range(0 if self._settle_first else CLAIM_FIRST_TURNS):
                if not holdings.waiting_for_slot or holdings.claims != claims:  # (see waiting_for_slot)
                    break
                await asyncio.sleep(0)  # the claim the finished tasks make due goes to Redis first
            decisions, self._decisions = self._decisions, []
            self._settle_first = False
            if self._followups:  # before the settle that ends their tasks: a crash between repeats, never loses
                followups, self._followups = self._followups, []
                try:
                    await self.broker.push(followups, envelope_ids(followups))
                except BaseException:
                    self._decisions[:0] = decisions
                    self._followups[:0] = followups
                    self._settle_first = True  # (retried first: it may hold what _settle_first is for)
                    raise
            for decision in decisions:  # a task with a fair key frees its place among its key's running tasks
                if decision.task is not None and decision.task.fair_key is not None:
                    decision.settlement.fair_key = decision.task.fair_key
            moved: list[str] = []  # flows whose state the settle changed: announced below
            logged: list[Logged | None] | None = None
            shorts = b""
            if self.log is not None:
                logged, shorts = self._log_batch(decisions)
            try:
                accepted = await self.broker.settle(
                    [d.settlement for d in decisions],
                    self.queue.result_ttl,
                    self.queue.dead_letter_max,
                    self.log,
                    timing(decisions),
                    moved,
                    shorts,
                )
            except BaseException:
                self._decisions[:0] = decisions
                self._settle_first = True
                raise
            for index, (decision, ok) in enumerate(zip(decisions, accepted, strict=False)):
                self.held.pop(decision.settlement.token, None)
                self._announce(decision, ok, None if logged is None else logged[index])
            if moved:  # only a settle that changed a flow's state costs an announcing round trip, beside this loop
                self.dags.later(moved)  # (retried on a Redis error: core/flows/announce.py)
        await self.flow.flush()

    def _logs_event(self, name: str) -> bool:
        wanted = self._logs.get(name)
        if wanted is None:
            wanted = self._logs[name] = self._log_accepts is not None and self._log_accepts(name)
        return wanted

    def _log_batch(self, decisions: list[Decision]) -> tuple[list[Logged | None], bytes]:
        """Put each decision's events, as the log takes them, on its settlement for the settle script to write;
        returns their masked fields for `_announce` (None: no event), and the forms of the batch's short events.
        The usual outcome, one with no error, data or trace (nothing to mask), is handled in this loop, with no
        call of its own (it runs once per task): a success's or a cancellation's in its short form (core/eventlog.py
        `ShortEvents`: its duration, after a byte in a batch of several forms, completed by the script into
        entry_line's very bytes) when it takes one, else as a whole line from the batch's head (`plain_line`);
        the others through `_log_events`."""
        stamp = time.time()
        short = ShortEvents(stamp, self.worker_id, self.broker.keys.queue)
        forms, logs = short.forms, self._logs
        plain: Logged = (stamp, None, None, None)  # (`_announce` reads an empty `data` as none)
        logged: list[Logged | None] = []
        for decision in decisions:
            task, name, settlement = decision.task, decision.event, decision.settlement
            settlement.short_event = None  # (a flush that failed may have made one, with that batch's forms)
            wanted = logs.get(name)
            if wanted is None and name is not None:
                wanted = self._logs_event(name)
            if (
                task is None
                or not wanted
                or decision.error is not None
                or decision.failed
                or decision.data
                or task.trace is not None
            ):
                logged.append(self._log_events(decision, stamp))
                continue
            assert name is not None  # (`wanted`)
            logged.append(plain)
            task_id = task.id
            if settlement.kind in SHORT_KINDS:
                form = forms.get((name, task.type, task.attempt)) or short.form(name, task.type, task.attempt)
                if len(task_id) * 4 <= form[1] and '"' not in task_id and "\\" not in task_id:
                    settlement.short_event = form[0] + duration_json(decision.duration)
                    settlement.events = None
                    continue
            settlement.events = [plain_line(short.head(name), task_id, task.type, task.attempt, decision.duration)]
        return logged, short.parts()

    def _log_events(self, decision: Decision, stamp: float) -> Logged | None:
        """Put the events of a decision with something to mask (or none logged) on its settlement for the settle
        script to write (its `task.failed`, then its outcome, as the log takes them); returns their masked fields
        for `_announce` (None: no event). The plain outcomes are `_log_batch`'s."""
        task = decision.task
        if not decision.event and not decision.failed:
            decision.settlement.events = None
            return None
        masker = self.bus.masker
        error = decision.error.to_dict() if decision.error else None
        data, facts = decision.data, decision.facts
        if masker is not None:
            error = None if error is None else masker.value(error)
            data = None if data is None else masker.value(data)
            facts = None if facts is None else masker.value(facts)
        lines: list[bytes] = []
        task_id, task_type, attempt = decision.settlement.task_id, None, None
        trace = None
        if task is not None:
            task_id, task_type, attempt, trace = task.id, task.type, task.attempt, trace_id(task.trace)
        who = (self.worker_id, self.broker.keys.queue, task_id, task_type, attempt)
        if decision.failed and self._logs_event("task.failed"):
            lines.append(entry_line("task.failed", stamp, *who, None, error, facts, trace))
        if decision.event and self._logs_event(decision.event):
            lines.append(entry_line(decision.event, stamp, *who, decision.duration, error, data, trace))
        decision.settlement.events = lines or None
        return stamp, error, data, facts

    def _announce(self, decision: Decision, ok: bool, logged: Logged | None = None) -> None:
        """Count and log a settled decision, and hand its events to the sinks (to all but the event log's writer
        when `logged`: the settle wrote them, masked, with that timestamp)."""
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
        stamp: float | None = None
        if logged is not None:
            stamp, error, data, facts = logged
        else:  # masked by the bus
            error, data, facts = decision.error.to_dict() if decision.error else None, decision.data, decision.facts
        if decision.failed:
            self.bus.emit(
                "task.failed",
                task_id=task_id,
                task_type=task.type if task else None,
                attempt=task.attempt if task else None,
                error=error,
                data=facts,
                trace=task.trace if task else None,
                timestamp=stamp,
                logged=logged is not None,
            )
        if not decision.event:
            return
        self.bus.emit(
            decision.event,
            task_id=task_id,
            task_type=task.type if task else None,
            attempt=task.attempt if task else None,
            duration=decision.duration,
            error=error,
            data=data or {},
            trace=task.trace if task else None,
            timestamp=stamp,
            logged=logged is not None,
        )
