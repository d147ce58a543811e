"""The dead-letter queue: what an entry keeps, the size cap, requeue (id kept, attempts reset), the Python client
and the `gopherq dlq` commands (run as real subprocesses), and the events a requeue emits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient, Client
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.deadletters import DeadLetters
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings
from tests.support.common import GOPHERQ, async_wait_until
from tests.support.loopback import LoopbackServer
from tests.support.plugins import CaptureSink, SinkPlugin


async def dead_count(aredis: aioredis.Redis, queue: str, count: int, timeout: float = 10.0) -> None:
    keys = Broker(aredis, queue).keys

    async def enough() -> bool:
        return int(await aredis.zcard(keys.dead_index)) >= count

    await async_wait_until(enough, timeout=timeout, what=f"{count} dead letters")


async def final(aredis: aioredis.Redis, queue: str, task_id: str) -> dict[str, Any]:
    broker = Broker(aredis, queue)

    async def done() -> dict[str, Any] | None:
        record = await broker.get_result(task_id)
        return record if record is not None and record["status"] != "retrying" else None

    result: dict[str, Any] = await async_wait_until(done, what=f"final result of {task_id}")
    return result


def gopherq(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `gopherq` CLI on the test's Redis and queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME"))}
    assert settings.redis.url is not None
    env.update({"GOPHERQ_REDIS__URL": settings.redis.url, "GOPHERQ_QUEUE__NAME": settings.queue.name})
    return subprocess.run(
        [GOPHERQ, *args], env=env, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(gopherq, settings, *args)


async def test_the_cap_trims_the_oldest_and_counts_them(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    await aredis.rpush(queue_name, *(f"not json {i}".encode() for i in range(8)))
    settings = make_settings(queue={"dead_letter_max": 5})
    await start_worker(settings)
    broker = Broker(aredis, queue_name)
    dead = DeadLetters(broker)

    async def trimmed() -> bool:
        return await dead.trimmed() == 3

    await async_wait_until(trimmed, what="3 dead letters trimmed")
    assert await dead.count() == 5
    entries = await dead.list(limit=100)
    assert [entry["raw"] for entry in entries] == [f"not json {i}" for i in (7, 6, 5, 4, 3)]  # newest first
    assert await aredis.hlen(broker.keys.dead) == 5  # the trimmed entries are gone, not just unindexed


async def test_requeue_keeps_the_id_and_resets_attempts(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    settings = make_settings(queue={"max_attempts": 2, "backoff_min": 0.01, "backoff_max": 0.02})
    await start_worker(settings)
    url = loopback.url("/flaky/2?status=503")  # two failures (all the attempts), then success
    await aredis.rpush(queue_name, codec.dumps({"id": "second-chance", "url": url, "header": {"X-A": "b"}}))
    record = await final(aredis, queue_name, "second-chance")
    assert (record["status"], record["dead_reason"], record["attempts"]) == ("dead", "retries_exhausted", 2)
    async with AsyncClient(settings) as client:
        [entry] = await client.dead_letters.list()
        assert entry["id"] == "second-chance" and entry["task_id"] == "second-chance"
        assert entry["attempts"] == 2 and entry["error"]["details"]["status_code"] == 503
        assert codec.loads(entry["raw"])["attempt"] == 2
        await client.broker().redis.delete(client.broker().keys.result("second-chance"))
        assert await client.dead_letters.requeue(["second-chance", "no-such-entry"]) == 1
    record = await final(aredis, queue_name, "second-chance")
    assert (record["status"], record["attempts"]) == ("succeeded", 1)  # a fresh start under the same id
    assert loopback.count("second-chance") == 3
    assert await DeadLetters(Broker(aredis, queue_name)).count() == 0


async def test_a_task_pushed_without_id_is_requeued_with_the_id_it_was_given(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    await start_worker(make_settings())
    await aredis.rpush(queue_name, b'{"type": "nope", "x": []}')
    await dead_count(aredis, queue_name, 1)
    dead = DeadLetters(Broker(aredis, queue_name))
    [entry] = await dead.list()
    assert entry["reason"] == "unknown_type" and entry["raw"] == '{"type": "nope", "x": []}'  # bytes as received
    assert await dead.requeue() == 1
    await dead_count(aredis, queue_name, 1)  # unknown type again: dead again, under the same task id
    [again] = await dead.list()
    assert again["task_id"] == entry["task_id"] and codec.loads(again["raw"])["x"] == []


async def test_two_tasks_with_the_same_id_are_two_dead_letters(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    await aredis.rpush(queue_name, b'{"id": "dup", "type": "nope"}', b'{"id": "dup", "type": "nope", "n": 2}')
    await start_worker(make_settings())
    await dead_count(aredis, queue_name, 2)
    entries = await DeadLetters(Broker(aredis, queue_name)).list()
    assert {entry["task_id"] for entry in entries} == {"dup"} and len({entry["id"] for entry in entries}) == 2


async def test_the_dlq_commands(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    await aredis.rpush(queue_name, b'{"id": "a", "type": "nope"}', b'{"id": "b", "url": 5}', b"{oops")
    await start_worker(settings)
    await dead_count(aredis, queue_name, 3)

    listed = await cli(settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    by_reason = {entry["reason"]: entry for entry in entries}
    assert set(by_reason) == {"unknown_type", "schema_invalid", "parse_error"}
    raw_id = by_reason["parse_error"]["id"]

    text = await cli(settings, "dlq", "list")
    assert text.returncode == 0 and "schema_invalid" in text.stdout and "3 of 3 dead letters" in text.stderr

    shown = await cli(settings, "dlq", "show", "b", "--json")
    assert json.loads(shown.stdout)["error"]["message"] == "http task: field 'url': Input should be a valid string"
    human = await cli(settings, "dlq", "show", raw_id)
    assert human.returncode == 0 and "parse_error" in human.stdout and "{oops" in human.stdout
    missing = await cli(settings, "dlq", "show", "nope", "--json")
    assert missing.returncode == 1 and "no dead letter nope" in missing.stderr

    requeued = await cli(settings, "dlq", "requeue", "a", "nope", "--json")
    assert requeued.returncode == 1 and json.loads(requeued.stdout) == {"requeued": 1, "not_found": 1}
    await dead_count(aredis, queue_name, 3)  # `a` came back and died again
    usage = await cli(settings, "dlq", "requeue")
    assert usage.returncode == 2 and "give entry ids or --all" in usage.stderr

    purged = await cli(settings, "dlq", "purge", "--yes", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout) == {"purged": 3}
    empty = await cli(settings, "dlq", "list", "--json")
    assert json.loads(empty.stdout) == []


async def test_requeue_all_from_the_cli(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    await aredis.rpush(queue_name, *(codec.dumps({"id": f"t{i}", "type": "nope"}) for i in range(3)))
    running = await start_worker(settings)
    await dead_count(aredis, queue_name, 3)
    await running.stop()
    done = await cli(settings, "dlq", "requeue", "--all")
    assert done.returncode == 0 and done.stdout.strip() == "requeued 3"
    ready = [codec.loads(raw)["id"] for raw in await aredis.lrange(queue_name, 0, -1)]
    assert sorted(ready) == ["t0", "t1", "t2"]


async def test_the_client_emits_enqueued_and_requeued_events_to_its_sinks(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str, loopback: LoopbackServer
) -> None:
    settings = make_settings()
    sink = CaptureSink()
    plugins = load_plugins(settings, extra={"capture": SinkPlugin(sink)}, sinks=True)
    async with AsyncClient(settings, plugins=plugins, sinks=True) as client:
        ids = await client.enqueue_many([client.http(loopback.url("/ok")), client.http(loopback.url("/ok"), delay=60)])
        # Dead-letter one by hand, as a worker would, then requeue it.
        broker = Broker(aredis, queue_name, "w1")
        [(token, raw)] = await broker.claim(1, 60_000)
        entry = codec.dumps({"task_id": ids[0], "reason": "non_retryable", "raw": raw.decode()})
        assert await broker.settle([Settlement("dead", token, ids[0], b"", entry, ids[0])], 60, 10) == [True]
        assert await client.dead_letters.requeue() == 1
    # close() flushed the sink.
    enqueued = sink.named("task.enqueued")
    assert [event.task_id for event in enqueued] == ids
    assert enqueued[0].queue == queue_name and "eta" in enqueued[1].data and not enqueued[0].data
    [requeued] = sink.named("task.requeued")
    assert requeued.task_id == ids[0] and requeued.data == {"entry_id": ids[0]} and requeued.queue == queue_name


def test_the_sync_client_manages_dead_letters(make_settings: Callable[..., Settings], sync_redis: Any) -> None:
    settings = make_settings()
    with Client(settings) as client:
        dead = client.dead_letters
        assert dead.count() == 0 and dead.list() == []
        queue = settings.queue.name
        sync_redis.hset(
            f"gopherq:{{{queue}}}:dead", "x", codec.dumps({"task_id": "x", "reason": "poison", "raw": "{}"})
        )
        sync_redis.zadd(f"gopherq:{{{queue}}}:dead:index", {"x": 1})
        assert dead.get("x")["reason"] == "poison"
        assert dead.requeue(["x"]) == 1
        assert codec.loads(sync_redis.lpop(queue)) == {"id": "x", "ready_at": pytest.approx(time.time(), abs=60)}
        assert dead.purge() == 0
