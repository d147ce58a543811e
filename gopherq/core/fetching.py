"""Fetching: claiming batches of tasks and deciding, before anything runs, which of them may run now.

`Fetcher.run` claims up to the worker's free capacity in one round trip (or blocks on the ready list when it is
empty). Each claimed task is decoded and checked (poison, then core.admission's rules, then an `eta` not reached,
then flow control); what fails a check becomes a decision (outcomes.py) for the settler, and what passes is handed
to the worker's `launch`. A task that already lost its worker `isolate_from` times runs alone, so a task that crashes
workers becomes poison without dragging its neighbours along.

With `worker.prefetch` set, the fetcher claims up to that many tasks beyond its free slots: they wait, admitted, in
`holdings.staged` and start the moment a runner finishes, so the next batch's claim (and the last batch's settle)
travel while the current batch runs instead of while the worker waits. At most `concurrency` tasks run at once;
staged ones are held like running ones (leases renewed, cancellable), go back to the queue when the worker goes
quiet or the queue is paused (a worker with staged tasks sends no claim, so it asks), and never start past their
deadline (see `Worker.launch`). It is off by default: a staged task has been claimed, so what arrives after it
(a higher priority, a flow's join at its level's head) waits behind it, another worker cannot take it, and a flow's
fail_fast or a cancel reaches it only as a cancel request, as for a running task, rather than by taking it off the
queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gopherq.core.admission import admit
from gopherq.core.connection import blocking_wait
from gopherq.core.errors import TaskRejected
from gopherq.core.executor import ExecutorEntry
from gopherq.core.outcomes import Decision, OutcomePolicy
from gopherq.core.priorities import LevelOrder
from gopherq.core.resilience import RETRYABLE, Backoff, with_retries
from gopherq.core.shared import Shared
from gopherq.core.task import Task, decode_task

log = logging.getLogger("gopherq.core.worker")  # the worker's log lines, under the name operators filter on

#: Seconds between two claim attempts of a worker whose queue is paused.
PAUSE_POLL = 0.5

#: A claimed task ready to run: its attempt token, the task, and the executor that runs it.
Ready = tuple[str, Task, ExecutorEntry]


class Fetcher:
    """The claim side of one worker. `decide` and `flush` are the settler's; `launch` starts a task's runner."""

    def __init__(
        self,
        shared: Shared,
        policy: OutcomePolicy,
        decide: Callable[[Decision], None],
        flush: Callable[[], Awaitable[None]],
        launch: Callable[[str, Task, ExecutorEntry], asyncio.Task[None] | None],
        quiet: asyncio.Event,
    ) -> None:
        self.worker_id, self.settings, self.broker, self.bus = (
            shared.worker_id,
            shared.settings,
            shared.broker,
            shared.bus,
        )
        self.plugins, self.flow, self.holdings, self.outage = (
            shared.plugins,
            shared.flow,
            shared.holdings,
            shared.outage,
        )
        self.policy, self.decide, self.flush, self.launch, self.quiet = policy, decide, flush, launch, quiet
        cfg = self.settings.worker
        self.concurrency = cfg.concurrency
        #: How many claimed tasks may wait for a slot (see the module docstring).
        self.ahead = cfg.prefetch
        self.lease_ms = int(cfg.lease_timeout * 1000)
        self.levels = LevelOrder(cfg.priority_mode, cfg.priority_weights)
        # A task recovered this often may be what crashes the worker: it runs alone (see _run_suspect).
        self.isolate_from = max(1, min(2, cfg.max_recoveries))
        self.suspect: Ready | None = None
        #: True while the queue is paused (logged once when it starts and once when it ends).
        self.was_paused = False

    async def run(self) -> None:
        """Claim and start tasks until the worker is quiet; then put back what was claimed and not started."""
        cfg = self.settings.worker
        backoff = Backoff("fetch", outage=self.outage)
        wait = blocking_wait(self.settings)
        limit = self.concurrency + self.ahead
        # With tasks staged, the next claim waits until it can be a full one: no round trip per finished task.
        low_water = min(cfg.batch_size, self.ahead)
        starter = asyncio.create_task(self._starter(), name="gopherq-start") if self.ahead else None
        try:
            await self._fetch(cfg.batch_size, limit, low_water, backoff, wait)
        finally:
            if starter is not None:
                starter.cancel()
        # Quiet: what this worker claimed but did not start goes back to the queue for the others.
        self.release_unstarted()
        await with_retries("release staged", self.broker.release_staged, outage=self.outage, attempts=5)

    async def _fetch(self, batch_size: int, limit: int, low_water: int, backoff: Backoff, wait: float) -> None:
        """The claim loop, until the worker is quiet: claim while fewer than `limit` tasks are running or staged."""
        runners, staged = self.holdings.runners, self.holdings.staged
        slot_free = self.holdings.slot_free
        while not self.quiet.is_set():
            if self.suspect is not None:
                await self._run_suspect()
                continue
            room = limit - len(runners) - len(staged)
            if room <= 0 or (staged and room < low_water):
                slot_free.clear()
                if not staged:
                    await self._slot_free()
                    continue
                # Tasks wait staged, and no claim goes out (the one that would say the queue is paused): ask
                # every PAUSE_POLL seconds, so that a pause stops them starting as it stops the claims.
                try:
                    await asyncio.wait_for(self._slot_free(), PAUSE_POLL)
                except asyncio.TimeoutError:
                    try:
                        if staged and await self.broker.paused():
                            await self._paused()
                    except RETRYABLE as exc:
                        await backoff.wait(exc)
                continue
            try:
                self.holdings.claims += 1
                batch = await self.broker.claim(min(room, batch_size), self.lease_ms, self.levels.next())
                if batch is None:
                    await self._paused()
                    continue
                if self.was_paused:
                    self.was_paused = False
                    log.info("queue %s resumed: worker %s fetches again", self.broker.keys.queue, self.worker_id)
                if not batch:
                    # A timed-out blocking fetch is not an error: go round and claim again.
                    await self.broker.wait_for_task(wait)
                    backoff.reset()
                    continue
                backoff.reset()
            except RETRYABLE as exc:
                await backoff.wait(exc)
                continue
            await self._start_batch(batch)

    async def _slot_free(self) -> None:
        """Wait for a runner to free a slot, saying so meanwhile (`Holdings.waiting_for_slot`)."""
        holdings = self.holdings
        holdings.waiting_for_slot = True
        try:
            await holdings.slot_free.wait()
        finally:
            holdings.waiting_for_slot = False

    async def _starter(self) -> None:
        """Start staged tasks as runners finish: woken once per burst of finished runners (the event their done
        callbacks set), not once per task, and never behind a claim in flight."""
        slot_free = self.holdings.slot_free
        while True:
            slot_free.clear()
            await slot_free.wait()
            if self.holdings.staged:
                self.start_staged()

    async def _paused(self) -> None:
        """The queue is paused: put back what was claimed and not started (a paused queue starts nothing new,
        `worker.prefetch` or not), and ask again in PAUSE_POLL seconds (or stop waiting when told to stop)."""
        if not self.was_paused:
            self.was_paused = True
            queue = self.broker.keys.queue
            log.info("queue %s is paused: worker %s claims nothing until it is resumed", queue, self.worker_id)
        if self.holdings.staged or self.suspect is not None:
            self.release_unstarted()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.quiet.wait(), PAUSE_POLL)

    async def _run_suspect(self) -> None:
        """Run a task that lost its worker `isolate_from` times or more alone: nothing else running, nothing
        else claimed. If it is what kills the worker, only its own recovery count grows, and the tasks that
        happened to be claimed with it are not dragged towards poison."""
        holdings = self.holdings
        while holdings.runners or holdings.staged:  # (the staged start as slots free: the suspect goes after them)
            holdings.slot_free.clear()
            await holdings.slot_free.wait()
        if self.quiet.is_set() or self.suspect is None:
            return
        await with_retries("settle before an isolated task", self.flush, outage=self.outage, attempts=5)
        if self.quiet.is_set() or self.suspect is None:  # quiet during the settle: it went back (release_unstarted)
            return
        token, task, entry = self.suspect
        self.suspect = None
        log.warning("task %s lost its worker %d times: running it alone", task.id, task.recoveries)
        runner = self.launch(token, task, entry)
        if runner is not None:  # (None: its deadline passed while it waited for the others)
            await asyncio.wait({runner})

    def release_unstarted(self) -> None:
        """Put back the staged tasks and the one waiting to run alone, if any (the worker is going quiet, or the
        queue is paused), unchanged, at the head of their ready lists."""
        unstarted = [*self.holdings.staged, *([self.suspect] if self.suspect is not None else [])]
        self.holdings.staged.clear()
        self.suspect = None
        for token, task, _ in unstarted:
            self.flow.released(token)
            self.decide(self.policy.release(token, task))

    def start_staged(self) -> None:
        """Start staged tasks while slots are free (`launch` ends one cancelled or past its deadline since its claim
        without running it); none starts once the worker is quiet."""
        staged, runners = self.holdings.staged, self.holdings.runners
        if self.quiet.is_set():
            return
        while staged and len(runners) < self.concurrency:
            self.launch(*staged.popleft())

    async def _start_batch(self, batch: list[tuple[str, bytes]]) -> None:
        max_bytes = self.settings.worker.max_payload_bytes
        held = self.holdings.tasks
        decide = self.decide
        adopt: dict[str, bytes] = {}
        ready: list[Ready] = []
        now = time.time()
        self.holdings.batches.append((int(batch[0][0]), now))  # tokens of a batch are consecutive (claim.lua)
        cancels = self.broker.cancel_requests
        for token, raw in batch:
            held[token] = None
            try:
                try:
                    task = decode_task(raw, max_bytes)
                except TaskRejected as exc:
                    decide(self.policy.dead_raw(token, raw, exc, now))
                    continue
                held[token] = task
                if cancels and task.id in cancels:
                    decide(self.policy.cancelled(token, task, None, now))
                    continue
                if task.id_assigned:
                    adopt[token] = task.encode()
                entry = self._admit(token, task, raw, now)
            except Exception:
                self.abandon(token, "preparing")
                continue
            if entry is not None:
                ready.append((token, task, entry))
        if adopt:
            await with_retries("adopt", lambda: self.broker.adopt(adopt), outage=self.outage, attempts=5)
        ready = await self._flow_gate(ready)
        staged, runners, concurrency = self.holdings.staged, self.holdings.runners, self.concurrency
        ahead = self.ahead  # (0: nothing is staged, and nothing would start it: every task starts now, as before)
        for token, task, entry in ready:
            if task.recoveries < self.isolate_from:
                if ahead and (staged or len(runners) >= concurrency):
                    staged.append((token, task, entry))  # in claim order, after those staged before
                else:
                    self.launch(token, task, entry)
            elif self.suspect is None:
                self.suspect = (token, task, entry)
            else:  # one suspect at a time: the others go back for another worker (or a later turn)
                self.flow.released(token)
                decide(self.policy.release(token, task))

    async def _flow_gate(self, ready: list[Ready]) -> list[Ready]:
        """Flow control (core/flow.py): tasks over their flow limits are deferred, without an attempt. When Redis
        cannot be asked, the batch goes back to the queue unchanged (released) rather than run unchecked."""
        try:
            run, defer = await self.flow.admit(ready, int(time.time() * 1000) + self.lease_ms)
        except RETRYABLE as exc:
            log.warning("flow control check failed (%s): %d tasks go back to the queue", exc, len(ready))
            for token, task, _entry in ready:
                self.decide(self.policy.release(token, task))
            return []
        for token, task, due, key, why in defer:
            until = due / 1000
            data = {"flow_key": key, "until": until, "why": why}
            held = {"reason": why, "key": key, "until": until}
            self.decide(self.policy.defer(token, task, due, "task.throttled", data, held))
        return run

    def _admit(self, token: str, task: Task, raw: bytes, now: float) -> ExecutorEntry | None:
        """Checks before running: poison, then what every entry point checks (core.admission: deadline, horizon,
        known type, valid payload), then an `eta` not reached. Returns the executor when the task may run."""
        max_recoveries = self.settings.worker.max_recoveries
        if task.recoveries > max_recoveries:
            message = f"task lost its worker {task.recoveries} times (max_recoveries={max_recoveries})"
            self.decide(self.policy.refused(token, task, "poison", message, now, raw))
            return None
        try:
            entry = admit(task, self.plugins, now, self.settings.queue.max_horizon)
        except TaskRejected as exc:
            self.decide(self.policy.refused(token, task, exc.reason, exc.message, now, raw))
            return None
        if task.eta is not None and task.eta > now:
            # Pushed raw before its time: park it in the delayed set; this is not an attempt.
            self.decide(self.policy.defer(token, task, int(task.eta * 1000)))
            return None
        self.bus.emit("task.dequeued", task_id=task.id, task_type=task.type, attempt=task.attempt, trace=task.trace)
        return entry

    def abandon(self, token: str, doing: str) -> None:
        """An unexpected error in the worker's own code while handling one task: stop renewing its lease and let
        the reaper recover it, exactly like a crash (a task that keeps doing this becomes poison)."""
        task = self.holdings.tasks.pop(token, None)
        self.flow.forget(token)
        log.exception(
            "task %s: internal error while %s it; it will be recovered when its lease expires",
            task.id if task else f"(token {token})",
            doing,
        )
