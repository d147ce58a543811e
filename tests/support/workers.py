"""Workers for the tests: settings with fast timings, a real Worker in the test's event loop, and `gopherq`
subprocesses (a long-running `gopherq run`, or a command run to completion)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq.core.broker import Broker
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings, load_settings
from gopherq.core.worker import Worker
from tests.support.common import GOPHERQ, async_wait_until, cli_env

#: Timings that make recovery and retries observable in a test's lifetime.
FAST_WORKER = {
    "lease_timeout": 2.0,
    "heartbeat_interval": 0.5,
    "reaper_interval": 0.5,
    "promote_interval": 0.1,
    "shutdown_timeout": 5.0,
}


@pytest.fixture
def make_settings(redis_url: str, queue_name: str) -> Callable[..., Settings]:
    """Settings on the test Redis and queue, with fast timings; nested overrides as dicts."""

    def build(**sections: dict[str, Any]) -> Settings:
        overrides: dict[str, Any] = {
            "redis": {"url": redis_url},
            "queue": {"name": queue_name},
            "worker": dict(FAST_WORKER),
        }
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(overrides.get(section), dict):
                overrides[section] = {**overrides[section], **values}
            else:
                overrides[section] = values
        return load_settings(None, overrides, environ={})

    return build


@pytest.fixture
def broker(aredis: aioredis.Redis, queue_name: str) -> Broker:
    return Broker(aredis, queue_name)


class RunningWorker:
    """A Worker running in this test's event loop."""

    def __init__(self, worker: Worker, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.task = task

    async def stop(self, timeout: float = 15.0) -> None:
        self.worker.request_stop()
        await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def start_worker(aredis: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    """`await start_worker(settings, extra_plugins={...})` runs a real Worker in-process; stopped at teardown."""
    running: list[RunningWorker] = []

    async def start(
        settings: Settings, extra_plugins: dict[str, Any] | None = None, redis_client: Any = None
    ) -> RunningWorker:
        plugins = load_plugins(settings, extra=extra_plugins, sinks=True)
        worker = Worker(settings, plugins, redis_client or aredis)
        task = asyncio.create_task(worker.run())
        handle = RunningWorker(worker, task)
        running.append(handle)
        await async_wait_until(lambda: bool(worker._loops) or task.done(), what="worker start")
        if task.done():
            task.result()
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            with contextlib.suppress(Exception):
                await handle.stop()


class WorkerProcess:
    """A `gopherq run` subprocess; its combined output goes to a log file for assertions and diagnosis."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [GOPHERQ, *args], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """`worker_process(args, env=...)` starts `gopherq ...` (e.g. ["run", "-c", cfg]); killed at teardown."""
    started: list[WorkerProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> WorkerProcess:
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))
        }
        full_env.update(env or {})
        proc = WorkerProcess(args, full_env, cwd or tmp_path, tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


# -- CLI tests: the real `gopherq` command, run to completion ------------------------------------------------------


@pytest.fixture
def run_gopherq(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_gopherq(["config", "-c", cfg], env={...})` runs `gopherq ...` in tmp_path and returns the finished
    process (text stdout and stderr)."""

    def run(
        args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GOPHERQ, *args], env=cli_env(env), cwd=cwd or tmp_path, capture_output=True, text=True, timeout=timeout
        )

    return run
