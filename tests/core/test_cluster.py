"""Redis Cluster: the queue's keys share one hash slot ({Q} tags), so a worker and a client work unchanged on a
real three-node cluster that this test starts on loopback."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import gopherq
from gopherq import AsyncClient
from gopherq.core.cancellation import cancel_and_wait
from gopherq.core.connection import RedisConnection, watch_writes
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import load_settings
from tests.support.common import async_wait_until
from tests.support.workers import FAST_WORKER

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server and redis-cli")


def free_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    for port in random.sample(range(20000, 30000), 200):
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair found")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    base = tmp_path_factory.mktemp("cluster")
    ports = [free_port() for _ in range(3)]
    procs = []
    for port in ports:
        node_dir = Path(base) / str(port)
        node_dir.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(node_dir),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis(host="127.0.0.1", port=port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while redis.Redis(host="127.0.0.1", port=ports[0]).cluster("info").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "cluster did not become ready"
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


class Echo:
    async def execute(self, task: gopherq.Task, context: gopherq.ExecutionContext) -> Any:
        return {"echo": task.fields.get("value")}


class EchoPlugin:
    @gopherq.hookimpl
    def gopherq_register_executors(self, register: Any, settings: Any) -> None:
        register("echo", Echo())


async def test_worker_and_client_on_a_cluster(cluster: list[int], start_worker: Any) -> None:
    queue = f"c_{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        None,
        {
            "redis": {"url": f"redis://127.0.0.1:{cluster[0]}", "cluster": True},
            "queue": {"name": queue},
            "worker": dict(FAST_WORKER),
        },
        environ={},
    )
    keys = QueueKeys(queue)
    slot = redis.RedisCluster(host="127.0.0.1", port=cluster[0]).keyslot
    assert len({slot(keys.ready), slot(keys.inflight), slot(keys.delayed), slot(keys.result("x"))}) == 1

    client = AsyncClient(settings, plugins=gopherq.core.plugins.load_plugins(settings, extra={"echo": EchoPlugin()}))
    async with client:
        handle = await start_worker(settings, extra_plugins={"echo": EchoPlugin()}, redis_client=client.redis)
        # Half of them with fair keys: the claim builds their keys' names, all in the queue's slot.
        fair = [keys.fair_active("d"), keys.fair_list("d", "tenant-1"), keys.fair_running("x"), keys.fair_parked]
        fair.append(keys.fair_backlog)
        assert {slot(name) for name in fair} == {slot(keys.ready)}
        tasks = [client.task("echo", value=n, fair_key=f"tenant-{n % 3}" if n % 2 else None) for n in range(50)]
        ids = await client.enqueue_many(tasks)
        delayed = await client.enqueue("echo", value="later", delay=0.3)

        async def all_done() -> bool:
            records = [await client.result(task_id) for task_id in [*ids, delayed]]
            return all(r is not None and r.status.value == "succeeded" for r in records)

        await async_wait_until(all_done, timeout=20, what="tasks on the cluster to succeed")
        assert (await client.result(ids[7])).result == {"echo": 7}  # type: ignore[union-attr]
        await handle.stop()

        # Task control on the cluster: every key of it is in the queue's slot, and the scripts run there.
        levels = [keys.level("high"), keys.level("low"), keys.cancels, keys.unique("k"), keys.schedules]
        assert {slot(name) for name in levels} == {slot(keys.ready)}
        [first, again] = await client.submit(
            [client.task("echo", value="u", unique_key="k", priority="high") for _ in range(2)]
        )
        assert again == (first.id, True)
        later = await client.enqueue("echo", value="x", delay=3600)
        assert await client.cancel(later) == "cancelled"
        scheduled = load_settings(
            None,
            {**settings.model_dump(), "schedules": [{"name": "s", "every": 1, "task": {"type": "echo", "value": 1}}]},
            environ={},
        )
        handle = await start_worker(scheduled, extra_plugins={"echo": EchoPlugin()}, redis_client=client.redis)
        record = await client.wait(first.id, timeout=20)
        assert record is not None and record.status.value == "succeeded"

        async def a_slot_ran() -> bool:
            return (
                bool(await client.redis.hget(keys.schedules, "s"))
                and (await client.broker().stats()).get("acked", 0) >= 53
            )

        await async_wait_until(a_slot_ran, timeout=20, what="a scheduled slot on the cluster")

        # Inspection: the queue registry lives in a slot of its own, read apart from the per-queue reads (heads.lua
        # and one EXISTS over the queue's keys), which stay in the queue's slot.
        inspect = client.inspect
        assert queue in await inspect.registry.listed()
        info = await inspect.queue(queue)
        assert info.workers == 1 and info.levels["high"].ready == 0
        others = [f"{queue}_{n}" for n in range(6)]  # on every node: the SCAN of `discover` covers them all
        for other in others:
            await client.redis.hset(QueueKeys(other).stats, "acked", 1)
        assert await inspect.discover() == sorted(others)
        assert set(others) <= set(await inspect.queue_names())
        await handle.stop()
        # The fair keys' reads (the backlog set, then each key's lists) run in the queue's slot too.
        await client.enqueue("echo", value="k", fair_key="tenant-9")
        assert [(info.key, info.backlog) for info in await inspect.fair_keys(queue, 5)] == [("tenant-9", 1)]


async def test_cluster_connections_lose_no_cancellation_and_count_their_writes(cluster: list[int]) -> None:
    """A cluster node's connections are GoPherQ's too (core/connection.py): a loop of commands, cancelled once at a
    random moment, always stops (redis-py's own writes go through `asyncio.wait_for`, which on Python 3.10 and 3.11
    loses a cancel arriving as a write completes), and a `watch_writes` block knows whether a command went out."""
    connection = RedisConnection(
        load_settings(None, {"redis": {"url": f"redis://127.0.0.1:{cluster[0]}", "cluster": True}}, environ={}), "test"
    )
    client = await connection.open()
    key = f"{{c_{uuid.uuid4().hex[:8]}}}:n"

    async def commands() -> None:
        while True:
            await client.incr(key)

    rng = random.Random(11)
    try:
        with watch_writes(client) as writes:
            assert writes.known and not writes.maybe_sent
            await client.get(key)
            assert writes.maybe_sent
        for _ in range(50 if sys.version_info >= (3, 11) else 0):
            task = asyncio.create_task(commands())
            await asyncio.sleep(rng.uniform(0, 0.002))
            assert await cancel_and_wait([task], timeout=2.0, recancel_after=10.0) == set()  # one cancel only
    finally:
        await client.delete(key)
        await connection.close()
