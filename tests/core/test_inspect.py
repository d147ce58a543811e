"""The inspection API on a real Redis and real workers: queue sizes and latency, pages, workers and their running
tasks, a task found in each state, per-minute counters and totals, and pause/resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from gopherq import AsyncClient, Client, Event
from gopherq.core.inspect import Inspector
from gopherq.core.keys import QueueKeys
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings
from gopherq.plugins.stream_sink import StreamSink, StreamSinkSettings
from tests.support.common import async_wait_until
from tests.support.plugins import ExecutorPlugin, FailExecutor, GateExecutor, NoopExecutor

SECRET = "Bearer s3cr3t-value"


def plugins_for(**executors: Any) -> dict[str, Any]:
    return {name: ExecutorPlugin(name, executor) for name, executor in executors.items()}


def client_for(settings: Settings, extra: dict[str, Any]) -> AsyncClient:
    return AsyncClient(settings, plugins=load_plugins(settings, extra=extra))


async def test_queue_counts_latency_and_pages(make_settings: Callable[..., Settings], queue_name: str) -> None:
    settings = make_settings(masking={"headers": ["X-Api-Key"]})
    async with AsyncClient(settings) as client:
        ids = [
            await client.enqueue_http(
                f"https://user:pw@example.com/item/{n}?token=abc",
                headers={"X-Api-Key": SECRET},
                id=f"r{n}",
            )
            for n in range(7)
        ]
        await client.enqueue_http("https://example.com/later", id="d1", delay=600)
        await client.enqueue_http("https://example.com/later", id="d2", delay=300)
        inspect = client.inspect
        info = await inspect.queue(queue_name)
        assert (info.ready, info.delayed, info.running, info.dead) == (7, 2, 0, 0)
        assert info.latency > 0.0 and not info.paused and info.workers == 0
        assert info.totals == {"processed": 0, "succeeded": 0, "failed": 0, "retried": 0, "dead": 0}
        assert queue_name in await inspect.queue_names()

        page = await inspect.ready(queue_name, offset=2, limit=3)
        assert page.total == 7 and (page.offset, page.limit) == (2, 3)
        assert [item.id for item in page.items] == ids[2:5]
        first = page.items[0]
        assert first.state == "ready" and first.type == "http" and first.enqueued_at is not None
        assert first.summary.startswith("GET https://user:********@example.com/item/2")
        assert "abc" not in first.summary and "pw" not in first.summary

        delayed = await inspect.delayed(queue_name)
        assert [item.id for item in delayed.items] == ["d2", "d1"]  # soonest first
        assert delayed.items[0].due_at is not None and delayed.items[0].due_at > time.time() + 200
        assert page.to_dict()["items"][0]["id"] == "r2"

        ready_task = await inspect.task(queue_name, "r5")
        assert ready_task is not None and ready_task.state == "ready"
        assert ready_task.envelope is not None and ready_task.envelope["headers"]["X-Api-Key"] == "********"
        delayed_task = await inspect.task(queue_name, "d1")
        assert delayed_task is not None and delayed_task.state == "delayed"
        assert await inspect.task(queue_name, "nope") is None
        assert SECRET not in str(ready_task.to_dict())


async def test_running_tasks_workers_and_outcomes(
    make_settings: Callable[..., Settings], start_worker: Any, queue_name: str
) -> None:
    settings = make_settings(worker={"concurrency": 4})
    gate = GateExecutor()
    extra = plugins_for(gate=gate, noop=NoopExecutor(), fail=FailExecutor())
    async with client_for(settings, extra) as client:
        inspect = client.inspect
        await client.enqueue("gate", id="held-1")
        await client.enqueue("gate", id="held-2")
        running = await start_worker(settings, extra)
        worker_id = running.worker.id
        await async_wait_until(lambda: gate.started == 2, what="both held tasks started")

        async def listed() -> Any:
            page = await inspect.running(queue_name)
            return page if page.total == 2 and all(item.worker for item in page.items) else None

        page = await async_wait_until(listed, what="running tasks listed with their worker")
        assert {item.id for item in page.items} == {"held-1", "held-2"}
        assert all(item.worker == worker_id and item.since is not None for item in page.items)
        assert all(item.since is not None and item.since <= time.time() for item in page.items)

        task = await inspect.task(queue_name, "held-1")
        assert task is not None and task.state == "running" and task.worker == worker_id
        assert task.since is not None and task.envelope is not None and task.envelope["id"] == "held-1"

        [worker] = await inspect.workers(queue_name)
        assert worker.id == worker_id and worker.alive and worker.concurrency == 4 and worker.pid is not None
        assert worker.host and worker.started is not None and worker.started <= worker.last_heartbeat
        assert {task.task_id for task in worker.running} == {"held-1", "held-2"}
        assert (await inspect.queue(queue_name)).workers == 1

        ok = [await client.enqueue("noop", id=f"ok-{n}") for n in range(2)]
        await client.enqueue("fail", id="bad")
        gate.gate.set()

        async def settled() -> Any:
            info = await inspect.queue(queue_name)
            return info if info.totals["processed"] == 5 else None

        info = await async_wait_until(settled, what="five outcomes counted")
        assert info.totals == {"processed": 5, "succeeded": 4, "failed": 1, "retried": 0, "dead": 1}
        minutes = await inspect.throughput(queue_name, minutes=5)
        assert len(minutes) == 5 and int(time.time()) // 60 * 60 - 60 <= minutes[-1].minute <= time.time()
        assert sum(m.succeeded for m in minutes) == 4 and sum(m.dead for m in minutes) == 1
        assert sum(m.processed for m in minutes) == 5 and sum(m.failed for m in minutes) == 1
        assert [m.minute for m in minutes] == sorted(m.minute for m in minutes)

        done = await inspect.task(queue_name, ok[0])
        assert done is not None and done.state == "succeeded" and done.result is not None
        dead = await inspect.task(queue_name, "bad")
        assert dead is not None and dead.state == "dead" and dead.dead_letter is not None
        assert dead.envelope is not None and dead.envelope["type"] == "fail"
        dead_page = await inspect.dead(queue_name)
        assert dead_page.total == 1 and dead_page.items[0].task_id == "bad"
        assert dead_page.items[0].reason == "non_retryable" and "no such thing" in dead_page.items[0].error
        assert await client.dead_letters.purge() == 1
        failed = await inspect.task(queue_name, "bad")
        assert failed is not None and failed.state == "dead"  # its dead letter is gone; its record says dead

        await running.stop()
        assert await inspect.workers(queue_name) == []  # a clean stop deregisters


async def test_pause_stops_claiming_and_resume_restarts(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    extra = plugins_for(noop=NoopExecutor())
    async with client_for(settings, extra) as client:
        inspect = client.inspect
        await inspect.pause(queue_name)
        assert (await inspect.queue(queue_name)).paused
        running = await start_worker(settings, extra)
        await async_wait_until(lambda: running.worker.fetcher.was_paused, what="the worker to see the pause")
        await client.enqueue_many([client.task("noop", id=f"p{n}") for n in range(5)])
        # Several claim polls pass while paused: nothing is taken (not even into the worker's processing list).
        for _ in range(4):
            await asyncio.sleep(0.5)
            assert (await inspect.queue(queue_name)).ready == 5
        assert await aredis.llen(QueueKeys(queue_name).processing(running.worker.id)) == 0
        await inspect.resume(queue_name)

        async def drained() -> bool:
            info = await inspect.queue(queue_name)
            return info.ready == 0 and info.totals["succeeded"] == 5 and not info.paused

        await async_wait_until(drained, what="the queue to drain after resume")


def test_sync_client_exposes_the_inspector(make_settings: Callable[..., Settings], queue_name: str) -> None:
    with Client(make_settings()) as client:
        client.enqueue_http("https://example.com/", id="s1")
        info = client.inspect.queue(queue_name)
        assert info.ready == 1 and info.to_dict()["ready"] == 1
        assert client.inspect.task(queue_name, "s1").state == "ready"


async def test_events_pages_latest_task_filter_and_follow(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sink = StreamSink(settings, StreamSinkSettings())
    await sink.open()

    def event(n: int) -> Event:
        return Event("task.started", time.time(), worker="w", queue=queue_name, task_id=f"t{n % 3}", data={"n": n})

    try:
        await sink.handle([event(n) for n in range(30)])
        inspector = Inspector(aredis, settings)
        first = await inspector.events(queue_name, count=10)
        assert [e.data["n"] for e in first] == list(range(10))
        second = await inspector.events(queue_name, after=first[-1].id, count=10)
        assert [e.data["n"] for e in second] == list(range(10, 20))
        latest = await inspector.events(queue_name, count=5, latest=True)
        assert [e.data["n"] for e in latest] == list(range(25, 30))
        only = await inspector.events(queue_name, count=4, task_id="t1")
        assert [e.data["n"] for e in only] == [1, 4, 7, 10] and {e.task_id for e in only} == {"t1"}
        start = await inspector.last_event_id(queue_name)
        assert start == latest[-1].id

        async def collect() -> list[int]:
            seen = []
            async for item in inspector.follow(queue_name, after=start, task_id="t2", block=0.2):
                seen.append(item.data["n"])
                if len(seen) == 2:
                    return seen
            return seen

        follower = asyncio.create_task(collect())
        await sink.handle([event(n) for n in range(30, 36)])
        assert await asyncio.wait_for(follower, 10) == [32, 35]
    finally:
        await sink.close()
