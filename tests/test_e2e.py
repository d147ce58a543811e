"""End to end, as a user runs it: `gopherq run -c gopherq.toml` (the shipped file, unchanged) in a subprocess, the
seed's JSON pushed with a plain RPUSH, the request seen at a local HTTP server, the result in Redis, SIGTERM, exit 0.

Once in embedded mode (no Redis configured: the worker starts its own redis-server on a unix socket), once in
external mode (the seed's REDIS_ADDRESS / QUEUE_NAME / NUM_WORKERS variables point at the test Redis).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from pytest_httpserver import HTTPServer

from gopherq.core.keys import QueueKeys
from tests.support.common import REPO, process_gone, wait_until


def seed_task(url: str, task_id: str = "task001") -> str:
    """The seed project's task format, byte for byte except the URL."""
    return json.dumps(
        {"id": task_id, "method": "GET", "url": url, "header": {"X-Custom-Header": "GoPherQTest"}, "body": ""},
        separators=(",", ":"),
    )


def check_seed_request(httpserver: HTTPServer, task_id: str) -> None:
    wait_until(lambda: httpserver.log, what="the request to reach the HTTP server")
    request = httpserver.log[0][0]
    assert request.method == "GET"
    assert request.path == "/seed"
    assert request.headers["X-Custom-Header"] == "GoPherQTest"
    assert request.headers["Idempotency-Key"] == task_id


def check_result(client: redis.Redis, queue: str, task_id: str) -> None:
    key = QueueKeys(queue).result(task_id)
    raw = wait_until(lambda: client.get(key), what="the result record")
    record = json.loads(raw)
    assert record["id"] == task_id
    assert record["status"] == "succeeded"
    assert record["attempts"] == 1
    assert record["result"]["status_code"] == 200
    assert record["result"]["body"] == "seed ok"
    assert 0 < client.ttl(key) <= 86400


def test_shipped_config_runs_the_seed_task_in_embedded_mode(
    tmp_path: Path,
    worker_process: Callable[..., Any],
    embedded_server: Callable[[Path], Any],
    httpserver: HTTPServer,
) -> None:
    shutil.copy(REPO / "gopherq.toml", tmp_path / "gopherq.toml")
    httpserver.expect_request("/seed", method="GET").respond_with_data("seed ok")
    worker = worker_process(["run", "-c", "gopherq.toml"], cwd=tmp_path)
    embedded = embedded_server(tmp_path / ".gopherq")
    wait_until(lambda: "started: queue my_tasks_queue" in worker.output, what="the worker to start")
    assert "started embedded redis-server" in worker.output
    server_pid = embedded.pid()
    assert server_pid is not None and not process_gone(server_pid)

    client = redis.Redis(unix_socket_path=str(embedded.socket))
    try:
        client.rpush("my_tasks_queue", seed_task(httpserver.url_for("/seed")))
        check_seed_request(httpserver, "task001")
        check_result(client, "my_tasks_queue", "task001")
    finally:
        client.close()
    # The built-in logging sink wrote the attempt's outcome, naming the task; the shipped file leaves its start out.
    wait_until(lambda: "task.succeeded task=task001" in worker.output, what="the task.succeeded log line")
    assert "task.started" not in worker.output

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "Traceback" not in worker.output
    wait_until(lambda: process_gone(server_pid), what="the embedded redis-server to exit")
    assert not embedded.socket.exists()


def test_seed_variables_run_the_seed_task_on_an_external_redis(
    tmp_path: Path,
    worker_process: Callable[..., Any],
    httpserver: HTTPServer,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
) -> None:
    shutil.copy(REPO / "gopherq.toml", tmp_path / "gopherq.toml")
    httpserver.expect_request("/seed", method="GET").respond_with_data("seed ok")
    target = urlparse(redis_url)
    env = {
        "REDIS_ADDRESS": f"{target.hostname}:{target.port or 6379}",
        "REDIS_DB": (target.path.strip("/") or "0"),
        "QUEUE_NAME": queue_name,
        "NUM_WORKERS": "2",
    }
    if target.password:
        env["REDIS_PASSWORD"] = target.password
    worker = worker_process(["run", "-c", "gopherq.toml"], env=env, cwd=tmp_path)
    wait_until(lambda: f"started: queue {queue_name}, concurrency 2," in worker.output, what="the worker to start")

    sync_redis.rpush(queue_name, seed_task(httpserver.url_for("/seed"), "task-external"))
    check_seed_request(httpserver, "task-external")
    check_result(sync_redis, queue_name, "task-external")

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "Traceback" not in worker.output
    assert "embedded" not in worker.output
    assert not (tmp_path / ".gopherq").exists()
