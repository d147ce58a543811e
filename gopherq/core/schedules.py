"""Periodic tasks: `[[schedules]]` (or `Schedule` objects), their slots, and the tick that enqueues each due slot
exactly once across any number of workers, with no beat process to keep alive."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gopherq.core import codec
from gopherq.core.broker import Broker, SpecialPush
from gopherq.core.errors import ConfigError, TaskRejected
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.resilience import RETRYABLE
from gopherq.core.task import task_from_dict

if TYPE_CHECKING:
    from gopherq.core.enqueuing import BeforeEnqueue

log = logging.getLogger(__name__)

#: Most slots one tick enqueues for one schedule (`catch_up = "all"` after a long downtime goes on next tick).
MAX_SLOTS_PER_TICK = 1000
#: With `catch_up = "none"`, a slot noticed later than this (seconds) counts as missed and is skipped.
ON_TIME = 10.0

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}\Z")


class Schedule(BaseModel):
    """One periodic task: `cron` (five fields, in `timezone`) or `every` (seconds, aligned to the Unix epoch), the
    task to enqueue (an envelope without `id`: each slot's task gets the id `<name>@<slot>`), the queue it goes to
    (default: the worker's), and what to do with slots no worker ticked in time, in a downtime or while every
    worker was stalled or cut off from Redis (`catch_up`): `none` skips them, `one` enqueues one task for all of
    them, `all` enqueues one per slot. A task with `unique_key`/`unique_for` never overlaps itself: a slot is
    skipped while the previous slot's task is still queued or running."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cron: str | None = None
    every: int | None = Field(None, ge=1, description="seconds between slots")
    timezone: str = "UTC"
    task: dict[str, Any]
    queue: str | None = None
    catch_up: Literal["none", "one", "all"] = "one"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-100 letters, digits or . _ : -")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')") from None
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime.now(ZoneInfo("UTC")))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of 'cron' and 'every'")
        if "id" in self.task:
            raise ValueError("a schedule's task has no 'id': each slot's task gets '<name>@<slot>'")
        return self

    def slots_after(self, last: int) -> Iterator[int]:
        """Every slot (Unix seconds) after `last`, in order, without end."""
        if self.every is not None:
            slot = (last // self.every + 1) * self.every
            while True:
                yield slot
                slot += self.every
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        for moment in CronSim(self.cron, datetime.fromtimestamp(last, zone)):
            yield int(moment.timestamp())

    def next_slot(self, after: float) -> int:
        return next(self.slots_after(int(after)))

    def task_id(self, slot: int) -> str:
        return f"{self.name}@{slot}"

    def envelope(self, slot: int) -> bytes:
        task = dict(self.task)
        if task.get("unique_for") is not None and task.get("unique_key") is None:
            task["unique_key"] = self.unique_key()  # written out: the key the slot's lock is taken with
        return codec.dumps({"id": self.task_id(slot), **task, "created_at": time.time()})

    def unique_key(self) -> str | None:
        """The task's uniqueness key by the envelope's own rule (task_from_dict), the same for every slot; None
        when the task is not unique. Raises TaskRejected for a task that is not a valid envelope."""
        return task_from_dict({"id": self.name, **self.task}).unique_key

    def unique(self, default_window: int) -> tuple[str, int] | None:
        """(uniqueness key, lock ms) when the schedule's task is unique: a slot is skipped while the task of an
        earlier one still holds the key."""
        if self.task.get("unique_key") is None and self.task.get("unique_for") is None:
            return None
        key = self.unique_key()
        assert key is not None
        window = self.task.get("unique_for") or default_window
        return key, max(1, int(float(window) * 1000))


class Scheduler:
    """Runs in every worker's maintenance loop. It keeps each schedule's next slot in memory and talks to Redis
    only when a slot is due: one script call per schedule per slot per worker, and the first caller wins."""

    def __init__(
        self, schedules: list[Schedule], default_queue: str, brokers: dict[str, Broker], result_ttl: int = 86400
    ) -> None:
        self.schedules = schedules
        self.result_ttl = result_ttl
        self.default_queue = default_queue
        self.brokers = brokers
        #: name -> last slot as known here (None: not read yet).
        self.last: dict[str, int | None] = {s.name: None for s in schedules}
        self.due_at: dict[str, float] = {s.name: 0.0 for s in schedules}
        #: The plugins' `gopherq_before_enqueue` (origin "schedule"), or None.
        self.before_enqueue: BeforeEnqueue | None = None

    def queue_of(self, schedule: Schedule) -> str:
        return schedule.queue or self.default_queue

    async def tick(self, now: float | None = None) -> int:
        """Enqueue every slot that is due; returns how many tasks this worker enqueued."""
        now = time.time() if now is None else now
        enqueued = 0
        for schedule in self.schedules:
            if now >= self.due_at[schedule.name]:
                try:
                    enqueued += await self._run(schedule, now)
                except RETRYABLE:
                    raise
                except Exception:  # a bug here must not stop the maintenance loop (promotion, reaping)
                    log.exception("schedule %s: tick failed; trying again in a second", schedule.name)
                    self.due_at[schedule.name] = now + 1.0
        return enqueued

    async def _run(self, schedule: Schedule, now: float) -> int:
        broker = self.brokers[self.queue_of(schedule)]
        for _ in range(3):  # a lost compare-and-set tells us the current slot: go again from there
            last = self.last[schedule.name]
            if last is None:
                # First sight of this schedule anywhere: it starts with the next slot; nothing is enqueued.
                pending: list[int] = []
                new_last = int(now)
            else:
                pending = self._pending(schedule, last, now)
                if not pending:
                    self.due_at[schedule.name] = schedule.next_slot(last)
                    return 0
                new_last = pending[-1]
                pending = self._apply_catch_up(schedule, pending, now)
                if pending and await broker.schedule_paused(schedule.name):
                    log.info(
                        "schedule %s: slot %s passes without a task: the schedule is paused", schedule.name, new_last
                    )
                    pending = []
            unique = schedule.unique(self.result_ttl)
            if unique is not None:
                pending = pending[-1:]  # a unique task runs once at a time: one task for the slots due
            envelopes = [(schedule.task_id(slot), self._envelope(schedule, slot)) for slot in pending]
            ok, value = await broker.run_schedule(
                schedule.name, last, new_last, envelopes, schedule.task.get("priority"), unique
            )
            if ok:
                self.last[schedule.name] = new_last
                self.due_at[schedule.name] = schedule.next_slot(new_last)
                if value:
                    log.info("schedule %s: enqueued %d task(s) for slot %s", schedule.name, value, new_last)
                elif envelopes:
                    log.info(
                        "schedule %s: slot %s skipped: its unique task is still queued or running",
                        schedule.name,
                        new_last,
                    )
                return value
            self.last[schedule.name] = None if value < 0 else value
        return 0

    def _envelope(self, schedule: Schedule, slot: int) -> bytes:
        envelope = schedule.envelope(slot)
        hook = self.before_enqueue
        return envelope if hook is None else hook.envelope(envelope, self.queue_of(schedule), "schedule")

    @staticmethod
    def _pending(schedule: Schedule, last: int, now: float) -> list[int]:
        pending: list[int] = []
        for slot in schedule.slots_after(last):
            if slot > now or len(pending) >= MAX_SLOTS_PER_TICK:
                break
            pending.append(slot)
        return pending

    @staticmethod
    def _apply_catch_up(schedule: Schedule, pending: list[int], now: float) -> list[int]:
        if schedule.catch_up == "all":
            return pending
        latest = pending[-1]
        if schedule.catch_up == "one" or now - latest <= ON_TIME:
            return [latest]
        return []


def validate_schedules(schedules: list[Schedule], check: Any) -> None:
    """Check each schedule's task as a worker will (`check(envelope)` raises TaskRejected); one bad schedule stops
    start-up with a line naming it. Queue names are checked too (they become key names)."""
    names = set()
    for schedule in schedules:
        if schedule.name in names:
            raise ConfigError(f"schedules: two schedules are named {schedule.name!r}")
        names.add(schedule.name)
        if schedule.queue is not None:
            QueueKeys(schedule.queue)
        try:
            check(schedule.envelope(0))
        except TaskRejected as exc:
            raise ConfigError(f"schedules: {schedule.name}: task: {exc.message}") from None


async def upcoming(
    schedules: list[Schedule], default_queue: str, redis: RedisClient, now: float | None = None
) -> list[dict[str, Any]]:
    """Each schedule with its last enqueued slot (from Redis), the slot due after it (`next_slot`, None before the
    first tick: once it is past, the schedule is late, as no worker ticked it), its next run time, when a task
    of it last succeeded (`last_success`, written by the workers' heartbeats), whether it is paused (`paused`:
    since when) and how the task of its last slot ended (`last_outcome`: the status of its result record, None
    while it has none), for `gopherq schedules`, the dashboard and the metrics. Two round trips."""
    now = time.time() if now is None else now
    async with redis.pipeline(transaction=False) as pipe:
        for schedule in schedules:
            keys = QueueKeys(schedule.queue or default_queue)
            pipe.hget(keys.schedules, schedule.name)
            pipe.hget(keys.schedule_successes, schedule.name)
            pipe.hget(keys.schedules_paused, schedule.name)
        replies = await pipe.execute() if schedules else []
    lasts = [int(replies[3 * index]) if replies[3 * index] is not None else None for index in range(len(schedules))]
    async with redis.pipeline(transaction=False) as pipe:
        for schedule, last in zip(schedules, lasts, strict=True):
            if last is not None:
                pipe.get(QueueKeys(schedule.queue or default_queue).result(schedule.task_id(last)))
        records = iter(await pipe.execute() if any(last is not None for last in lasts) else [])
    rows = []
    for index, schedule in enumerate(schedules):
        success, paused = replies[3 * index + 1], replies[3 * index + 2]
        last = lasts[index]
        outcome = None
        if last is not None:
            record = next(records)
            try:
                parsed = codec.loads(record) if record is not None else None
            except codec.JSONDecodeError:
                parsed = None
            outcome = str(parsed.get("status")) if isinstance(parsed, dict) and parsed.get("status") else None
        rows.append(
            {
                "name": schedule.name,
                "queue": schedule.queue or default_queue,
                "rule": f"cron {schedule.cron!r} {schedule.timezone}" if schedule.cron else f"every {schedule.every}s",
                "timezone": schedule.timezone,
                "catch_up": schedule.catch_up,
                "last_slot": last,
                "next_slot": None if last is None else schedule.next_slot(last),
                "next_run": schedule.next_slot(max(now, last or 0)),
                "last_success": None if success is None else float(success),
                "last_task": None if last is None else schedule.task_id(last),
                "last_outcome": outcome,
                "paused": None if paused is None else float(paused),
            }
        )
    return rows


async def set_paused(schedule: Schedule, default_queue: str, redis: RedisClient, paused: bool) -> None:
    """Pause a schedule (its slots pass without a task, on every worker, from its next due slot) or resume it."""
    keys = QueueKeys(schedule.queue or default_queue)
    if paused:
        await redis.hset(keys.schedules_paused, schedule.name, str(time.time()))
    else:
        await redis.hdel(keys.schedules_paused, schedule.name)


async def run_now(schedule: Schedule, default_queue: str, redis: RedisClient) -> str | None:
    """Enqueue the schedule's task once, now, without touching its slots; its id is `<name>@<now in ms>` (so a
    success counts as the schedule's `last_success`). Returns the id, or None when the task is unique and an
    earlier one still holds its key (nothing enqueued)."""
    broker = Broker(redis, schedule.queue or default_queue)
    stamp = int(time.time() * 1000)
    task_id = schedule.task_id(stamp)
    unique = schedule.unique(86400)
    item = SpecialPush(
        task_id,
        schedule.envelope(stamp),
        priority=schedule.task.get("priority"),
        unique_key=None if unique is None else unique[0],
        lock_ms=0 if unique is None else unique[1],
    )
    duplicate = (await broker.push_special([item]))[0]
    return None if duplicate is not None else task_id


class ScheduleRuns:
    """When a task of each schedule that feeds one worker's queue last succeeded, not written to Redis yet. The
    settler notes a success (a schedule's task is named `<schedule>@<slot>`, see Schedule.task_id), and the
    heartbeat writes what was noted with its own pipeline, so a success costs no round trip of its own."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._pending: dict[str, float] = {}

    @classmethod
    def of_queue(cls, schedules: list[Schedule], queue: str) -> ScheduleRuns:
        """The record for a worker of `queue`: the schedules whose tasks go to it."""
        return cls(frozenset(s.name for s in schedules if (s.queue or queue) == queue))

    def succeeded(self, task_id: str) -> None:
        """A task succeeded: when it is a run of one of `names`, note the time."""
        name, at, slot = task_id.rpartition("@")
        if at and name in self.names and slot.isdigit():
            self._pending[name] = time.time()

    def take(self) -> dict[str, float]:
        """What was noted since the last take (the caller writes it, or puts it back)."""
        taken, self._pending = self._pending, {}
        return taken

    def put_back(self, taken: dict[str, float]) -> None:
        """A write of `taken` failed: keep it for the next, behind any newer success."""
        self._pending = {**taken, **self._pending}
