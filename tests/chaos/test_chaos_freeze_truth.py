"""Redis faults that leave an outcome unknown, and what GoPherQ says about them.

A private Redis frozen with SIGSTOP: a worker says "Redis not answering" within seconds, once, and "reachable again"
when it wakes, and no settle sent during the freeze is refused as a late ack. A settle whose reply is lost after
Redis ran it (a loopback proxy drops the connection at that moment) is sent again and recognised: the task's
event is emitted once. And the HTTP API answers a POST that a frozen Redis did not confirm with what it knows."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.connection import RedisConnection, command_timeout
from gopherq.core.scripts import load_script
from gopherq.core.settings import Settings, load_settings
from gopherq.web import create_app
from gopherq.web.app import API_AREAS
from tests.chaos.conftest import Fleet, chaos_config, print_figures, queue_sizes, queue_stats, results
from tests.support.common import async_wait_until, wait_until
from tests.support.loopback import LoopbackServer
from tests.support.plugins import CaptureSink, ExecutorPlugin, NoopExecutor, SinkPlugin
from tests.support.redis_servers import PrivateRedis

TASKS = 20
FREEZE = 6.0  # longer than the lease (5 s): before this fix, no line was logged for freezes under ~21 s
LEASE = 5.0


def frozen(server: PrivateRedis) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)


def thawed(server: PrivateRedis) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGCONT)


@pytest.mark.chaos
def test_a_frozen_redis_is_reported_within_seconds_and_settles_sent_during_it_count_once(
    tmp_path: Path,
    queue_name: str,
    private_redis: Callable[..., PrivateRedis],
    fleet: Fleet,
    loopback: LoopbackServer,
) -> None:
    server = private_redis()
    config = chaos_config(
        tmp_path,
        server.url,
        queue_name,
        worker={"concurrency": TASKS, "lease_timeout": LEASE},
        events=("task.succeeded", "task.recovered", "worker.*"),
    )
    worker = fleet.start(config)
    wait_until(lambda: "started: queue" in worker.output, timeout=30, what="worker start")
    client = redis.Redis.from_url(server.url)
    ids = [f"f{i:02d}" for i in range(TASKS)]
    # Each call takes 2 s: they all end, and their outcomes are sent, while Redis is frozen.
    client.rpush(queue_name, *(codec.dumps({"id": t, "url": loopback.url("/slow?seconds=2")}) for t in ids))
    wait_until(lambda: all(loopback.count(t) == 1 for t in ids), what="every task to start")

    frozen(server)
    frozen_at = time.monotonic()
    try:
        wait_until(lambda: "Redis not answering" in worker.output, timeout=FREEZE, what="the warning")
        noticed_after = time.monotonic() - frozen_at
        time.sleep(max(0.0, FREEZE - (time.monotonic() - frozen_at)))  # the rest of the freeze, on purpose
    finally:
        thawed(server)
    wait_until(lambda: "Redis reachable again" in worker.output, timeout=15, what="the all-clear")

    def all_succeeded() -> bool:
        return all((r or {}).get("status") == "succeeded" for r in results(client, queue_name, ids).values())

    wait_until(all_succeeded, timeout=30, what="every task to be recorded as succeeded")
    wait_until(lambda: queue_sizes(client, queue_name)["inflight"] == 0, timeout=30, what="nothing left in flight")

    def succeeded_lines() -> dict[str, int]:
        return {t: len(re.findall(rf"task\.succeeded task={t} ", worker.output)) for t in ids}

    wait_until(lambda: all(succeeded_lines().values()), what="every task.succeeded event to be logged")
    output = worker.output
    stats = queue_stats(client, queue_name)
    client.close()
    print_figures(
        f"Redis frozen with SIGSTOP for {FREEZE:g}s under a worker (lease {LEASE:g}s, 20 tasks ending in it)",
        {
            "command timeout (s)": command_timeout(
                load_settings(None, {"worker": {"lease_timeout": LEASE}}, environ={})
            ),
            "freeze -> 'Redis not answering' logged (s)": noticed_after,
            "'Redis not answering' lines": output.count("Redis not answering"),
            "settles recognised as repeats": stats.get("settles_repeated", 0),
            "refused late settles": stats.get("refused_acks", 0),
            "accepted completions (acked)": stats.get("acked", 0),
            "HTTP calls": sum(loopback.count(t) for t in ids),
            "recovered by the reaper": stats.get("recovered", 0),
        },
    )
    assert output.count("Redis not answering") == 1  # one line per outage, whichever loop saw it first
    # The worker's loops share one outage: one all-clear. The stream sink, a plugin with its own client, says when
    # its writes work again on a line of its own (at most one).
    all_clear = [line for line in output.splitlines() if "Redis reachable again" in line]
    assert len([line for line in all_clear if "stream sink" not in line]) == 1, all_clear
    assert len(all_clear) <= 2, all_clear
    # A settle the worker sent during the freeze may run when Redis wakes up, and then again when the worker resends
    # it: recognised as a repeat (settles_repeated), never refused as a late ack.
    assert stats["acked"] == TASKS and stats.get("refused_acks", 0) == 0
    assert succeeded_lines() == dict.fromkeys(ids, 1)  # every task.succeeded event, exactly once
    assert all(loopback.count(t) == 1 for t in ids)  # nothing ran twice
    assert worker.alive and "Traceback" not in output


# -- the HTTP API on a frozen Redis --------------------------------------------------------------------------------


class Api:
    def __init__(self, server: TestServer, session: ClientSession, queue: str) -> None:
        self.server = server
        self.session = session
        self.path = f"/v1/queues/{queue}/tasks"

    async def post(self, body: dict[str, Any]) -> tuple[int, Any, Any]:
        async with self.session.post(self.server.make_url(self.path), json=body) as response:
            return response.status, await response.json(), response.headers


@pytest.fixture
async def api_on(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """`await api_on(redis_url)`: the `/v1` API on the server's own kind of Redis client (core/connection.py)."""
    opened: list[tuple[RedisConnection, TestServer, ClientSession]] = []

    async def start(url: str) -> Api:
        settings = make_settings(redis={"url": url}, worker={"lease_timeout": 3.0})  # a 1 s command timeout
        connection = RedisConnection(settings, "client")
        server = TestServer(create_app(settings, await connection.open(), areas=API_AREAS), host="127.0.0.1")
        await server.start_server()
        session = ClientSession()
        opened.append((connection, server, session))
        return Api(server, session, settings.queue.name)

    yield start
    for connection, server, session in opened:
        await session.close()
        await server.close()
        await connection.close()


@pytest.mark.chaos
async def test_the_api_answers_a_post_redis_did_not_confirm_with_what_it_knows(
    api_on: Callable[..., Any], private_redis: Callable[..., PrivateRedis], queue_name: str, loopback: LoopbackServer
) -> None:
    server = private_redis()
    api = await api_on(server.url)
    url = loopback.url("/ok")
    assert (await api.post({"id": "warm", "url": url}))[0] == 201  # the script is loaded, a connection is open

    frozen(server)
    try:
        status, body, headers = await api.post({"id": "order-1", "url": url})
        assert status == 503 and headers["Retry-After"] == "1"
        error = body["error"]
        assert error["reason"] == "outcome_unknown" and error["resend_safe"] is True and error["ids"] == ["order-1"]
        assert "may or may not have been created" in error["message"] and "is safe" in error["message"]
        assert "nothing was created" not in error["message"]  # a timeout is not a refusal

        status, body, headers = await api.post({"url": url})  # no id: nothing makes a resend safe
        error = body["error"]
        assert status == 503 and error["reason"] == "outcome_unknown" and error["resend_safe"] is False
        assert "may create them twice" in error["message"] and "Retry-After" not in headers
    finally:
        thawed(server)

    # The frozen Redis ran the first POST's command when it woke up: the resend finds the task and adds none.
    status, body, _ = await api.post({"id": "order-1", "url": url})
    assert (status, body) == (200, {"id": "order-1", "created": False})
    client = redis.Redis.from_url(server.url)
    try:

        def order_ids() -> list[str]:
            return [codec.loads(raw)["id"] for raw in client.lrange(queue_name, 0, -1) if b"order-1" in raw]

        await async_wait_until(order_ids, what="the task")
        assert order_ids() == ["order-1"]  # exactly one
    finally:
        client.close()


# -- a settle whose reply is lost after Redis ran it ---------------------------------------------------------------


class ReplyCutter:
    """A loopback TCP proxy in front of Redis that can lose one reply. Armed with `marker`, it forwards the next
    command that contains it to Redis, then closes the client's connection instead of passing Redis's reply on: what
    a network drop, or Redis dying right after running the command, does to the client."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.marker: bytes | None = None
        self.cuts = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> ReplyCutter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):  # every pipe then ends on its own
            writer.close()
        await async_wait_until(lambda: not self._open, what="the proxy's connections to close")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._open |= {writer, up_writer}
        armed = asyncio.Event()

        async def to_redis() -> None:
            while data := await reader.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    armed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if armed.is_set():  # the reply of the marked command: lost with the connection
                    self.cuts += 1
                    return
                writer.write(data)
                await writer.drain()

        pipes = [asyncio.ensure_future(to_redis()), asyncio.ensure_future(to_client())]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        writer.close()  # the other pipe now ends too
        up_writer.close()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._open -= {writer, up_writer}


@pytest.mark.chaos
async def test_a_settle_resent_after_its_reply_was_lost_is_recognised_and_announced_once(
    private_redis: Callable[..., PrivateRedis], make_settings: Callable[..., Settings], start_worker: Any
) -> None:
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    cutter = await ReplyCutter(server.port).start()
    settings = make_settings(redis={"url": f"redis://127.0.0.1:{cutter.port}/0"})
    connection = RedisConnection(
        settings, "worker"
    )  # the worker's own client: redis-py resends after a lost connection
    sink = CaptureSink()
    try:
        running = await start_worker(
            settings,
            extra_plugins={"noop": ExecutorPlugin("noop", NoopExecutor()), "capture": SinkPlugin(sink)},
            redis_client=await connection.open(),
        )
        broker = Broker(running.worker.redis, settings.queue.name)
        await broker.push([codec.dumps({"id": "warm", "type": "noop"})])  # the settle script gets loaded
        await sink.wait_named("task.succeeded")
        cutter.marker = hashlib.sha1(load_script("settle").encode()).hexdigest().encode()
        await broker.push([codec.dumps({"id": "cut", "type": "noop"})])
        await sink.wait_named("task.succeeded", 2)
        await async_wait_until(lambda: running.worker.stats["succeeded"] == 2, what="both tasks counted")
        stats = await broker.stats()
        assert cutter.cuts == 1  # the reply of the settle of "cut" was lost after Redis ran it
        assert stats["acked"] == 2 and stats["settles_repeated"] == 1 and "refused_acks" not in stats
        assert [event.task_id for event in sink.named("task.succeeded")] == ["warm", "cut"]
        assert running.worker.stats["refused"] == 0
        assert (await broker.get_result("cut") or {})["status"] == "succeeded"
        await running.stop()
    finally:
        await connection.close()
        await cutter.close()
