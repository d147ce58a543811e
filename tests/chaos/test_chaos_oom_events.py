"""Events are not lost when Redis refuses writes. An outcome's event is written by the settle that records the
outcome, so it lands exactly when the outcome does: the chaos test drains 5,000 tasks through a real worker process
while its Redis refuses writes (out of memory under `noeviction`) for 5 s, and finds every `task.succeeded` in the
stream afterwards, once each. The other events go through the stream sink, which holds a refused batch in its
bounded buffer and retries it, like a lost connection: the quick tests drive the sink and its bus channel directly
against a private Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from gopherq import redis_unavailable
from gopherq.core import codec
from gopherq.core.events import Event, EventBus
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from gopherq.plugins.stream_sink import StreamSink, StreamSinkSettings
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_stats
from tests.support.common import async_wait_until, wait_until, write_config
from tests.support.redis_servers import PrivateRedis

TASKS = 5000
REFUSAL = 5.0
CONCURRENCY = 20
PAUSE_MS = 30  # per task: the drain takes several seconds on two shared cores, so the refusal falls inside it

#: A worker process with an executor `pause` that waits `ms` milliseconds: cheap, and the drain stays observable.
PAUSE_WORKER = """
import asyncio
import sys

from gopherq import hookimpl, load_settings
from gopherq.core.runner import configure_logging, run_worker


class Pause:
    async def execute(self, task, context):
        await asyncio.sleep(task.fields.get("ms", 0) / 1000)


class PausePlugin:
    @hookimpl
    def gopherq_register_executors(self, register, settings):
        register("pause", Pause())


settings = load_settings(sys.argv[1])
configure_logging(settings.logging.level)
sys.exit(run_worker(settings, extra_plugins={"pause": PausePlugin()}))
"""


def refuse_writes(client: redis.Redis) -> None:
    """Out of memory under noeviction: every command that may grow memory is refused from now on."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"])


def accept_writes(client: redis.Redis) -> None:
    client.config_set("maxmemory", 0)


def succeeded_in_stream(client: redis.Redis, queue: str) -> set[str]:
    """The ids of the tasks whose `task.succeeded` event is in the queue's stream."""
    return set(succeeded_entries(client, queue))


def succeeded_entries(client: redis.Redis, queue: str) -> list[str]:
    """The task id of every `task.succeeded` entry in the queue's stream, in stream order (repeats kept)."""
    key = QueueKeys(queue).events
    seen: list[str] = []
    start = "-"
    while True:
        entries = client.xrange(key, start, "+", count=5000)
        for _entry_id, fields in entries:
            event = codec.loads(fields[b"event"])
            if event["event"] == "task.succeeded":
                seen.append(event["task_id"])
        if len(entries) < 5000:
            return seen
        start = "(" + entries[-1][0].decode()


@pytest.mark.chaos
def test_no_event_is_lost_while_redis_refuses_writes_for_five_seconds(
    tmp_path: Path, queue_name: str, private_redis: Callable[..., PrivateRedis], fleet: Fleet
) -> None:
    server = private_redis("--maxmemory-policy", "noeviction")
    # Leases outlast the refusal (heartbeats are refused too), so no task is recovered and run twice meanwhile.
    config = chaos_config(tmp_path, server.url, queue_name, worker={"concurrency": CONCURRENCY, "lease_timeout": 15.0})
    script = write_config(tmp_path, PAUSE_WORKER, "pause_worker.py")
    client = redis.Redis.from_url(server.url)
    ids = [f"e{n:05d}" for n in range(TASKS)]
    client.rpush(queue_name, *(codec.dumps({"id": task_id, "type": "pause", "ms": PAUSE_MS}) for task_id in ids))
    worker = fleet.start(config, script)

    def acked() -> int:
        return queue_stats(client, queue_name).get("acked", 0)

    wait_until(lambda: acked() >= TASKS // 5, timeout=60, what="a fifth of the tasks done")
    refuse_writes(client)
    acked_before = acked()
    refused_at = time.monotonic()
    time.sleep(REFUSAL)  # the fault itself: Redis refuses writes for this long
    acked_during = acked() - acked_before
    accept_writes(client)
    in_stream_at_restore = len(succeeded_in_stream(client, queue_name))

    wait_until(lambda: acked() >= TASKS, timeout=120, what="every task done")
    seen = wait_until(
        lambda: (found := succeeded_in_stream(client, queue_name)) >= set(ids) and found,
        timeout=60,
        what="every task.succeeded event in the stream",
    )
    recovered_after = time.monotonic() - refused_at - REFUSAL
    info = client.xinfo_stream(QueueKeys(queue_name).events)
    assert seen == set(ids)
    assert len(succeeded_entries(client, queue_name)) == TASKS  # each once: a settle sent again writes none again
    assert info["entries-added"] == info["length"] < StreamSinkSettings().maxlen  # the cap trimmed nothing

    worker.signal(15)
    assert worker.wait(30) == 0
    output = worker.output
    assert "Traceback" not in output and "failed on a batch" not in output, output
    summary = next(line for line in output.splitlines() if "event sink stream:" in line)
    assert " dropped=0 " in summary and " failed_events=0 " in summary, summary
    print_figures(
        "stream sink under 5 s of maxmemory refusal",
        {
            "tasks": TASKS,
            "acked while Redis refused writes": acked_during,
            "task.succeeded in the stream when writes resumed": in_stream_at_restore,
            "task.succeeded in the stream at the end": len(seen),
            "seconds from the end of the refusal to every event in the stream": recovered_after,
            "sink summary": summary.split("event sink stream: ", 1)[1],
        },
    )
    client.close()


# -- the sink and its channel, driven directly --------------------------------------------------------------------


def sink_settings(make_settings: Callable[..., Settings], server: PrivateRedis) -> Settings:
    return make_settings(redis={"url": server.url})


def events(queue: str, count: int, start: int = 0) -> list[Event]:
    return [Event("task.succeeded", time.time(), "w", queue, f"t{n}") for n in range(start, start + count)]


async def test_a_refused_batch_is_held_and_written_once_redis_takes_writes_again(
    make_settings: Callable[..., Settings],
    private_redis: Callable[..., PrivateRedis],
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = private_redis()
    admin = redis.Redis.from_url(server.url)
    sink = StreamSink(sink_settings(make_settings, server), StreamSinkSettings())
    await sink.open()
    try:
        refuse_writes(admin)
        with caplog.at_level(logging.INFO, logger="gopherq"):
            writing = asyncio.create_task(sink.handle(events(queue_name, 10)))
            await async_wait_until(lambda: sink.retries >= 3, what="three refused tries")
            assert not writing.done() and admin.xlen(QueueKeys(queue_name).events) == 0
            accept_writes(admin)
            await asyncio.wait_for(writing, 10)
        assert admin.xlen(QueueKeys(queue_name).events) == 10
        assert sink.stats()["written"] == 10
        lines = [(record.levelname, record.getMessage()) for record in caplog.records]
        assert [level for level, message in lines if "stream sink" in message] == ["WARNING", "INFO"], lines
        assert "OutOfMemoryError" in lines[0][1] and not any(record.exc_info for record in caplog.records)
    finally:
        accept_writes(admin)
        await sink.close()
        admin.close()


async def test_a_read_only_replica_is_waited_out_until_it_is_promoted(
    make_settings: Callable[..., Settings], private_redis: Callable[..., PrivateRedis], queue_name: str
) -> None:
    """After a failover a client can still be talking to the old master, now a replica: READONLY is a refusal for
    now, like OOM, and the batch is written once the server takes writes again."""
    primary = private_redis()
    replica = private_redis("--replicaof", "127.0.0.1", str(primary.port))
    admin = redis.Redis.from_url(replica.url)
    sink = StreamSink(sink_settings(make_settings, replica), StreamSinkSettings())
    await sink.open()
    try:
        writing = asyncio.create_task(sink.handle(events(queue_name, 4)))
        await async_wait_until(lambda: sink.retries >= 2, what="two refused tries")
        assert not writing.done()
        admin.replicaof("NO", "ONE")  # promoted
        await asyncio.wait_for(writing, 10)
        assert admin.xlen(QueueKeys(queue_name).events) == 4
    finally:
        await sink.close()
        admin.close()


@pytest.mark.parametrize(
    ("error", "held"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'"), True),
        (ReadOnlyError("You can't write against a read only replica."), True),
        (BusyLoadingError("Redis is loading the dataset in memory"), True),
        (
            ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"),
            True,
        ),
        (RedisConnectionError("Connection refused"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (ResponseError("ERR Error running script"), False),
        (ValueError("not Redis at all"), False),
    ],
)
def test_which_errors_mean_try_again_later(error: Exception, held: bool) -> None:
    assert redis_unavailable(error) is held


async def test_an_error_that_is_the_batchs_own_fails_it_at_once(
    make_settings: Callable[..., Settings], private_redis: Callable[..., PrivateRedis], queue_name: str
) -> None:
    """Only "Redis cannot take it now" is waited out: a wrong-type key is not going to change by retrying."""
    server = private_redis()
    admin = redis.Redis.from_url(server.url)
    admin.set(QueueKeys(queue_name).events, "not a stream")
    sink = StreamSink(sink_settings(make_settings, server), StreamSinkSettings())
    await sink.open()
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await sink.handle(events(queue_name, 3))
        assert sink.retries == 0
    finally:
        await sink.close()
        admin.close()


async def test_every_event_is_written_or_counted_as_dropped_by_the_full_buffer(
    make_settings: Callable[..., Settings], private_redis: Callable[..., PrivateRedis], queue_name: str
) -> None:
    """While a refused batch is held, newer events wait in the sink's bounded buffer; what overflows it is
    counted, never silently lost: written + dropped = emitted."""
    server = private_redis()
    admin = redis.Redis.from_url(server.url)
    sink = StreamSink(sink_settings(make_settings, server), StreamSinkSettings())
    bus = EventBus()
    channel = bus.add_sink("stream", sink, buffer_size=50, batch_size=20)
    bus.start()
    try:
        refuse_writes(admin)
        for event in events(queue_name, 20):
            bus.publish(event)
        await async_wait_until(lambda: sink.retries >= 1, what="the first batch refused")
        for event in events(queue_name, 200, start=20):
            bus.publish(event)
        assert channel.dropped == 150  # 20 held by the sink, the newest 50 in the buffer
        accept_writes(admin)
        await async_wait_until(lambda: channel.delivered == 70, what="the held batch and the buffer written")
        assert admin.xlen(QueueKeys(queue_name).events) == 70 == 220 - channel.dropped
        assert channel.stats()["written"] == 70 and channel.stats()["write_retries"] >= 1
    finally:
        accept_writes(admin)
        await bus.close(timeout=5)
        admin.close()


async def test_events_held_at_shutdown_are_counted_as_dropped(
    make_settings: Callable[..., Settings], private_redis: Callable[..., PrivateRedis], queue_name: str
) -> None:
    """A worker that stops while Redis still refuses gives up after the bus's close timeout; the batch the sink
    held is counted with the rest of the buffer."""
    server = private_redis()
    admin = redis.Redis.from_url(server.url)
    sink = StreamSink(sink_settings(make_settings, server), StreamSinkSettings())
    bus = EventBus()
    channel = bus.add_sink("stream", sink, buffer_size=100, batch_size=10)
    bus.start()
    try:
        refuse_writes(admin)
        for event in events(queue_name, 10):
            bus.publish(event)
        await async_wait_until(lambda: sink.retries >= 1, what="the first batch refused")
        for event in events(queue_name, 5, start=10):
            bus.publish(event)
        await bus.close(timeout=0.5)
        assert channel.dropped == 15 and channel.delivered == 0
    finally:
        accept_writes(admin)
        admin.close()
