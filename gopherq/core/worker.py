"""The worker: one asyncio loop that claims tasks in batches, runs them concurrently, and settles them in batches.

Four loops share the work: `_fetch_loop` claims up to the free capacity in one round trip (or blocks on the
ready list when it is empty); each task runs in its own asyncio task under its time limit; `_settle_loop`
records every outcome that accumulated since its last round trip in one script call; `_heartbeat_loop` renews
the leases of everything this worker holds; `_maintenance_loop` promotes due delayed tasks and reaps tasks
whose holder died. Shutdown stops fetching, waits for running tasks up to `shutdown_timeout`, and puts back
whatever did not finish at the head of the ready list without counting an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.errors import TaskRejected
from gopherq.core.events import EventBus
from gopherq.core.executor import ExecutionContext, ExecutorEntry, run_attempt
from gopherq.core.outcomes import Decision, OutcomePolicy
from gopherq.core.plugins import PluginManager
from gopherq.core.settings import Settings
from gopherq.core.task import ErrorInfo, Task, decode_task

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not reachable right now": back off and try again, never crash.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Backoff:
    """Jittered exponential backoff for reconnecting; logs the first failure and then every 10th."""

    def __init__(self, what: str, low: float = 0.1, high: float = 5.0) -> None:
        self.what, self.low, self.high = what, low, high
        self.failures = 0

    async def wait(self, exc: BaseException) -> None:
        self.failures += 1
        delay = random.uniform(0, min(self.high, self.low * 2**self.failures))
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning(
                "%s: Redis unavailable (%s); retrying (failure %d)", self.what, exc or type(exc).__name__, self.failures
            )
        await asyncio.sleep(delay)

    def reset(self) -> None:
        if self.failures:
            log.info("%s: Redis reachable again after %d failures", self.what, self.failures)
        self.failures = 0


class Worker:
    """Runs tasks from one queue until asked to stop. Build it with settings, loaded plugins and a Redis client."""

    def __init__(self, settings: Settings, plugins: PluginManager, redis: Any, worker_id: str | None = None) -> None:
        self.settings = settings
        self.plugins = plugins
        self.redis = redis
        self.id = worker_id or make_worker_id()
        self.queue = settings.queue.name
        self.broker = Broker(redis, self.queue, self.id)
        self.policy = OutcomePolicy(settings.queue, self.id)
        self.bus = EventBus()
        self.bus.defaults = {"worker": self.id, "queue": self.queue}
        plugins.attach_sinks(self.bus)
        cfg = settings.worker
        self.concurrency = cfg.concurrency
        self.lease_ms = int(cfg.lease_timeout * 1000)
        self.executing: set[asyncio.Task[None]] = set()
        self.held: dict[str, Task | None] = {}  # token -> task, for every claimed, unsettled task
        self._decisions: list[Decision] = []
        self._settle_wakeup = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._quiet = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._signals = 0
        self.stats = {"succeeded": 0, "failed": 0, "retried": 0, "dead": 0, "refused": 0, "recovered": 0}

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
        for entry in self.plugins.executors.values():
            await entry.open()
        self.bus.start()
        await self.plugins.call_lifecycle("gopherq_startup", self)
        await self._guard("heartbeat", lambda: self.broker.heartbeat([], self.lease_ms), once=True)
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
            asyncio.create_task(self._heartbeat_loop(), name="gopherq-heartbeat"),
            asyncio.create_task(self._maintenance_loop(), name="gopherq-maintenance"),
        ]
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="gopherq-fetch")
        await self._stop.wait()
        await self._shutdown()

    async def _connect(self) -> None:
        backoff = Backoff(f"worker {self.id}", high=10.0)
        while True:
            try:
                await self.redis.ping()
                break
            except TRANSIENT as exc:
                if self._stop.is_set():
                    return
                await backoff.wait(exc)
        backoff.reset()
        try:
            policy = (await self.redis.config_get("maxmemory-policy")).get(b"maxmemory-policy", b"noeviction")
            if policy not in (b"noeviction", "noeviction"):
                log.warning(
                    "Redis maxmemory-policy is %s, not noeviction: Redis may evict queued tasks under memory pressure",
                    policy.decode() if isinstance(policy, bytes) else policy,
                )
        except RedisError:
            pass  # CONFIG is often disabled on managed Redis; the warning is best-effort

    async def _shutdown(self) -> None:
        self.bus.emit("worker.stopping", data={"running": len(self.executing)})
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
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
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if not self.held:
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
        """Run a Redis action, retrying transient failures with backoff (forever, or `attempts` times)."""
        backoff = Backoff(f"{what} ({self.id})")
        tries = 0
        while True:
            try:
                result = await action()
                backoff.reset()
                return result
            except TRANSIENT as exc:
                tries += 1
                if once or (attempts and tries >= attempts):
                    log.warning("%s failed: %s", what, exc)
                    return None
                await backoff.wait(exc)

    # -- fetching --------------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        cfg = self.settings.worker
        backoff = Backoff(f"fetch ({self.id})")
        while not self._quiet.is_set():
            free = self.concurrency - len(self.executing)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                batch = await self.broker.claim(min(free, cfg.batch_size), self.lease_ms)
                if not batch:
                    await self.broker.wait_for_task(cfg.fetch_timeout)
                    backoff.reset()
                    continue
                backoff.reset()
            except TRANSIENT as exc:
                await backoff.wait(exc)
                continue
            await self._start_batch(batch)

    async def _start_batch(self, batch: list[tuple[str, bytes]]) -> None:
        max_bytes = self.settings.worker.max_payload_bytes
        adopt: dict[str, bytes] = {}
        ready: list[tuple[str, Task, ExecutorEntry]] = []
        now = time.time()
        for token, raw in batch:
            self.held[token] = None
            try:
                task = decode_task(raw, max_bytes)
            except TaskRejected as exc:
                self._decide(self.policy.dead_raw(token, raw, exc.reason, exc.message, now))
                continue
            self.held[token] = task
            if task.id_assigned:
                adopt[token] = task.encode()
            entry = self._admit(token, task, raw, now)
            if entry is not None:
                ready.append((token, task, entry))
        if adopt:
            await self._guard("adopt", lambda: self.broker.adopt(adopt), attempts=5)
        for token, task, entry in ready:
            runner = asyncio.create_task(self._execute(token, task, entry))
            self.executing.add(runner)
            runner.add_done_callback(self._finished)

    def _admit(self, token: str, task: Task, raw: bytes, now: float) -> ExecutorEntry | None:
        """Checks before running: poison, deadline, known type, valid payload. Dead-letters what fails one."""
        reason = message = None
        entry = self.plugins.executors.get(task.type)
        if task.recoveries > self.settings.worker.max_recoveries:
            reason, message = (
                "poison",
                f"task lost its worker {task.recoveries} times (max_recoveries={self.settings.worker.max_recoveries})",
            )
        elif task.deadline is not None and now >= task.deadline:
            reason, message = "deadline", f"deadline {task.deadline:.3f} passed before attempt {task.attempt}"
        elif entry is None:
            known = ", ".join(sorted(self.plugins.executors)) or "none"
            reason, message = "unknown_type", f"no executor for task type {task.type!r} (registered: {known})"
        else:
            try:
                entry.validate(task)
            except TaskRejected as exc:
                reason, message = exc.reason, exc.message
        if reason is None:
            self.bus.emit("task.dequeued", task_id=task.id, task_type=task.type, attempt=task.attempt)
            return entry
        assert message is not None
        error = task.last_error if reason in ("poison", "deadline") and task.last_error else None
        info = ErrorInfo(reason, message, {"last_error": error} if error else {})
        self._decide(self.policy.dead(token, task, reason, info, None, now, raw=raw))
        return None

    def _finished(self, runner: asyncio.Task[None]) -> None:
        self.executing.discard(runner)
        self._slot_free.set()

    # -- executing -------------------------------------------------------------------------------------------

    async def _execute(self, token: str, task: Task, entry: ExecutorEntry) -> None:
        limit = task.timeout or self.settings.worker.task_timeout
        if task.deadline is not None:
            limit = max(0.001, min(limit, task.deadline - time.time()))
        context = ExecutionContext(
            worker_id=self.id,
            queue=self.queue,
            attempt=task.attempt,
            max_attempts=task.max_attempts or self.settings.queue.max_attempts,
            timeout=limit,
            deadline=task.deadline,
            log=logging.LoggerAdapter(log, {"task_id": task.id}),
        )
        self.bus.emit("task.started", task_id=task.id, task_type=task.type, attempt=task.attempt)
        try:
            outcome = await run_attempt(entry, task, context)
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
            self._decide(Decision(Settlement("release", token, task.id), "task.released", task))
            return
        failure = outcome.failure
        if failure is None:
            self._decide(self.policy.success(token, task, outcome.result, outcome.started, outcome.finished))
            return
        error = ErrorInfo(failure.reason, failure.message, failure.details)
        log.info("task %s attempt %d failed: %s: %s", task.id, task.attempt, failure.reason, failure.message)
        self.bus.emit("task.failed", task_id=task.id, task_type=task.type, attempt=task.attempt, error=error.to_dict())
        self._decide(
            self.policy.failure(token, task, error, failure.retryable, failure.delay, outcome.started, outcome.finished)
        )

    # -- settling --------------------------------------------------------------------------------------------

    def _decide(self, decision: Decision) -> None:
        self._decisions.append(decision)
        self._settle_wakeup.set()

    async def _settle_loop(self) -> None:
        backoff = Backoff(f"settle ({self.id})")
        while True:
            await self._settle_wakeup.wait()
            self._settle_wakeup.clear()
            try:
                await self._flush()
                backoff.reset()
            except TRANSIENT as exc:
                self._settle_wakeup.set()
                await backoff.wait(exc)

    async def _flush(self) -> None:
        """Settle every pending decision in one round trip; on failure they stay pending."""
        while self._decisions:
            decisions, self._decisions = self._decisions, []
            try:
                accepted = await self.broker.settle(
                    [d.settlement for d in decisions],
                    self.settings.queue.result_ttl,
                    self.settings.queue.dead_letter_max,
                )
            except BaseException:
                self._decisions[:0] = decisions
                raise
            for decision, ok in zip(decisions, accepted, strict=False):
                self.held.pop(decision.settlement.token, None)
                self._announce(decision, ok)

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
        elif kind == "retry":
            self.stats["retried"] += 1
        elif kind == "dead":
            self.stats["dead"] += 1
            reason = (decision.data or {}).get("reason")
            log.warning(
                "task %s dead-lettered (%s): %s", task_id, reason, decision.error.message if decision.error else ""
            )
        self.bus.emit(
            decision.event,
            task_id=task_id,
            task_type=task.type if task else None,
            attempt=task.attempt if task else None,
            duration=decision.duration,
            error=decision.error.to_dict() if decision.error else None,
            data=decision.data or {},
        )

    # -- background ------------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.worker.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.broker.heartbeat(list(self.held), self.lease_ms)
            except TRANSIENT as exc:
                log.warning("heartbeat failed (%s); leases not renewed this time", exc)

    async def _maintenance_loop(self) -> None:
        cfg = self.settings.worker
        next_reap = time.monotonic() + random.uniform(0, cfg.reaper_interval)
        backoff = Backoff(f"maintenance ({self.id})")
        while True:
            await asyncio.sleep(cfg.promote_interval)
            try:
                await self.broker.promote()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + cfg.reaper_interval
                    recovered = await self.broker.reap(self.lease_ms, int(cfg.reaper_interval * 1000), self.id)
                    if recovered:
                        self._announce_recovered(recovered)
                backoff.reset()
            except TRANSIENT as exc:
                await backoff.wait(exc)

    def _announce_recovered(self, envelopes: list[bytes]) -> None:
        self.stats["recovered"] += len(envelopes)
        for raw in envelopes:
            try:
                obj = codec.loads(raw)
                task_id, recoveries = obj.get("id"), obj.get("recoveries")
            except (codec.JSONDecodeError, AttributeError):
                task_id, recoveries = None, None
            log.warning("task %s recovered from a dead worker or expired lease (recovery %s)", task_id, recoveries)
            self.bus.emit("task.recovered", task_id=task_id, data={"recoveries": recoveries})
