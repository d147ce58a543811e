"""The operations surface against a real `gopherq run` subprocess: the event stream (batched, capped, masked,
kept across a SIGKILL), the inspection commands with --json, pause/resume from the CLI, and Prometheus metrics
(the worker's own port and `render_metrics`), parsed with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from gopherq import AsyncClient, Event
from gopherq.core.broker import Broker, Settlement
from gopherq.core.inspect import Inspector
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings, load_settings
from gopherq.plugins.metrics_sink import BoundedLabel, status_class
from gopherq.plugins.stream_sink import StreamSink, StreamSinkSettings
from gopherq.web.exposition import render_metrics
from tests.support.common import GOPHERQ, cli_env, free_port, free_ports, wait_until, write_config
from tests.support.loopback import LoopbackServer

SECRET = "s3cr3t-bearer-value"
URL_SECRET = "hunter2"

pytestmark = pytest.mark.timeout(180)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_stream_sink_writes_masked_json_fields_and_caps_the_stream(
    make_settings: Callable[..., Settings], sync_redis: redis.Redis, queue_name: str
) -> None:
    settings = make_settings()
    sink = StreamSink(settings, StreamSinkSettings(maxlen=100))
    await sink.open()
    try:
        events = [
            Event(
                "task.failed",
                time.time(),
                worker="w1",
                queue=queue_name,
                task_id=f"t{n}",
                task_type="http",
                attempt=1,
                error={"reason": "http_status", "message": f"GET https://u:{URL_SECRET}@h/x?token={URL_SECRET}"},
                data={"headers": {"Authorization": SECRET}, "n": n},
            )
            for n in range(1000)
        ]
        for start in range(0, 1000, 500):
            await sink.handle(events[start : start + 500])
    finally:
        await sink.close()
    key = QueueKeys(queue_name).events
    length = sync_redis.xlen(key)
    assert 100 <= length < 1000  # MAXLEN ~ trims whole nodes: about maxlen kept, never everything
    entries = sync_redis.xrange(key)
    assert sink.written == 1000
    _last_id, fields = entries[-1]
    assert list(fields) == [b"event"]
    decoded = json.loads(fields[b"event"])
    assert decoded["event"] == "task.failed" and decoded["task_id"] == "t999" and decoded["attempt"] == 1
    assert decoded["data"] == {"headers": {"Authorization": "********"}, "n": 999}
    dump = repr(entries)
    assert SECRET not in dump and URL_SECRET not in dump


def config_text(redis_url: str, queue: str, **extra: str) -> str:
    lines = [
        "[redis]",
        f'url = "{redis_url}"',
        "[queue]",
        f'name = "{queue}"',
        "max_attempts = 2",
        "backoff_min = 0.1",
        "backoff_max = 0.2",
        "[worker]",
        "heartbeat_interval = 0.5",
        "lease_timeout = 3.0",
        "reaper_interval = 0.5",
        "promote_interval = 0.1",
    ]
    for table, body in extra.items():
        lines += [f"[{table}]", body]
    return "\n".join(lines) + "\n"


def gq(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GOPHERQ, *args, "-c", str(config)], env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def settings_of(config: Path) -> Settings:
    return load_settings(config, environ={})


async def enqueue(config: Path, calls: list[tuple[str, str]]) -> list[str]:
    """Enqueue (id, url) HTTP tasks carrying a secret header, through a client whose sinks write the stream."""
    settings = settings_of(config)
    async with AsyncClient(settings, sinks=True) as client:
        tasks = [client.http(url, headers={"Authorization": f"Bearer {SECRET}"}, id=task_id) for task_id, url in calls]
        return await client.enqueue_many(tasks)


def test_worker_stream_cli_and_metrics(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    loopback: LoopbackServer,
    worker_process: Callable[..., Any],
) -> None:
    port = free_port()
    config = write_config(tmp_path, config_text(redis_url, queue_name, metrics=f"port = {port}"))
    worker = worker_process(["run", "-c", str(config)])
    wait_until(lambda: f"started: queue {queue_name}" in worker.output, timeout=30, what="the worker to start")

    secret_url = loopback.url(f"/ok?token={URL_SECRET}")
    ok = [(f"ok-{n}", secret_url) for n in range(6)]
    missing = [("gone", loopback.url("/status/404"))]
    flaky = [("flaky", loopback.url("/status/503"))]  # two attempts: retried once, then dead
    asyncio.run(enqueue(config, ok + missing + flaky))
    keys = QueueKeys(queue_name)

    def outcomes() -> dict[str, int]:
        names: dict[str, int] = {}
        for _id, fields in sync_redis.xrange(keys.events):
            name = json.loads(fields[b"event"])["event"]
            names[name] = names.get(name, 0) + 1
        return names

    wait_until(
        lambda: outcomes().get("task.succeeded") == 6 and outcomes().get("task.dead_lettered") == 2,
        timeout=30,
        what="every outcome in the stream",
    )
    seen = outcomes()
    assert seen["task.enqueued"] == 8 and seen["task.retrying"] == 1 and seen["task.failed"] == 3
    assert "task.dequeued" not in seen and "task.started" not in seen  # left out by the stream's default filter
    raw_stream = repr(sync_redis.xrange(keys.events))
    assert SECRET not in raw_stream and URL_SECRET not in raw_stream

    # -- inspection commands -------------------------------------------------------------------------------------
    queues = gq(config, "queues", "--json")
    assert queues.returncode == 0, queues.stderr
    [mine] = [q for q in json.loads(queues.stdout) if q["name"] == queue_name]
    assert mine["workers"] == 1 and mine["dead"] == 2 and mine["paused"] is False
    assert mine["totals"] == {"processed": 9, "succeeded": 6, "failed": 3, "retried": 1, "dead": 2}
    workers = gq(config, "workers", "--json")
    [info] = json.loads(workers.stdout)
    assert info["alive"] and info["pid"] == worker.proc.pid and info["stats"]["succeeded"] == 6
    task = gq(config, "task", "ok-3", "--json")
    assert task.returncode == 0, task.stderr
    shown = json.loads(task.stdout)
    assert shown["state"] == "succeeded" and shown["result"]["result"]["status_code"] == 200
    assert [e["name"] for e in shown["events"]] == ["task.enqueued", "task.succeeded"]
    assert shown["events"][1]["data"] == {"http_status": 200, "http_host": "127.0.0.1"}
    dead = json.loads(gq(config, "task", "flaky", "--json").stdout)
    assert dead["state"] == "dead" and dead["dead_letter"]["reason"] == "retries_exhausted"
    events = gq(config, "events", "--json", "--task", "flaky")
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert [e["name"] for e in sorted(lines, key=lambda e: e["timestamp"])] == [
        "task.enqueued",
        "task.failed",
        "task.retrying",
        "task.failed",
        "task.dead_lettered",
    ]
    assert {e["task_id"] for e in lines} == {"flaky"}
    assert gq(config, "task", "no-such-task").returncode == 1
    for output in (queues.stdout, workers.stdout, task.stdout, events.stdout, gq(config, "events", "-n", "100").stdout):
        assert SECRET not in output and URL_SECRET not in output

    # -- the worker's own metrics ---------------------------------------------------------------------------
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = samples(body)
    assert value(found, "gopherq_tasks_total", queue=queue_name, type="http", outcome="succeeded", reason="") == 6
    assert (
        value(found, "gopherq_tasks_total", queue=queue_name, type="http", outcome="dead", reason="non_retryable") == 1
    )
    assert (
        value(found, "gopherq_tasks_total", queue=queue_name, type="http", outcome="dead", reason="retries_exhausted")
        == 1
    )
    assert (
        value(found, "gopherq_tasks_total", queue=queue_name, type="http", outcome="retried", reason="http_status") == 1
    )
    assert value(found, "gopherq_task_retries_total", queue=queue_name, type="http") == 1
    assert value(found, "gopherq_http_responses_total", queue=queue_name, status_class="2xx", code="200") == 6
    assert value(found, "gopherq_http_responses_total", queue=queue_name, status_class="4xx", code="404") == 1
    assert value(found, "gopherq_http_responses_total", queue=queue_name, status_class="5xx", code="503") == 2
    assert (
        value(found, "gopherq_attempt_duration_seconds_count", queue=queue_name, type="http", outcome="succeeded") == 6
    )
    assert value(found, "gopherq_event_sink_dropped_total", sink="stream") == 0
    assert SECRET not in body and URL_SECRET not in body

    # -- /metrics of the queues (what `gopherq web` mounts) ----------------------------------------------------
    async def queue_metrics() -> str:
        async with AsyncClient(settings_of(config)) as client:
            text, content_type = await render_metrics(client.inspect, [queue_name])
            assert content_type.startswith("text/plain")
            return text.decode()

    found = samples(asyncio.run(queue_metrics()))
    assert value(found, "gopherq_queue_dead_tasks", queue=queue_name) == 2
    assert value(found, "gopherq_queue_ready_tasks", queue=queue_name) == 0
    assert value(found, "gopherq_workers_alive", queue=queue_name) == 1
    assert value(found, "gopherq_queue_paused", queue=queue_name) == 0
    assert value(found, "gopherq_queue_tasks_total", queue=queue_name, outcome="succeeded") == 6
    assert value(found, "gopherq_queue_tasks_total", queue=queue_name, outcome="dead") == 2

    # -- pause and resume from the CLI, obeyed by the worker process -------------------------------------------
    assert json.loads(gq(config, "pause", queue_name, "--json").stdout) == {"queue": queue_name, "paused": True}
    wait_until(lambda: "is paused" in worker.output, timeout=15, what="the worker to see the pause")
    asyncio.run(enqueue(config, [("after-pause", loopback.url("/ok"))]))
    for _ in range(3):
        time.sleep(0.5)  # a few of the paused worker's claim polls: the task stays ready
        assert sync_redis.llen(queue_name) == 1
    assert gq(config, "resume", queue_name).stdout.strip() == f"{queue_name}: resumed"
    wait_until(lambda: loopback.count("after-pause") == 1, timeout=15, what="the task to run after resume")

    # -- what was written to the stream survives a SIGKILLed worker -------------------------------------------
    wait_until(lambda: outcomes().get("task.succeeded") == 7, timeout=15, what="the last outcome in the stream")
    length = sync_redis.xlen(keys.events)
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    assert sync_redis.xlen(keys.events) == length
    inspector_events = asyncio.run(_events(config, queue_name))
    assert len(inspector_events) == length


async def _events(config: Path, queue: str) -> list[Any]:
    async with AsyncClient(settings_of(config)) as client:
        inspector: Inspector = client.inspect
        return await inspector.events(queue, count=10_000)


def test_label_values_from_task_data_are_bounded() -> None:
    label = BoundedLabel(2)
    seen = [label(v) for v in ("http", "pycall", "http", "made-up", None)]
    assert seen == ["http", "pycall", "http", "other", "other"]
    assert [status_class(s) for s in (200, 302, 404, 503, 99, "x")] == ["2xx", "3xx", "4xx", "5xx", "other", "other"]


def test_events_follow_prints_new_events_until_interrupted(
    tmp_path: Path, redis_url: str, queue_name: str, make_settings: Callable[..., Settings]
) -> None:
    config = write_config(tmp_path, config_text(redis_url, queue_name))
    proc = subprocess.Popen(
        [GOPHERQ, "events", "--follow", "--json", "-c", str(config)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sink = StreamSink(make_settings(), StreamSinkSettings())

        async def write() -> None:
            await sink.open()
            try:
                for n in range(3):
                    await sink.handle([Event("task.started", time.time(), queue=queue_name, task_id=f"f{n}")])
            finally:
                await sink.close()

        lines: list[str] = []
        assert proc.stdout is not None

        def read_three() -> bool:
            # The follower may start after some of the writes: it prints the latest ones first, then new ones.
            asyncio.run(write())
            while len(lines) < 3:
                lines.append(proc.stdout.readline())  # type: ignore[union-attr]
            return True

        wait_until(read_three, timeout=30, what="three followed events")
        assert [json.loads(line)["name"] for line in lines] == ["task.started"] * 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _dead_letters(redis_url: str, queue: str, count: int) -> None:
    """`count` dead letters, made as a worker makes them (claim, then settle as dead)."""

    async def make() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.rpush(queue, *(json.dumps({"id": f"d{n}", "type": "nope"}) for n in range(count)))
            broker = Broker(client, queue, "w1")
            claimed = await broker.claim(count, 60_000)
            assert claimed is not None
            items = []
            for token, raw in claimed:
                task_id = json.loads(raw)["id"]
                entry = json.dumps({"task_id": task_id, "reason": "unknown_type", "raw": raw.decode()}).encode()
                items.append(Settlement("dead", token, task_id, b"", entry, task_id))
            await broker.settle(items, 60, 10_000)
        finally:
            await client.aclose()

    asyncio.run(make())


def test_dlq_requeue_all_shows_a_progress_bar_on_a_terminal_only(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    config = write_config(tmp_path, config_text(redis_url, queue_name))
    _dead_letters(redis_url, queue_name, 1200)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [GOPHERQ, "dlq", "requeue", "--all", "-c", str(config)],
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=secondary,
        )
        os.close(secondary)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the command has exited and closed the terminal
            while chunk := os.read(primary, 65536):
                output += chunk
    finally:
        os.close(primary)
    assert proc.wait(60) == 0
    text = output.decode(errors="replace")
    assert "requeueing" in text and "100%" in text and "requeued 1200" in text
    # Not a terminal, or --json: no bar, only the answer.
    redis.Redis.from_url(redis_url).delete(queue_name)
    _dead_letters(redis_url, queue_name, 3)
    quiet = gq(config, "dlq", "requeue", "--all", "--json")
    assert quiet.returncode == 0 and json.loads(quiet.stdout) == {"requeued": 3, "not_found": 0}
    assert "requeueing" not in quiet.stderr and "%" not in quiet.stderr


def test_each_worker_process_serves_metrics_on_its_own_port(
    tmp_path: Path, redis_url: str, queue_name: str, worker_process: Callable[..., Any]
) -> None:
    port = free_ports(2)
    config = write_config(tmp_path, config_text(redis_url, queue_name, metrics=f"port = {port}"))
    worker = worker_process(["run", "-c", str(config), "--processes", "2"])

    def scrape(where: int) -> str | None:
        try:
            return str(urllib.request.urlopen(f"http://127.0.0.1:{where}/metrics", timeout=5).read().decode())
        except OSError:
            return None

    for where in (port, port + 1):
        body = wait_until(lambda where=where: scrape(where), timeout=30, what=f"metrics on port {where}")
        assert "gopherq_worker_running_tasks" in body
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
