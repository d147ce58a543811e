"""The worker: one object composed of parts that each have one job, run as a few asyncio loops.

- `Fetcher` (fetching.py) claims batches and decides what may run now; what may is launched here, each task in its
  own asyncio task under its time limit (`Watchdog`), and its attempt's outcome becomes a decision (outcomes.py);
- `Settler` (settling.py) records every decision made since its last round trip with one settle script call, then
  counts and announces each one;
- `Upkeep` (upkeep.py) renews the leases of everything this worker holds (the heartbeat), promotes due delayed
  tasks, ticks schedules, reaps tasks whose holder died and cancels attempts on request;
- `Holdings` (holdings.py) is the one state they share: the tasks this worker holds and their runners; each part
  is built from one `Shared` (shared.py): the id, settings, Redis side, event bus, flow control, plugins and counters.

Shutdown stops fetching, waits for running tasks up to `shutdown_timeout`, and puts back whatever did not finish at
the head of the ready list without counting an attempt. No loop ever exits on a Redis error: it backs off and tries
again. The path of one task through these parts is drawn in docs/plugins.md ("How it fits together").
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from typing import Any

from redis.exceptions import AuthenticationError, NoPermissionError

from gopherq.core.broker import Broker
from gopherq.core.cancellation import awaiting_at, cancel_and_wait
from gopherq.core.errors import BrokerUnavailable, TaskFailure
from gopherq.core.events import EventBus
from gopherq.core.executor import AttemptOutcome, ExecutionContext, ExecutorEntry, wrapper_failed
from gopherq.core.fetching import PAUSE_POLL, Fetcher
from gopherq.core.flow import FlowGate, WorkerFlow
from gopherq.core.flows.announce import FlowAnnouncer
from gopherq.core.flows.inputs import has_inputs, read_inputs
from gopherq.core.flows.store import FlowStore
from gopherq.core.health import verify_access
from gopherq.core.holdings import Holdings
from gopherq.core.masking import Masker
from gopherq.core.outcomes import OutcomePolicy
from gopherq.core.plugins import PluginManager
from gopherq.core.redis_client import RedisClient
from gopherq.core.resilience import RETRYABLE, TRANSIENT, Backoff, Outage, with_retries
from gopherq.core.schedules import ScheduleRuns
from gopherq.core.settings import Settings
from gopherq.core.settling import Settler
from gopherq.core.shared import Shared
from gopherq.core.task import Task, queue_wait
from gopherq.core.upkeep import Upkeep
from gopherq.core.watchdog import Watchdog

log = logging.getLogger(__name__)

__all__ = ["PAUSE_POLL", "TRANSIENT", "Backoff", "Worker", "make_worker_id"]


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Runs tasks from one queue until asked to stop. Build it with settings, loaded plugins and a Redis client."""

    def __init__(
        self, settings: Settings, plugins: PluginManager, redis: RedisClient, worker_id: str | None = None
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.redis = redis
        self.id = worker_id or make_worker_id()
        self.queue = settings.queue.name
        self.concurrency = settings.worker.concurrency
        self.broker = Broker(redis, self.queue, self.id)
        self.outage = Outage(f"worker {self.id}")  # one warning per Redis outage, whichever loop sees it first
        describers = {name: entry.describe_call for name, entry in plugins.executors.items() if entry.describes_calls}
        self.policy = OutcomePolicy(settings.queue, self.id, describers)
        self.bus = EventBus()
        self.bus.defaults = {"worker": self.id, "queue": self.queue}
        self.bus.masker = Masker.from_settings(settings)
        plugins.attach_sinks(self.bus)
        self.flow = WorkerFlow(FlowGate(redis, self.queue), self.bus)
        self.watchdog = Watchdog()
        outcomes = ("succeeded", "failed", "retried", "deferred", "dead", "refused", "recovered", "cancelled")
        self.stats = dict.fromkeys(outcomes, 0)
        self.holdings = Holdings()
        #: The asyncio tasks running attempts (the same set as `holdings.runners`).
        self.executing = self.holdings.runners
        self._stop = asyncio.Event()
        self._quiet = asyncio.Event()
        schedule_runs = ScheduleRuns.of_queue(settings.schedules, self.queue)
        shared = Shared(
            self.id,
            settings,
            redis,
            self.broker,
            self.bus,
            self.flow,
            plugins,
            self.holdings,
            self.stats,
            self.outage,
            schedule_runs,
            FlowAnnouncer(FlowStore(redis, self.queue), self.bus, settings.queue.result_ttl, self.outage),
        )
        self.settler = Settler(shared)
        self.upkeep = Upkeep(shared)
        self.fetcher = Fetcher(shared, self.policy, self.settler.decide, self.settler.flush, self.launch, self._quiet)
        self._decide = self.settler.decide  # bound once: the per-task path pays no extra lookup
        self._loops: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._signals = 0

    @property
    def started_at(self) -> float:
        return self.upkeep.started_at

    @property
    def oldest_claimed(self) -> float | None:
        return self.holdings.oldest_claimed

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
            self.fetcher.release_unstarted()  # claimed ahead, not started: back to the queue for the others now
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
        lease_ms = self.upkeep.lease_ms
        await with_retries(
            "heartbeat",
            lambda: self.broker.heartbeat([], lease_ms, *self.upkeep.worker_info()),
            outage=self.outage,
            stopping=self._stop,
        )
        await self.upkeep.registry.note(*self.upkeep.noted_queues())
        self.upkeep.check_timings()
        await with_retries("fair rules", self.upkeep.fair.publish_rules, outage=self.outage, stopping=self._stop)
        log.info(
            "worker %s started: queue %s, concurrency %d, executors %s",
            self.id,
            self.queue,
            self.concurrency,
            ", ".join(sorted(self.plugins.executors)) or "none",
        )
        self.bus.emit("worker.started", data={"concurrency": self.concurrency})
        self._loops = [
            asyncio.create_task(self.settler.run(), name="gopherq-settle"),
            asyncio.create_task(self.watchdog.run(), name="gopherq-watchdog"),
            asyncio.create_task(self.upkeep.heartbeat_loop(), name="gopherq-heartbeat"),
            asyncio.create_task(self.upkeep.maintenance_loop(), name="gopherq-maintenance"),
            asyncio.create_task(self.upkeep.cancel_watch_loop(), name="gopherq-cancel-watch"),
        ]
        self._fetcher = asyncio.create_task(self.fetcher.run(), name="gopherq-fetch")
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
        await self.upkeep.check_eviction_policy()

    async def _shutdown(self) -> None:
        self.bus.emit("worker.stopping", data={"running": len(self.executing)})
        fetch_stopped = True
        if self._fetcher is not None:
            fetch_stopped = await self._stopped_within({self._fetcher}, "the fetch loop")
        self.fetcher.release_unstarted()
        grace = self.settings.worker.shutdown_timeout
        if self.executing:
            log.info("waiting up to %ss for %d running tasks", grace, len(self.executing))
            _done, pending = await asyncio.wait(set(self.executing), timeout=grace)
            if pending:
                log.warning(
                    "%d tasks outlasted shutdown_timeout; putting them back at the head of the queue", len(pending)
                )
                # One that does not end even so keeps its task in this worker's list, for the reaper.
                await self._stopped_within(pending, "attempts cancelled at shutdown")
        await with_retries("final settle", self.settler.flush, outage=self.outage, attempts=20)
        await with_retries("release staged", self.broker.release_staged, outage=self.outage, attempts=20)
        await with_retries("schedule successes", self.upkeep.write_schedule_successes, outage=self.outage, attempts=5)
        await self._stopped_within(set(self._loops), "the background loops")
        # A fetch loop that did not stop may still park a task in this worker's processing list: keep the heartbeat
        # registration then, so the reaper recovers that list once the heartbeat is stale.
        if not self.holdings.tasks and fetch_stopped:
            await with_retries("deregister", self.broker.deregister, outage=self.outage, attempts=5)
        for entry in self.plugins.executors.values():
            try:
                await entry.close()
            except Exception:
                log.exception("executor %s failed to close", entry.name)
        await self.plugins.call_lifecycle("gopherq_shutdown", self)
        self.bus.emit("worker.stopped", data=dict(self.stats))
        await self.bus.close(timeout=5.0)
        log.info("worker %s stopped: %s", self.id, self.stats)

    @staticmethod
    async def _stopped_within(tasks: set[asyncio.Task[None]], what: str, timeout: float = 3.0) -> bool:
        """Cancel tasks and wait for them to end (asking again if a cancellation was lost, see core.cancellation),
        but never without bound: shutdown goes on without a stuck one, and the warning says where it is stuck."""
        pending = await cancel_and_wait(tasks, timeout)
        if pending:
            stuck = "; ".join(f"{task.get_name()} at {awaiting_at(task)}" for task in pending)
            log.warning(
                "%s did not stop within %ss of being cancelled (%s); shutting down without it", what, timeout, stuck
            )
        return not pending

    # -- executing: one task's attempt, from launch to its decision ----------------------------------------------

    def launch(self, token: str, task: Task, entry: ExecutorEntry) -> asyncio.Task[None] | None:
        """Start a claimed, admitted task's attempt in its own asyncio task, named after its token, under the
        watchdog's time limit (its own `timeout`, or the worker's, cut at its `deadline`). The one gate every start
        goes through (a batch's tasks, staged ones, a task run alone after the others ended), for what may have
        happened since the claim's checks: a task whose cancellation was asked for ends cancelled, and one whose
        deadline has passed (an attempt, a call made after it, is what a deadline forbids) is dead-lettered as the
        claim's admission would have done (reason 'deadline'); neither starts, and None is returned."""
        cancels = self.broker.cancel_requests
        if cancels and task.id in cancels:
            self.flow.released(token)
            self._decide(self.policy.cancelled(token, task, None, time.time()))
            return None
        limit = task.timeout or self.settings.worker.task_timeout
        deadline = task.deadline
        if deadline is not None:
            now = time.time()
            if now >= deadline:
                self.flow.released(token)
                message = f"deadline {deadline:.3f} passed before attempt {task.attempt} could start"
                self._decide(self.policy.refused(token, task, "deadline", message, now, task.encode()))
                return None
            limit = min(limit, deadline - now)
        runner = asyncio.create_task(self._execute(token, task, entry, limit), name=token)
        self.watchdog.watch(runner, limit)
        self.executing.add(runner)
        runner.add_done_callback(self.holdings.finished)
        return runner

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
            if task.flow_member is not None and has_inputs(task.flow_member):  # its parents' outcomes, by reference
                context.flow_inputs = await read_inputs(self.redis, self.queue, task)
            waited = queue_wait(task, started) if self.bus.wants("task.started") else None
            self.bus.emit(
                "task.started",
                task_id=task.id,
                task_type=task.type,
                attempt=task.attempt,
                data=waited,
                trace=task.trace,
            )
            try:
                outcome = await self.plugins.run_attempt(entry, task, context)  # wrapped by plugins, if any
            except Exception as exc:  # a wrapper's own failure (run_attempt raises only on cancellation)
                outcome = wrapper_failed(task, context, started, exc)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            cancelling = self.holdings.cancelling
            if self.watchdog.expired(current):
                outcome = AttemptOutcome(started, time.time(), failure=self._timed_out(task, limit))
            elif current in cancelling:
                cancelling.discard(current)  # type: ignore[arg-type]
                self.flow.released(token)
                self._decide(self.policy.cancelled(token, task, started, time.time()))
                return
            elif not self._stop.is_set():
                raise
            else:
                self.flow.released(token)
                self._decide(self.policy.release(token, task, "task.released"))
                return
        except Exception:
            self.fetcher.abandon(token, "running")
            return
        try:
            if self.flow.running:
                self.flow.ended(token, entry, outcome.failure, outcome.finished - outcome.started)
            self._conclude(token, task, outcome, context.event_data)
        except Exception:
            self.fetcher.abandon(token, "recording the outcome of")

    def _timed_out(self, task: Task, limit: float) -> TaskFailure:
        """The failure of an attempt the watchdog ended. One whose limit was cut to the task's deadline ends the
        task (reason 'deadline'): its failure says so and keeps the error of the attempt before it, as a deadline
        refusal does, since a cut attempt (a retry that started just before the deadline) often had no time to get
        an answer of its own and the dead letter should still say what kept failing."""
        deadline = task.deadline
        if deadline is None or limit >= (task.timeout or self.settings.worker.task_timeout):
            return TaskFailure("timeout", f"attempt exceeded its time limit of {limit:g}s")
        message = f"attempt cut at the task's deadline {deadline:.3f}, {limit:g}s after it started"
        return TaskFailure("timeout", message, details={"last_error": task.last_error} if task.last_error else None)

    def _conclude(self, token: str, task: Task, outcome: AttemptOutcome, facts: dict[str, Any] | None = None) -> None:
        """Record the attempt's outcome; `facts` (the executor's `context.event_data`) go into its events."""
        decision = self.policy.concluded(token, task, outcome)
        failure = outcome.failure
        if failure is not None:
            # DEBUG: at the default level the logging sink's `task.failed` line is the one line of a failed attempt.
            log.debug("task %s attempt %d failed: %s: %s", task.id, task.attempt, failure.reason, failure.message)
            # Announced with the outcome it leads to, once the settle has recorded both (settling.py).
            decision.failed, decision.facts = True, facts
        if facts:
            decision.data = {**facts, **decision.data} if decision.data else facts
        self._decide(decision)
