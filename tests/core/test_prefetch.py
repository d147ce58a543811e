"""Prefetch (`worker.prefetch`, off by default): a worker claims up to `prefetch` tasks beyond its free slots and
starts them as slots free. Never more than `concurrency` run at once; staged tasks keep their leases (the reaper
leaves them alone), a cancel request reaches them before they start, and they go back to the queue, unchanged, as
soon as the worker goes quiet or is told to stop."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis

from gopherq import AsyncClient, Settings
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.web.exposition import state_counts
from tests.support.common import async_wait_until, wait_until, worker_config
from tests.support.loopback import LoopbackServer
from tests.support.plugins import Sleeper, sleeper_plugins


async def test_staged_tasks_wait_for_a_slot_and_keep_their_leases(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    # Four tasks of 1.8 s, two at a time: the last two wait 1.8 s staged, beyond the 1.5 s lease unless it is renewed.
    settings = make_settings(worker={"concurrency": 2, "prefetch": 2, "lease_timeout": 1.5, "heartbeat_interval": 0.25})
    sleeper = Sleeper()
    extra = sleeper_plugins(sleeper)
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=extra)) as client:
        ids = [await client.enqueue("sleep", seconds=1.8) for _ in range(4)]
        running = await start_worker(settings, extra_plugins=extra)
        holdings = running.worker.holdings
        await async_wait_until(lambda: len(holdings.staged) == 2, what="two tasks claimed ahead")
        assert len(holdings.runners) == 2 and len(holdings.tasks) == 4  # held: leases renewed by the heartbeat
        for task_id in ids:
            record = await client.wait(task_id, timeout=10)
            assert record is not None and record.status.value == "succeeded" and record.attempts == 1
    assert sleeper.most_at_once() == 2 and sleeper.runs == dict.fromkeys(ids, 1)  # each once: none recovered
    assert running.worker.stats["recovered"] == 0


class Staging(NamedTuple):
    """A worker with one slot and one task claimed ahead (`staged_behind`)."""

    client: AsyncClient
    worker: Any
    sleeper: Sleeper
    first: str
    queue: str

    async def stage(self, **fields: Any) -> str:
        """Enqueue a task and wait until the worker has claimed it ahead, behind `first`."""
        task_id = await self.client.enqueue("sleep", **fields)
        staged = self.worker.holdings.staged
        await async_wait_until(lambda: any(task.id == task_id for _, task, _ in staged), what="the task staged")
        return task_id

    async def first_succeeds(self) -> None:
        done = await self.client.wait(self.first, timeout=8)
        assert done is not None and done.status.value == "succeeded"


@contextlib.asynccontextmanager
async def staged_behind(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], seconds: float, **worker: Any
) -> AsyncIterator[Staging]:
    """One slot, prefetch 1, and a first task of `seconds` already running: what the test enqueues next is staged.
    `worker`: more worker settings."""
    settings = make_settings(worker={"concurrency": 1, "prefetch": 1, **worker})
    sleeper = Sleeper()
    extra = sleeper_plugins(sleeper)
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=extra)) as client:
        running = await start_worker(settings, extra_plugins=extra)
        first = await client.enqueue("sleep", seconds=seconds)
        await async_wait_until(lambda: first in sleeper.runs, what="the first task to start")
        yield Staging(client, running.worker, sleeper, first, settings.queue.name)


async def test_a_staged_task_is_listed_as_staged_not_as_running(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    # Held, not running: the worker's running count, its oldest running task (a gauge alerted on), the running tab
    # and `gopherq task` used to count it as running.
    async with staged_behind(make_settings, start_worker, 2.5, heartbeat_interval=0.1) as at:
        staged = await at.stage(seconds=0)
        inspect = at.client.inspect

        async def listed() -> Any:
            found = await inspect.workers(at.queue)
            return found if found and found[0].staged_count == 1 else None

        [worker] = await async_wait_until(listed, what="a heartbeat listing the staged task")
        assert worker.running_count == 1
        assert [(task.task_id, task.staged) for task in worker.running] == [(at.first, False), (staged, True)]
        first_claimed = worker.running[0].since
        assert first_claimed is not None and at.worker.holdings.oldest_claimed == first_claimed
        page = await inspect.running(at.queue)
        assert {item.id: item.state for item in page.items} == {at.first: "running", staged: "staged"}
        info = await inspect.task(at.queue, staged)
        assert info is not None and info.state == "staged" and info.worker == worker.id
        why = await inspect.explain(at.queue, staged)
        assert why is not None and why.waiting_for == "staged" and "claimed ahead" in why.message
        queue = await inspect.queue(at.queue)
        assert (queue.running, queue.staged) == (2, 1)
        assert state_counts(queue)["running"] == 1 and state_counts(queue)["staged"] == 1
        await at.first_succeeds()
        record = await at.client.wait(staged, timeout=8)
        assert record is not None and record.status.value == "succeeded"


async def test_a_cancel_request_reaches_a_staged_task_before_it_starts(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    async with staged_behind(make_settings, start_worker, 1.5) as at:
        staged = await at.stage(seconds=0)
        assert await at.client.cancel(staged) == "requested"
        record = await at.client.wait(staged, timeout=8)
        assert record is not None and record.status.value == "cancelled" and record.attempts == 0
        await at.first_succeeds()
    assert at.sleeper.runs == {at.first: 1}


async def test_a_staged_task_whose_deadline_passes_while_it_waits_is_dead_lettered_without_an_attempt(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    # Admitted at its claim (1.5 s before its deadline), then staged behind a 2.5 s task: when the slot frees, its
    # deadline has passed. It used to start anyway with a 1 ms time limit (an HTTP task's request could go out).
    async with staged_behind(make_settings, start_worker, 2.5) as at:
        late = await at.stage(seconds=0, deadline=time.time() + 1.5)
        record = await at.client.wait(late, timeout=8)
        assert record is not None and record.status.value == "dead" and record.dead_reason == "deadline"
        assert record.error is not None and "passed before attempt 1 could start" in record.error.message
        await at.first_succeeds()
    assert at.sleeper.runs == {at.first: 1}


async def test_a_pause_puts_staged_tasks_back_and_starts_none_of_them(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], aredis: Any
) -> None:
    # The worker claims nothing while the first task runs (no claim would tell it of the pause), yet the staged task
    # must not start once the queue is paused: it goes back to the head of the queue, unchanged, and runs after the
    # resume. It used to start when the slot freed.
    async with staged_behind(make_settings, start_worker, 3) as at:
        second = await at.stage(seconds=0)
        await at.client.inspect.pause(at.queue)
        holdings = at.worker.holdings
        await async_wait_until(lambda: not holdings.staged and second not in holdings.tasks, what="it put back")
        assert [codec.loads(raw)["id"] for raw in await aredis.lrange(at.queue, 0, -1)] == [second]
        await at.first_succeeds()
        assert second not in at.sleeper.runs and await at.client.result(second) is None  # not while paused
        await at.client.inspect.resume(at.queue)
        record = await at.client.wait(second, timeout=8)
        assert record is not None and record.status.value == "succeeded" and record.attempts == 1
    assert at.sleeper.runs == {at.first: 1, second: 1}


@pytest.mark.parametrize("how", [signal.SIGTSTP, signal.SIGTERM], ids=["quiet", "stop"])
def test_quiet_and_stop_put_staged_tasks_back_at_once(
    how: signal.Signals,
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    worker_process: Callable[..., Any],
    loopback: LoopbackServer,
) -> None:
    config = worker_config(tmp_path, redis_url, queue_name, concurrency=1, prefetch=1)
    proc = worker_process(["run", "-c", str(config)])
    wait_until(lambda: "started: queue" in proc.output, what="worker start")
    keys = QueueKeys(queue_name)
    waiting = codec.dumps({"id": "waiting", "url": loopback.url("/ok")})
    sync_redis.rpush(queue_name, codec.dumps({"id": "running", "url": loopback.url("/slow?seconds=3")}), waiting)
    wait_until(lambda: loopback.count("running") == 1, what="the first task to start")
    wait_until(lambda: sync_redis.hlen(keys.inflight) == 2, what="the second task claimed ahead")
    proc.signal(how)
    # Back at the head, unchanged (no attempt counted), while the running task still runs (a stop's grace period).
    wait_until(lambda: sync_redis.lrange(queue_name, 0, -1) == [waiting], timeout=1.5, what="the staged task back")
    assert loopback.count("waiting") == 0 and not sync_redis.get(keys.result("running"))
    if how == signal.SIGTSTP:
        proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert sync_redis.lrange(queue_name, 0, -1) == [waiting]
