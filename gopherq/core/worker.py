"""The worker: one asyncio loop that claims tasks in batches, runs them concurrently, and settles them in batches.

Four loops share the work: `_fetch_loop` claims up to the free capacity in one round trip (or blocks on the
ready list when it is empty); each task runs in its own asyncio task under its time limit; `_settle_loop`
records every outcome that accumulated since its last round trip in one script call; `_heartbeat_loop` renews
the leases of everything this worker holds; `_maintenance_loop` promotes due delayed tasks and reaps tasks
whose holder died (those two live in `upkeep.py`). A task that already lost its worker twice runs alone, so a
task that crashes workers becomes poison without dragging its neighbours along. Shutdown stops fetching, waits
for running tasks up to `shutdown_timeout`, and puts back whatever did not finish at the head of the ready list
without counting an attempt. No loop ever exits on a Redis error: it backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError

from gopherq.core.admission import admit
from gopherq.core.broker import Broker, Settlement
from gopherq.core.connection import blocking_wait
from gopherq.core.errors import BrokerUnavailable, TaskFailure, TaskRejected
from gopherq.core.events import EventBus
from gopherq.core.executor import AttemptOutcome, ExecutionContext, ExecutorEntry
from gopherq.core.flow import FlowGate, WorkerFlow
from gopherq.core.health import verify_access
from gopherq.core.masking import Masker
from gopherq.core.outcomes import Decision, OutcomePolicy
from gopherq.core.plugins import PluginManager
from gopherq.core.priorities import LevelOrder
from gopherq.core.resilience import RETRYABLE, TRANSIENT, Backoff, Outage
from gopherq.core.settings import Settings
from gopherq.core.settling import Settling
from gopherq.core.task import ErrorInfo, Task, decode_task, queue_wait
from gopherq.core.upkeep import Upkeep
from gopherq.core.watchdog import Watchdog

log = logging.getLogger(__name__)

__all__ = ["TRANSIENT", "Backoff", "Worker", "make_worker_id"]


#: Seconds between two claim attempts of a worker whose queue is paused.
PAUSE_POLL = 0.5


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker(Upkeep, Settling):
    """Runs tasks from one queue until asked to stop. Build it with settings, loaded plugins and a Redis client."""

    def __init__(self, settings: Settings, plugins: PluginManager, redis: Any, worker_id: str | None = None) -> None:
        self.settings = settings
        self.plugins = plugins
        self.redis = redis
        self.id = worker_id or make_worker_id()
        self.queue = settings.queue.name
        self.broker = Broker(redis, self.queue, self.id)
        self.outage = Outage(f"worker {self.id}")  # one warning per Redis outage, whichever loop sees it first
        self.policy = OutcomePolicy(settings.queue, self.id)
        self.bus = EventBus()
        self.bus.defaults = {"worker": self.id, "queue": self.queue}
        self.bus.masker = Masker.from_settings(settings)
        plugins.attach_sinks(self.bus)
        self.flow = WorkerFlow(FlowGate(redis, self.queue), self.bus)
        cfg = settings.worker
        self.concurrency = cfg.concurrency
        self.lease_ms = int(cfg.lease_timeout * 1000)
        self.executing: set[asyncio.Task[None]] = set()
        self.levels = LevelOrder(cfg.priority_mode, cfg.priority_weights)
        self.cancelling: set[asyncio.Task[None]] = set()  # runners cancelled on request (see upkeep)
        self.scheduler = self._make_scheduler()
        self.watchdog = Watchdog()
        self.held: dict[str, Task | None] = {}  # token -> task, for every claimed, unsettled task
        self._decisions: list[Decision] = []
        self._followups: list[bytes] = []  # envelopes tasks asked for when they ended (e.g. callbacks)
        self._flush_lock = asyncio.Lock()
        # A task recovered this often may be what crashes the worker: it runs alone (see _run_suspect).
        self.isolate_from = max(1, min(2, cfg.max_recoveries))
        self._suspect: tuple[str, Task, ExecutorEntry] | None = None
        self._settle_wakeup = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._quiet = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._signals = 0
        self._was_paused = False
        self.started_at = time.time()
        #: (first token, claim time) of every batch claimed since the oldest held one: when each task was claimed,
        #: without a write per task (read by the heartbeat for the worker's info; see Upkeep.running_tasks).
        self.claimed_batches: list[tuple[int, float]] = []
        outcomes = ("succeeded", "failed", "retried", "deferred", "dead", "refused", "recovered", "cancelled")
        self.stats = dict.fromkeys(outcomes, 0)

    # -- control ---------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM/SIGINT)."""
        self._stop.set()
        self._quiet.set()

    def request_quiet(self) -> None:
        """Stop fetching new tasks; running ones finish (SIGTSTP)."""
        if not self._quiet.is_set():
            log.info("worker %s is quiet: no new tasks will be fetched", self.id)
            self._quiet.set()
            self.bus.emit("worker.quiet")

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()

        def on_stop(signame: str) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second %s: exiting now; the reaper will recover unfinished tasks", signame)
                os._exit(1)
            log.info("%s received: finishing running tasks (up to %ss)", signame, self.settings.worker.shutdown_timeout)
            self.request_stop()

        loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGTSTP, self.request_quiet)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `request_stop`; then shut down gracefully."""
        await self._connect()
        if self._stop.is_set():
            log.info("worker %s stopped before Redis could be reached: it held no tasks", self.id)
            return
        for entry in self.plugins.executors.values():
            await entry.open()
        self.bus.start()
        await self.plugins.call_lifecycle("gopherq_startup", self)
        # Registered before the first fetch, so the reaper can always find this worker's processing list.
        await self._guard("heartbeat", lambda: self.broker.heartbeat([], self.lease_ms, *self.worker_info()))
        await self.registry.note(*self.noted_queues())
        self._check_timings()
        log.info(
            "worker %s started: queue %s, concurrency %d, executors %s",
            self.id,
            self.queue,
            self.concurrency,
            ", ".join(sorted(self.plugins.executors)) or "none",
        )
        self.bus.emit("worker.started", data={"concurrency": self.concurrency})
        self._loops = [
            asyncio.create_task(self._settle_loop(), name="gopherq-settle"),
            asyncio.create_task(self.watchdog.run(), name="gopherq-watchdog"),
            asyncio.create_task(self._heartbeat_loop(), name="gopherq-heartbeat"),
            asyncio.create_task(self._maintenance_loop(), name="gopherq-maintenance"),
            asyncio.create_task(self._cancel_watch_loop(), name="gopherq-cancel-watch"),
        ]
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="gopherq-fetch")
        await self._stop.wait()
        await self._shutdown()

    async def _connect(self) -> None:
        backoff = Backoff("start-up", high=10.0, outage=self.outage)
        while True:
            try:
                await verify_access(self.redis, self.queue)
                break
            except AuthenticationError as exc:
                raise BrokerUnavailable(f"Redis refused the credentials: {exc}") from None
            except NoPermissionError as exc:
                raise BrokerUnavailable(f"the Redis user lacks a permission GoPherQ needs: {exc}") from None
            except RETRYABLE as exc:
                if self._stop.is_set():
                    return
                await backoff.wait(exc)
        backoff.reset()
        await self._check_eviction_policy()

    async def _shutdown(self) -> None:
        self.bus.emit("worker.stopping", data={"running": len(self.executing)})
        fetch_stopped = True
        if self._fetcher is not None:
            self._fetcher.cancel()
            fetch_stopped = await self._stopped_within({self._fetcher}, "the fetch loop")
        self._release_suspect()
        grace = self.settings.worker.shutdown_timeout
        if self.executing:
            log.info("waiting up to %ss for %d running tasks", grace, len(self.executing))
            _done, pending = await asyncio.wait(set(self.executing), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%d tasks outlasted shutdown_timeout; putting them back at the head of the queue", len(pending)
                )
                await asyncio.gather(*pending, return_exceptions=True)
        await self._guard("final settle", self._flush, attempts=20)
        await self._guard("release staged", self.broker.release_staged, attempts=20)
        await self._guard("schedule successes", self._write_schedule_successes, attempts=5)
        for loop_task in self._loops:
            loop_task.cancel()
        await self._stopped_within(set(self._loops), "the background loops")
        # A fetch loop that did not stop may still park a task in this worker's processing list: keep the heartbeat
        # registration then, so the reaper recovers that list once the heartbeat is stale.
        if not self.held and fetch_stopped:
            await self._guard("deregister", self.broker.deregister, attempts=5)
        for entry in self.plugins.executors.values():
            try:
                await entry.close()
            except Exception:
                log.exception("executor %s failed to close", entry.name)
        await self.plugins.call_lifecycle("gopherq_shutdown", self)
        self.bus.emit("worker.stopped", data=dict(self.stats))
        await self.bus.close(timeout=5.0)
        log.info("worker %s stopped: %s", self.id, self.stats)

    async def _guard(
        self, what: str, action: Callable[[], Coroutine[Any, Any, Any]], *, once: bool = False, attempts: int = 0
    ) -> Any:
        """Run a Redis action, retrying failures with backoff (`attempts` times, or until asked to stop)."""
        backoff = Backoff(what, outage=self.outage)
        tries = 0
        while True:
            try:
                result = await action()
                backoff.reset()
                return result
            except RETRYABLE as exc:
                tries += 1
                if once or (attempts and tries >= attempts) or (not attempts and self._stop.is_set()):
                    log.warning("%s failed: %s", what, exc)
                    return None
                await backoff.wait(exc)

    # -- fetching --------------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        cfg = self.settings.worker
        backoff = Backoff("fetch", outage=self.outage)
        wait = blocking_wait(self.settings)
        while not self._quiet.is_set():
            if self._suspect is not None:
                await self._run_suspect()
                continue
            free = self.concurrency - len(self.executing)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                batch = await self.broker.claim(min(free, cfg.batch_size), self.lease_ms, self.levels.next())
                if batch is None:
                    await self._paused()
                    continue
                if self._was_paused:
                    self._was_paused = False
                    log.info("queue %s resumed: worker %s fetches again", self.queue, self.id)
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
        # Quiet: what this worker claimed but did not start goes back to the queue for the others.
        self._release_suspect()
        await self._guard("release staged", self.broker.release_staged, attempts=5)

    async def _paused(self) -> None:
        """The queue is paused: ask again in PAUSE_POLL seconds (or stop waiting when told to stop)."""
        if not self._was_paused:
            self._was_paused = True
            log.info("queue %s is paused: worker %s claims nothing until it is resumed", self.queue, self.id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), PAUSE_POLL)

    async def _run_suspect(self) -> None:
        """Run a task that lost its worker `isolate_from` times or more alone: nothing else running, nothing
        else claimed. If it is what kills the worker, only its own recovery count grows, and the tasks that
        happened to be claimed with it are not dragged towards poison."""
        while self.executing:
            self._slot_free.clear()
            await self._slot_free.wait()
        if self._quiet.is_set() or self._suspect is None:
            return
        await self._guard("settle before an isolated task", self._flush, attempts=5)
        token, task, entry = self._suspect
        self._suspect = None
        log.warning("task %s lost its worker %d times: running it alone", task.id, task.recoveries)
        runner = self._launch(token, task, entry)
        await asyncio.wait({runner})

    def _release_suspect(self) -> None:
        if self._suspect is not None:
            token, task, _ = self._suspect
            self._suspect = None
            self.flow.released(token)
            self._decide(Decision(Settlement("release", token, task.id), "", task))

    async def _start_batch(self, batch: list[tuple[str, bytes]]) -> None:
        max_bytes = self.settings.worker.max_payload_bytes
        adopt: dict[str, bytes] = {}
        ready: list[tuple[str, Task, ExecutorEntry]] = []
        now = time.time()
        self.claimed_batches.append((int(batch[0][0]), now))  # tokens of a batch are consecutive (claim.lua)
        cancels = self.broker.cancel_requests
        for token, raw in batch:
            self.held[token] = None
            try:
                try:
                    task = decode_task(raw, max_bytes)
                except TaskRejected as exc:
                    self._decide(self.policy.dead_raw(token, raw, exc, now))
                    continue
                self.held[token] = task
                if cancels and task.id in cancels:
                    self._decide(self.policy.cancelled(token, task, None, now))
                    continue
                if task.id_assigned:
                    adopt[token] = task.encode()
                entry = self._admit(token, task, raw, now)
            except Exception:
                self._abandon(token, "preparing")
                continue
            if entry is not None:
                ready.append((token, task, entry))
        if adopt:
            await self._guard("adopt", lambda: self.broker.adopt(adopt), attempts=5)
        ready = await self._flow_gate(ready)
        for token, task, entry in ready:
            if task.recoveries < self.isolate_from:
                self._launch(token, task, entry)
            elif self._suspect is None:
                self._suspect = (token, task, entry)
            else:  # one suspect at a time: the others go back for another worker (or a later turn)
                self.flow.released(token)
                self._decide(Decision(Settlement("release", token, task.id), "", task))

    async def _flow_gate(self, ready: list[tuple[str, Task, ExecutorEntry]]) -> list[tuple[str, Task, ExecutorEntry]]:
        """Flow control (core/flow.py): tasks over their flow limits are deferred, without an attempt. When Redis
        cannot be asked, the batch goes back to the queue unchanged (released) rather than run unchecked."""
        try:
            run, defer = await self.flow.admit(ready, int(time.time() * 1000) + self.lease_ms)
        except RETRYABLE as exc:
            log.warning("flow control check failed (%s): %d tasks go back to the queue", exc, len(ready))
            for token, task, _entry in ready:
                self._decide(Decision(Settlement("release", token, task.id), "", task))
            return []
        for token, task, due, key in defer:
            task.ready_at = due / 1000  # ready again when its slot opens: queue latency counts from there
            settlement = Settlement("defer", token, task.id, b"", task.encode(), str(due))
            self._decide(Decision(settlement, "task.throttled", task, data={"flow_key": key, "until": due / 1000}))
        return run

    def _launch(self, token: str, task: Task, entry: ExecutorEntry) -> asyncio.Task[None]:
        limit = task.timeout or self.settings.worker.task_timeout
        if task.deadline is not None:
            limit = max(0.001, min(limit, task.deadline - time.time()))
        runner = asyncio.create_task(self._execute(token, task, entry, limit), name=token)
        self.watchdog.watch(runner, limit)
        self.executing.add(runner)
        runner.add_done_callback(self._finished)
        return runner

    def _abandon(self, token: str, doing: str) -> None:
        """An unexpected error in the worker's own code while handling one task: stop renewing its lease and let
        the reaper recover it, exactly like a crash (a task that keeps doing this becomes poison)."""
        task = self.held.pop(token, None)
        self.flow.forget(token)
        log.exception(
            "task %s: internal error while %s it; it will be recovered when its lease expires",
            task.id if task else f"(token {token})",
            doing,
        )

    def _admit(self, token: str, task: Task, raw: bytes, now: float) -> ExecutorEntry | None:
        """Checks before running: poison, then what every entry point checks (core.admission: deadline, horizon,
        known type, valid payload). Dead-letters what fails one."""
        reason = message = None
        entry = None
        if task.recoveries > self.settings.worker.max_recoveries:
            reason, message = (
                "poison",
                f"task lost its worker {task.recoveries} times (max_recoveries={self.settings.worker.max_recoveries})",
            )
        else:
            try:
                entry = admit(task, self.plugins, now, self.settings.queue.max_horizon)
            except TaskRejected as exc:
                reason, message = exc.reason, exc.message
        if entry is not None:
            if task.eta is not None and task.eta > now:
                # Pushed raw before its time: park it in the delayed set; this is not an attempt.
                due = str(int(task.eta * 1000))
                self._decide(Decision(Settlement("defer", token, task.id, b"", task.encode(), due), "", task))
                return None
            self.bus.emit("task.dequeued", task_id=task.id, task_type=task.type, attempt=task.attempt, trace=task.trace)
            return entry
        assert reason is not None and message is not None
        error = task.last_error if reason in ("poison", "deadline") and task.last_error else None
        info = ErrorInfo(reason, message, {"last_error": error} if error else {})
        self._decide(self.policy.dead(token, task, reason, info, None, now, raw=raw))
        return None

    def _finished(self, runner: asyncio.Task[None]) -> None:
        self.executing.discard(runner)
        self._slot_free.set()

    # -- executing -------------------------------------------------------------------------------------------

    async def _execute(self, token: str, task: Task, entry: ExecutorEntry, limit: float) -> None:
        started = time.time()
        try:
            context = ExecutionContext(
                worker_id=self.id,
                queue=self.queue,
                attempt=task.attempt,
                max_attempts=task.max_attempts or self.settings.queue.max_attempts,
                timeout=limit,
                deadline=task.deadline,
                log=logging.LoggerAdapter(log, {"task_id": task.id}),
            )
            waited = queue_wait(task, started) if self.bus.wants("task.started") else None
            self.bus.emit(
                "task.started",
                task_id=task.id,
                task_type=task.type,
                attempt=task.attempt,
                data=waited,
                trace=task.trace,
            )
            outcome = await self.plugins.run_attempt(entry, task, context)  # wrapped by plugins, if any
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.watchdog.expired(current):
                failure = TaskFailure("timeout", f"attempt exceeded its time limit of {limit:g}s")
                outcome = AttemptOutcome(started, time.time(), failure=failure)
            elif current in self.cancelling:
                self.cancelling.discard(current)  # type: ignore[arg-type]
                self.flow.released(token)
                self._decide(self.policy.cancelled(token, task, started, time.time()))
                return
            elif not self._stop.is_set():
                raise
            else:
                self.flow.released(token)
                self._decide(Decision(Settlement("release", token, task.id), "task.released", task))
                return
        except Exception:
            self._abandon(token, "running")
            return
        try:
            if self.flow.running:
                self.flow.ended(token, entry, outcome.failure)
            self._conclude(token, task, outcome, context.event_data)
        except Exception:
            self._abandon(token, "recording the outcome of")

    def _conclude(self, token: str, task: Task, outcome: AttemptOutcome, facts: dict[str, Any] | None = None) -> None:
        """Record the attempt's outcome; `facts` (the executor's `context.event_data`) go into its events."""
        failure = outcome.failure
        if failure is None:
            decision = self.policy.success(token, task, outcome.result, outcome.started, outcome.finished)
        else:
            error = ErrorInfo(failure.reason, failure.message, failure.details)
            # DEBUG: at the default level the logging sink's `task.failed` line is the one line of a failed attempt.
            log.debug("task %s attempt %d failed: %s: %s", task.id, task.attempt, failure.reason, failure.message)
            self.bus.emit(
                "task.failed",
                task_id=task.id,
                task_type=task.type,
                attempt=task.attempt,
                error=error.to_dict(),
                data=facts,
                trace=task.trace,
            )
            decision = self.policy.failure(
                token, task, error, failure.retryable, failure.delay, outcome.started, outcome.finished
            )
        if facts:
            decision.data = {**facts, **decision.data} if decision.data else facts
        self._decide(decision)
