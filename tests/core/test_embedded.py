"""The embedded Redis: with no Redis configured, gopherq processes share one redis-server on a unix socket under
`.gopherq/` next to the config; the first one starts it, the last one out stops it, and queued tasks survive
worker and server restarts (append-only persistence)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pytest_httpserver import HTTPServer

from tests.support.common import process_gone, wait_until, write_config

Run = Callable[..., subprocess.CompletedProcess[str]]
CONFIG = """
[queue]
name = "emb"
max_attempts = 1

[worker]
shutdown_timeout = 5.0
"""


def started(worker: Any) -> bool:
    return "started: queue emb" in worker.output


def idempotency_keys(httpserver: HTTPServer) -> list[str]:
    return [request.headers.get("Idempotency-Key", "") for request, _ in httpserver.log]


def test_embedded_server_is_shared_survives_restarts_and_stops_with_the_last_process(
    tmp_path: Path,
    worker_process: Callable[..., Any],
    run_gopherq: Run,
    embedded_server: Callable[[Path], Any],
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/job").respond_with_data("done")
    config = str(write_config(tmp_path, CONFIG))
    embedded = embedded_server(tmp_path / ".gopherq")

    # Two workers: the first starts the server, the second attaches to it.
    first = worker_process(["run", "-c", config])
    wait_until(lambda: started(first), what="the first worker")
    assert "started embedded redis-server" in first.output
    pid = embedded.pid()
    assert pid is not None
    assert (tmp_path / ".gopherq" / "appendonlydir").is_dir()
    second = worker_process(["run", "-c", config])
    wait_until(lambda: started(second), what="the second worker")
    assert "started embedded redis-server" not in second.output
    assert embedded.pid() == pid

    # `gopherq enqueue` uses the same server; a worker runs the task.
    proc = run_gopherq(["enqueue", "-c", config, "--url", httpserver.url_for("/job"), "--id", "one", "--wait", "20"])
    assert proc.returncode == 0, proc.stderr
    assert idempotency_keys(httpserver) == ["one"]

    # The server stays while any gopherq process uses it, and stops with the last one.
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert not process_gone(pid)
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    wait_until(lambda: process_gone(pid), what="the server to stop with the last worker")

    # No worker: each enqueue starts the server, pushes, and (last out) stops it; the tasks stay on disk.
    for task_id in ("two", "three"):
        proc = run_gopherq(["enqueue", "-c", config, "--url", httpserver.url_for("/job"), "--id", task_id])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == task_id
        assert not embedded.is_running()
    assert idempotency_keys(httpserver) == ["one"]

    # A new worker restarts the server from its append-only file and runs what was queued.
    third = worker_process(["run", "-c", config])
    wait_until(lambda: started(third), what="the third worker")
    wait_until(lambda: len(httpserver.log) == 3, what="the queued tasks to run")
    assert sorted(idempotency_keys(httpserver)) == ["one", "three", "two"]
    restarted = embedded.pid()
    assert restarted is not None and restarted != pid

    # A worker killed outright leaves the server running; the next one attaches; `gopherq server` sees it.
    third.kill()
    assert embedded.is_running()
    fourth = worker_process(["run", "-c", config])
    wait_until(lambda: started(fourth), what="the fourth worker")
    assert "started embedded redis-server" not in fourth.output
    status = run_gopherq(["server", "status", "-c", config])
    assert status.returncode == 0
    assert f"running (pid {restarted})" in status.stdout
    fourth.signal(signal.SIGTERM)
    assert fourth.wait(30) == 0
    wait_until(lambda: process_gone(restarted), what="the server to stop")
    assert run_gopherq(["server", "status", "-c", config]).returncode == 1
    for worker in (first, second, third, fourth):
        assert "Traceback" not in worker.output


def test_a_worker_restart_keeps_the_queued_tasks(
    tmp_path: Path,
    worker_process: Callable[..., Any],
    embedded_server: Callable[[Path], Any],
    httpserver: HTTPServer,
) -> None:
    """Tasks queued behind a busy worker are all there after it is restarted, and all run exactly once."""
    httpserver.expect_request("/job").respond_with_data("done")
    config = str(write_config(tmp_path, CONFIG))
    embedded = embedded_server(tmp_path / ".gopherq")
    worker = worker_process(["run", "-c", config, "--concurrency", "1"])
    wait_until(lambda: started(worker), what="the worker")
    client = redis.Redis(unix_socket_path=str(embedded.socket))
    try:
        # Quiet the worker (SIGTSTP: stop fetching), then queue tasks it will not take.
        worker.signal(signal.SIGTSTP)
        wait_until(lambda: "is quiet" in worker.output, what="the worker to go quiet")
        url = httpserver.url_for("/job")
        for i in range(5):
            client.rpush("emb", f'{{"id":"q{i}","method":"GET","url":"{url}"}}')
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        # The worker was the last process: the server stopped; the tasks are in its append-only file.
        wait_until(lambda: not embedded.is_running(), what="the server to stop")
    finally:
        client.close()
    restarted = worker_process(["run", "-c", config, "--concurrency", "1"])
    wait_until(lambda: len(httpserver.log) == 5, what="every queued task to run after the restart")
    assert sorted(idempotency_keys(httpserver)) == [f"q{i}" for i in range(5)]
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(30) == 0
