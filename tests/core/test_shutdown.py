"""Shutdown and quiet: SIGTSTP stops fetching, SIGTERM lets running tasks finish within shutdown_timeout and puts
the rest back at the head of the queue without counting an attempt (and does not wait for a synchronous executor
stuck in its thread), and a second signal exits at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from tests.support.common import async_wait_until, wait_until, worker_config
from tests.support.loopback import LoopbackServer


def test_sigtstp_stops_fetching_and_running_tasks_finish(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    worker_process: Callable[..., Any],
    loopback: LoopbackServer,
) -> None:
    config = worker_config(tmp_path, redis_url, queue_name)
    proc = worker_process(["run", "-c", str(config)])
    wait_until(lambda: "started: queue" in proc.output, what="worker start")
    sync_redis.rpush(queue_name, codec.dumps({"id": "running", "url": loopback.url("/slow?seconds=1.5")}))
    wait_until(lambda: loopback.count("running") == 1, what="the first task to start")
    proc.signal(signal.SIGTSTP)
    wait_until(lambda: "is quiet: no new tasks will be fetched" in proc.output, what="quiet")
    sync_redis.rpush(queue_name, codec.dumps({"id": "waits", "url": loopback.url("/ok")}))
    keys = QueueKeys(queue_name)
    wait_until(lambda: sync_redis.get(keys.result("running")), what="the running task to finish")
    time.sleep(1.5)  # longer than a blocking fetch: a fetching worker would have taken `waits` by now
    assert loopback.count("waits") == 0 and sync_redis.llen(queue_name) == 1
    assert proc.proc.poll() is None  # quiet, not stopped
    assert "worker.quiet" in proc.output  # the event reached the logging sink
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert sync_redis.zcard(keys.workers) == 0  # clean exit: heartbeat removed
    assert sync_redis.llen(queue_name) == 1


async def test_sigterm_puts_unfinished_tasks_back_at_the_head_without_counting_an_attempt(
    make_settings: Callable[..., Settings], start_worker: Any, aredis: Any, queue_name: str, loopback: LoopbackServer
) -> None:
    settings = make_settings(worker={"shutdown_timeout": 0.8, "concurrency": 4})  # full with the first four
    running = await start_worker(settings)
    slow = [codec.dumps({"id": f"slow{i}", "url": loopback.url("/slow?seconds=30")}) for i in range(3)]
    quick = codec.dumps({"id": "quick", "url": loopback.url("/slow?seconds=0.4")})
    await aredis.rpush(queue_name, *slow, quick)
    await async_wait_until(lambda: len(loopback.snapshot()) == 4, what="all four tasks to start")
    await aredis.rpush(queue_name, codec.dumps({"id": "queued", "url": loopback.url("/ok")}))  # behind them
    started = time.monotonic()
    await running.stop()
    assert time.monotonic() - started < 0.8 + 2  # the grace period, then out
    broker = Broker(aredis, queue_name)
    assert (await broker.get_result("quick"))["status"] == "succeeded"  # finished within the grace period
    ready = await aredis.lrange(queue_name, 0, -1)
    assert sorted(ready[:3]) == sorted(slow)  # unchanged bytes (no attempt counted) at the head
    assert codec.loads(ready[3])["id"] == "queued" and len(ready) == 4
    for i in range(3):
        assert await broker.get_result(f"slow{i}") is None
    assert await aredis.hlen(broker.keys.inflight) == 0 and await aredis.zcard(broker.keys.workers) == 0
    assert (await broker.stats())["released"] == 3


def test_a_second_signal_exits_at_once_and_leaves_the_rest_to_the_reaper(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    worker_process: Callable[..., Any],
    loopback: LoopbackServer,
) -> None:
    config = worker_config(tmp_path, redis_url, queue_name, shutdown_timeout=30.0)
    proc = worker_process(["run", "-c", str(config)])
    wait_until(lambda: "started: queue" in proc.output, what="worker start")
    sync_redis.rpush(queue_name, codec.dumps({"id": "stuck", "url": loopback.url("/slow?seconds=30")}))
    wait_until(lambda: loopback.count("stuck") == 1, what="the task to start")
    proc.signal(signal.SIGTERM)
    wait_until(lambda: "finishing running tasks" in proc.output, what="graceful shutdown to begin")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(5) == 1
    assert time.monotonic() - started < 2
    assert "second SIGTERM: exiting now" in proc.output
    keys = QueueKeys(queue_name)
    # Still in flight under its lease (and the worker still listed): the reaper will recover it.
    assert sync_redis.hlen(keys.inflight) == 1 and sync_redis.zcount(keys.leases, "-inf", "(+inf") == 1
    assert sync_redis.zcard(keys.workers) == 1


STUCK_SYNC_WORKER = """
import sys
import time

from gopherq import hookimpl, load_settings
from gopherq.core.runner import configure_logging, run_worker


class Stuck:
    def execute(self, task, context):  # a plain def: it runs in a thread, which cancelling cannot stop
        time.sleep(60)


class Plugin:
    @hookimpl
    def gopherq_register_executors(self, register, settings):
        register("stuck", Stuck())


settings = load_settings(sys.argv[1])
configure_logging(settings.logging.level)
sys.exit(run_worker(settings, extra_plugins={"stuck": Plugin()}))
"""


def test_sigterm_does_not_wait_for_a_stuck_synchronous_executor(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    config = worker_config(tmp_path, redis_url, queue_name, shutdown_timeout=0.5)
    script = tmp_path / "stuck_worker.py"
    script.write_text(STUCK_SYNC_WORKER)
    log_path = tmp_path / "stuck.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "started: queue" in log_path.read_text(), what="worker start")
            envelope = codec.dumps({"id": "stuck", "type": "stuck"})
            sync_redis.rpush(queue_name, envelope)
            wait_until(lambda: sync_redis.hlen(QueueKeys(queue_name).inflight) == 1, what="the task to start")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert time.monotonic() - started < 0.5 + 2
        finally:
            if proc.poll() is None:
                proc.kill()
    assert sync_redis.lrange(queue_name, 0, -1) == [envelope]  # released, unchanged
    assert "executor threads are still running; exiting without waiting" in log_path.read_text()
