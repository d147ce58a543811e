"""The worker's background duties that keep the delivery protocol alive whatever the tasks do: the heartbeat
(renewing this worker's leases), promotion of due delayed tasks, the reaper (recovering the tasks of dead
workers), and the start-up checks of Redis and timings.

One object of the worker's, kept apart so the hot path (fetch, execute, settle) reads on its own. It shares only
`Holdings` (what the worker holds) and the worker's counters with the other parts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import Any

from gopherq.core import codec
from gopherq.core.admission import admit
from gopherq.core.broker import Broker
from gopherq.core.connection import command_timeout
from gopherq.core.fair import FairKeys
from gopherq.core.flows.reconcile import Reconciler
from gopherq.core.registry import QueueRegistry
from gopherq.core.resilience import RETRYABLE, Backoff
from gopherq.core.schedules import Scheduler, validate_schedules
from gopherq.core.shared import Shared
from gopherq.core.task import decode_task

log = logging.getLogger("gopherq.core.worker")

#: Most running tasks a worker lists in its info (the count is always exact).
RUNNING_LISTED = 1000


class Upkeep:
    """Heartbeat, maintenance (promote, schedules, reap) and cancel-watch loops, and the start-up checks."""

    def __init__(self, shared: Shared) -> None:
        self.worker_id, self.settings, self.redis = shared.worker_id, shared.settings, shared.redis
        self.broker, self.bus, self.flow, self.plugins = shared.broker, shared.bus, shared.flow, shared.plugins
        self.holdings, self.stats, self.outage = shared.holdings, shared.stats, shared.outage
        self.lease_ms = int(self.settings.worker.lease_timeout * 1000)
        self.started_at = time.time()
        self.scheduler = self._make_scheduler()
        self.registry = QueueRegistry(self.redis)
        self.schedule_runs = shared.schedule_runs
        self.reconciler = Reconciler(shared.dags.store, shared.dags, self.settings.worker.flow_reconcile_interval)
        self.fair = FairKeys(self.redis, self.settings.queue.name, self.settings.fair)

    async def check_eviction_policy(self) -> None:
        """Warn when Redis may evict keys: an evicted ready list or in-flight hash is lost work."""
        try:
            config = await self.redis.config_get("maxmemory-policy")
        except RETRYABLE:
            return  # CONFIG is often disabled on managed Redis; the warning is best-effort
        policy: Any = None
        for key, value in (config or {}).items():
            if (key.decode() if isinstance(key, bytes) else key) == "maxmemory-policy":
                policy = value.decode() if isinstance(value, bytes) else value
        if policy is not None and policy != "noeviction":
            log.warning(
                "Redis maxmemory-policy is %s, not noeviction: under memory pressure Redis may evict queued "
                "and in-flight tasks; set maxmemory-policy noeviction",
                policy,
            )

    def _make_scheduler(self) -> Scheduler | None:
        """The periodic schedules this worker ticks (every worker does; each slot is enqueued once). Their tasks
        are checked now, as a worker would check them, so a bad schedule stops start-up (exit 2), not a slot."""
        schedules = self.settings.schedules
        if not schedules:
            return None
        max_bytes = self.settings.worker.max_payload_bytes
        horizon = self.settings.queue.max_horizon

        def check(envelope: bytes) -> None:  # a schedule is a producer: the rules of every entry point
            admit(decode_task(envelope, max_bytes, producer=True), self.plugins, time.time(), horizon)

        validate_schedules(schedules, check)
        queues = {schedule.queue or self.broker.keys.queue for schedule in schedules}
        brokers = {queue: Broker(self.redis, queue) for queue in queues}
        scheduler = Scheduler(schedules, self.broker.keys.queue, brokers, self.settings.queue.result_ttl)
        scheduler.before_enqueue = self.plugins.before_enqueue
        return scheduler

    def check_timings(self) -> None:
        cfg = self.settings.worker
        if cfg.heartbeat_interval * 2 > cfg.lease_timeout:
            log.warning(
                "worker.lease_timeout (%ss) is less than twice worker.heartbeat_interval (%ss): one slow heartbeat "
                "lets leases expire and running tasks be handed to another worker",
                cfg.lease_timeout,
                cfg.heartbeat_interval,
            )
        timeout = command_timeout(self.settings)
        if timeout >= cfg.lease_timeout:
            log.warning(
                "redis.command_timeout (%ss) is not shorter than worker.lease_timeout (%ss): Redis can stop answering "
                "for longer than a lease before this worker notices",
                timeout,
                cfg.lease_timeout,
            )

    def noted_queues(self) -> list[str]:
        """The queues this worker makes known in the queue registry: its own, and those its schedules feed."""
        targets = self.scheduler.brokers if self.scheduler is not None else {}
        return [self.broker.keys.queue, *targets]

    async def write_schedule_successes(self) -> None:
        """At shutdown: the schedule successes no heartbeat has written yet."""
        successes = self.schedule_runs.take()
        try:
            await self.broker.record_schedule_successes(successes)
        except BaseException:
            self.schedule_runs.put_back(successes)
            raise

    async def heartbeat_loop(self) -> None:
        interval = self.settings.worker.heartbeat_interval
        failures = Backoff("heartbeat (leases not renewed)", outage=self.outage)
        while True:
            await asyncio.sleep(interval)
            successes = self.schedule_runs.take()
            try:
                await self.broker.heartbeat(
                    list(self.holdings.tasks), self.lease_ms, *self.worker_info(), successes=successes
                )
                await self.flow.renew(int(time.time() * 1000) + self.lease_ms)
                failures.reset()
            except RETRYABLE as exc:
                self.schedule_runs.put_back(successes)  # written with the next one
                failures.failed(exc)

    def worker_info(self) -> tuple[dict[str, Any], int]:
        """What this worker tells others (the inspection API) about itself, and for how long (seconds) it stays
        readable if no heartbeat refreshes it: written with each heartbeat, so it costs no round trip."""
        cfg = self.settings.worker
        # A staged task (claimed ahead by worker.prefetch) is held, not running: it is listed after the running ones,
        # marked, and counts neither as running nor as the oldest running task (a gauge alerted on).
        running, staged = self.holdings.held()
        oldest = self.holdings.oldest_claimed = running[0][2] if running else None
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": self.broker.keys.queue,
            "started": self.started_at,
            "concurrency": cfg.concurrency,
            "stats": codec.dumps(self.stats),
            "running": codec.dumps((running + staged)[:RUNNING_LISTED]),
            "running_count": len(running),
            "staged_count": len(staged),
            # When the longest-running task was claimed ("" when none): what the inspector's oldest-running age
            # reads, without the whole list.
            "oldest": "" if oldest is None else oldest,
        }
        return info, int(cfg.lease_timeout * 2 + cfg.heartbeat_interval * 2 + 10)

    async def maintenance_loop(self) -> None:
        cfg = self.settings.worker
        next_reap = time.monotonic() + random.uniform(0, cfg.reaper_interval)
        # A blocking fetch a frozen worker left on the server may still land in its list until it times out.
        forget_ms = int((cfg.fetch_timeout + cfg.heartbeat_interval + 2 * cfg.reaper_interval + 1.0) * 1000)
        lock_ms = int(cfg.reaper_interval * 1000)
        backoff = Backoff("maintenance", outage=self.outage)
        while True:
            await asyncio.sleep(cfg.promote_interval)
            try:
                await self.registry.note(*self.noted_queues())  # once a minute: the registry may have been lost
                await self.broker.promote()
                if self.scheduler is not None:
                    await self.scheduler.tick()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + cfg.reaper_interval
                    recovered = await self.broker.reap(
                        self.lease_ms, lock_ms, self.worker_id, forget_after_ms=forget_ms
                    )
                    if recovered:
                        self._announce_recovered(recovered)
                    if recovered is not None:  # this worker reaped: fair keys waiting for an end none will report
                        await self.fair.heal()
                    await self.reconciler.maybe_tick(self.worker_id)  # flows: no join can hang silently
                backoff.reset()
            except RETRYABLE as exc:
                await backoff.wait(exc)
                # After an outage every lease looks expired: give live workers one heartbeat to renew them first.
                next_reap = time.monotonic() + cfg.heartbeat_interval + cfg.reaper_interval

    async def cancel_watch_loop(self) -> None:
        """Cancel running attempts whose task a client asked to cancel. One small read per interval, and only
        while this worker holds tasks; each runner is named after its attempt token (see Worker.launch)."""
        interval = self.settings.worker.cancel_poll_interval
        keep_ms = self.settings.queue.result_ttl * 1000
        failures = Backoff("cancel watch", outage=self.outage)
        while True:
            await asyncio.sleep(interval)
            holdings = self.holdings
            if not holdings.tasks:
                continue
            try:
                requested = await self.broker.cancel_requests_now(keep_ms)
                failures.reset()
            except RETRYABLE as exc:
                failures.failed(exc)
                continue
            self.broker.cancel_requests = frozenset(requested)  # so a task that ends meanwhile drops its request
            cancelling = holdings.cancelling
            for runner in [runner for runner in cancelling if runner.done()]:  # finished before the cancel landed
                cancelling.discard(runner)
            if not requested:
                continue
            tokens = {token for token, task in holdings.tasks.items() if task is not None and task.id in requested}
            for runner in list(holdings.runners) if tokens else ():
                if runner.get_name() in tokens and not runner.done():
                    if runner not in cancelling:
                        task = holdings.tasks.get(runner.get_name())
                        log.info("task %s: cancelling its running attempt on request", task.id if task else "?")
                        cancelling.add(runner)
                    runner.cancel()  # again at each look while it runs: a cancellation can be lost (core.cancellation)

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
