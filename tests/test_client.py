"""The Python API: `AsyncClient` and `Client` enqueue validated tasks (many in one round trip) and read results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from pytest_httpserver import HTTPServer

from gopherq import AsyncClient, Client, Settings, TaskRejected, TaskStatus, load_settings
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.support.common import write_config


async def ready(aredis: aioredis.Redis, queue: str) -> list[dict[str, Any]]:
    return [codec.loads(raw) for raw in await aredis.lrange(queue, 0, -1)]


async def test_enqueue_http_builds_the_envelope_a_worker_reads(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    async with AsyncClient(make_settings()) as client:
        task_id = await client.enqueue_http(
            "http://127.0.0.1:9/hook", "POST", headers={"X-A": "b"}, body={"n": 1}, id="mine", max_attempts=2
        )
    assert task_id == "mine"
    [envelope] = await ready(aredis, queue_name)
    assert envelope["id"] == "mine"
    assert envelope["type"] == "http"
    assert envelope["method"] == "POST"
    assert envelope["url"] == "http://127.0.0.1:9/hook"
    assert envelope["headers"] == {"X-A": "b"}
    assert envelope["body"] == {"n": 1}
    assert envelope["max_attempts"] == 2
    assert envelope["created_at"] == pytest.approx(time.time(), abs=60)


async def test_enqueue_many_in_one_pipeline_across_queues_and_delays(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    other = f"{queue_name}_other"
    try:
        async with AsyncClient(make_settings()) as client:
            tasks = [client.http(f"http://127.0.0.1:9/{i}") for i in range(5)]
            tasks.append(client.http("http://127.0.0.1:9/other", queue=other))
            tasks.append(client.http("http://127.0.0.1:9/later", delay=60))
            ids = await client.enqueue_many(tasks)
        assert ids == [task.id for task in tasks]
        assert [t["id"] for t in await ready(aredis, queue_name)] == ids[:5]
        assert [t["id"] for t in await ready(aredis, other)] == [ids[5]]
        delayed: list[Any] = await aredis.zrange(QueueKeys(queue_name).delayed, 0, -1, withscores=True)
        assert len(delayed) == 1
        raw, due = delayed[0]
        assert codec.loads(raw)["id"] == ids[6]
        assert due == pytest.approx((time.time() + 60) * 1000, abs=10_000)
    finally:
        await aredis.delete(other)


async def test_enqueue_many_sends_one_rpush_per_queue(tmp_path: Path, embedded_server: Callable[[Path], Any]) -> None:
    """On a private (embedded) Redis, so the command statistics are this test's alone."""
    config = write_config(tmp_path, "[queue]\nname = 'bulk'\n")
    settings = load_settings(config, environ={})
    embedded_server(settings.data_dir)  # stopped at teardown should the test fail half-way
    async with AsyncClient(settings) as client:
        await client.redis.config_resetstat()
        await client.enqueue_many([client.http(f"http://127.0.0.1:9/{i}") for i in range(100)])
        stats = await client.redis.info("commandstats")
        assert stats["cmdstat_rpush"]["calls"] == 1
        assert await client.redis.llen("bulk") == 100


@pytest.mark.parametrize(
    ("build", "reason", "named"),
    [
        (lambda c: c.http("ftp://127.0.0.1/"), "schema_invalid", "url"),
        (lambda c: c.http("http://127.0.0.1/", "BREW"), "schema_invalid", "method"),
        (lambda c: c.task("nope", url="http://127.0.0.1/"), "unknown_type", "'nope'"),
        (lambda c: c.http("http://127.0.0.1/", body="x" * 2_000_000), "too_large", "max_payload_bytes"),
    ],
)
async def test_bad_tasks_are_refused_before_redis(
    make_settings: Callable[..., Settings],
    aredis: aioredis.Redis,
    queue_name: str,
    build: Callable[[AsyncClient], Any],
    reason: str,
    named: str,
) -> None:
    async with AsyncClient(make_settings()) as client:
        with pytest.raises(TaskRejected) as caught:
            await client.enqueue_many([build(client)])
    assert caught.value.reason == reason
    assert named in caught.value.message
    assert await aredis.llen(queue_name) == 0


async def test_result_of_an_unknown_task_is_none(make_settings: Callable[..., Settings]) -> None:
    async with AsyncClient(make_settings()) as client:
        assert await client.result("no-such-task") is None
        assert await client.wait("no-such-task", 0.2) is None


async def test_async_client_reads_the_result_a_worker_stored(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    settings = make_settings()
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(httpserver.url_for("/ok"))
        record = await client.wait(task_id, 10)
    assert record is not None
    assert record.id == task_id
    assert record.status is TaskStatus.SUCCEEDED
    assert record.attempts == 1
    assert record.result["body"] == "fine"
    assert record.duration is not None and record.duration >= 0


async def test_sync_client_enqueues_and_reads_results(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/sync", method="POST").respond_with_json({"sync": True})
    settings = make_settings()
    await start_worker(settings)

    def use_client() -> tuple[list[str], list[Any]]:
        with Client(settings) as client:
            one = client.enqueue_http(httpserver.url_for("/sync"), "POST", body={"a": 1})
            many = client.enqueue_many([client.http(httpserver.url_for("/sync"), "POST") for _ in range(3)])
            ids = [one, *many]
            return ids, [client.wait(task_id, 10) for task_id in ids]

    # The worker runs in this test's event loop; the blocking client runs in a thread beside it.
    ids, records = await asyncio.to_thread(use_client)
    assert len(set(ids)) == 4
    for task_id, record in zip(ids, records, strict=True):
        assert record is not None and record.id == task_id
        assert record.status is TaskStatus.SUCCEEDED
        assert record.result["status_code"] == 200


def test_sync_client_from_a_config_file(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    config = write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n")
    with Client(config=str(config)) as client:
        task_id = client.enqueue_http("http://127.0.0.1:9/")
        assert client.result(task_id) is None
    plain = redis.Redis.from_url(redis_url)
    try:
        assert codec.loads(plain.lindex(queue_name, 0))["id"] == task_id  # type: ignore[arg-type]
    finally:
        plain.close()


async def test_closing_the_last_client_stops_the_embedded_server(
    tmp_path: Path, embedded_server: Callable[[Path], Any]
) -> None:
    settings = load_settings(write_config(tmp_path, ""), environ={})
    embedded = embedded_server(settings.data_dir)
    async with AsyncClient(settings) as first:
        await first.enqueue_http("http://127.0.0.1:9/")
        async with AsyncClient(settings) as second:
            assert await second.redis.llen("my_tasks_queue") == 1
        assert embedded.is_running()  # `first` still uses it
    assert not embedded.is_running()
    async with AsyncClient(settings) as again:  # restarted from its append-only file
        assert await again.redis.llen("my_tasks_queue") == 1
