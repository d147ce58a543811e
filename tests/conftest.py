"""Shared fixtures: a real Redis (each test gets its own queue name), settings, in-process and subprocess workers.

Redis is 127.0.0.1:6379 unless GOPHERQ_TEST_REDIS_URL says otherwise; `.ci/run` starts one if none answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from pytest_httpserver import HTTPServer

from gopherq.core.broker import Broker
from gopherq.core.events import Event
from gopherq.core.hookspecs import hookimpl
from gopherq.core.keys import QUEUE_REGISTRY
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import Settings, load_settings
from gopherq.core.worker import Worker

REDIS_URL = os.environ.get("GOPHERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parent.parent
GOPHERQ = shutil.which("gopherq", path=str(Path(sys.executable).parent)) or "gopherq"

#: Timings that make recovery and retries observable in a test's lifetime.
FAST_WORKER = {
    "lease_timeout": 2.0,
    "heartbeat_interval": 0.5,
    "reaper_interval": 0.5,
    "promote_interval": 0.1,
    "shutdown_timeout": 5.0,
}


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """`wait_until` for coroutines: `predicate` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.exit(f"tests need a Redis at {REDIS_URL} ({exc}); .ci/run starts one", returncode=3)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """A fresh queue name; every key of it, and its name in the queue registry, are deleted afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = [name, *client.scan_iter(match=f"gopherq:{{{name}}}:*", count=1000)]
    client.delete(*keys)
    client.zrem(QUEUE_REGISTRY, name, f"{name}_other")
    client.close()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


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


def write_config(directory: Path, text: str, name: str = "gopherq.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


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


# -- delivery tests: a loopback HTTP server with per-task request counts, and private redis-servers -------------


class LoopbackServer:
    """An aiohttp server on 127.0.0.1, in its own thread, that serves many requests at once and records every
    request by its Idempotency-Key (the task id), so tests can count lost tasks and duplicates.

    Paths: `/ok?min_ms=&max_ms=` answers 200 after a random delay; `/status/<code>?retry_after=&body_size=`
    answers that status; `/flaky/<n>?status=503&retry_after=1` fails the first n requests of each task, then
    answers 200 (`retry_after=date:2` sends an HTTP date 2 s ahead); `/slow?seconds=` answers 200 after that
    long; `/slow_once?seconds=` does so only for the first request of each task.
    """

    def __init__(self) -> None:
        import threading

        self.requests: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-http", daemon=True)
        self.port = 0

    def _record(self, key: str) -> int:
        with self._lock:
            seen = self.requests.setdefault(key, [])
            seen.append(time.time())
            return len(seen)

    def _serve(self) -> None:
        import email.utils
        import random

        from aiohttp import web

        async def ok(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            low = float(request.query.get("min_ms", 0))
            high = float(request.query.get("max_ms", low))
            await asyncio.sleep(random.uniform(low, high) / 1000)
            return web.Response(text="ok")

        async def status(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            body = "x" * int(request.query.get("body_size", 0)) or "status"
            return web.Response(status=int(request.match_info["code"]), text=body, headers=headers)

        async def flaky(request: web.Request) -> web.Response:
            count = self._record(request.headers.get("Idempotency-Key", ""))
            if count <= int(request.match_info["failures"]):
                headers = {}
                retry_after = request.query.get("retry_after")
                if retry_after is not None and retry_after.startswith("date:"):  # an HTTP date that many s ahead
                    retry_after = email.utils.formatdate(time.time() + float(retry_after[5:]), usegmt=True)
                if retry_after is not None:
                    headers["Retry-After"] = retry_after
                return web.Response(status=int(request.query.get("status", 503)), text="not yet", headers=headers)
            return web.Response(text="ok")

        async def slow(request: web.Request) -> web.Response:
            self._record(request.headers.get("Idempotency-Key", ""))
            await asyncio.sleep(float(request.query.get("seconds", 1)))
            return web.Response(text="slow ok")

        async def slow_once(request: web.Request) -> web.Response:
            if self._record(request.headers.get("Idempotency-Key", "")) == 1:
                await asyncio.sleep(float(request.query.get("seconds", 1)))
            return web.Response(text="ok")

        app = web.Application()
        app.add_routes(
            [
                web.route("*", "/ok", ok),
                web.route("*", "/status/{code}", status),
                web.route("*", "/flaky/{failures}", flaky),
                web.route("*", "/slow", slow),
                web.route("*", "/slow_once", slow_once),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        with contextlib.suppress(Exception):
            cleanup.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, key: str) -> int:
        with self._lock:
            return len(self.requests.get(key, ()))

    def times(self, key: str) -> list[float]:
        with self._lock:
            return list(self.requests.get(key, ()))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {key: len(times) for key, times in self.requests.items()}


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A started LoopbackServer; stopped at teardown."""
    server = LoopbackServer().start()
    yield server
    server.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now, below the ephemeral range (32768 and up
    on Linux), so an outgoing connection cannot take one of them before the server that is to listen there."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 32768 - count)
        socks: list[socket.socket] = []
        try:
            for offset in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free loopback ports")


class PrivateRedis:
    """A redis-server of the test's own, on a free loopback port with its data in `directory`, that the test may
    configure, kill and restart (the shared Redis must never be touched that way)."""

    def __init__(self, directory: Path, args: tuple[str, ...]) -> None:
        self.directory = directory
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:  # pragma: no cover - environment problem
            pytest.skip("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log"), *self.args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_until(lambda: _answers(client), timeout=10, what=f"private redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what survives is what the append-only file already holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """`private_redis("--maxmemory-policy", "allkeys-lru")` starts a redis-server of the test's own; stopped at
    teardown."""
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(started)}", args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class NoopExecutor:
    """The cheapest possible task: whatever a test measures or observes around it shows."""

    async def execute(self, task: Any, context: Any) -> None:
        return None


class ExecutorPlugin:
    """A plugin object registering one executor, for `start_worker(..., extra_plugins={"name": plugin})`."""

    def __init__(self, task_type: str, executor: Any) -> None:
        self.task_type = task_type
        self.executor = executor

    @hookimpl
    def gopherq_register_executors(self, register: Any, settings: Any) -> None:
        register(self.task_type, self.executor)


class CaptureSink:
    """A sink that keeps every event it gets, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handle(self, events: list[Event]) -> None:
        self.events.extend(events)

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.name == name]

    async def wait_named(self, name: str, count: int = 1, timeout: float = 5.0) -> list[Event]:
        """The events called `name`, once at least `count` have arrived. Events reach a sink through its own
        buffer after the settle that records the outcome, so a test that has seen a result waits for them."""
        await async_wait_until(lambda: len(self.named(name)) >= count, timeout=timeout, what=f"{count} {name} event(s)")
        return self.named(name)


class SinkPlugin:
    """A plugin object registering a CaptureSink under `name`."""

    def __init__(self, sink: Any, name: str = "capture") -> None:
        self.sink = sink
        self.name = name

    @hookimpl
    def gopherq_register_sinks(self, register: Any, settings: Any) -> None:
        register(self.name, self.sink)


# -- CLI tests: the real `gopherq` command, run to completion ------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without GoPherQ's and the seed's variables (as `worker_process` does), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))}
    env.update(extra or {})
    return env


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


def process_gone(pid: int) -> bool:
    """True when no process `pid` runs (a zombie counts as gone: it has exited, only its parent has not reaped it)."""
    from gopherq.core.embedded import process_alive

    return not process_alive(pid)


@pytest.fixture
def embedded_server() -> Iterator[Callable[[Path], Any]]:
    """`embedded_server(data_dir)` gives the EmbeddedRedis of a data directory; one a test leaves running (e.g.
    after a failure) is stopped at teardown, so no redis-server outlives the tests."""
    from gopherq.core.embedded import EmbeddedRedis

    seen: list[EmbeddedRedis] = []

    def get(data_dir: Path) -> EmbeddedRedis:
        server = EmbeddedRedis(data_dir.resolve())
        seen.append(server)
        return server

    yield get
    for server in seen:
        pid = server.pid()
        if server.is_running():
            server.stop()
        if pid is not None and not process_gone(pid) and _is_redis_server(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_redis_server(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("redis-server")
    except OSError:
        return False


# -- a loopback HTTP server shared by the HTTP executor tests -------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    """A threaded server, so a handler that hangs (for the timeout tests) does not hold up the others."""
    httpd = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    httpd.start()
    yield httpd
    httpd.clear()
    httpd.stop()


@pytest.fixture
def http(server: HTTPServer) -> Iterator[HTTPServer]:
    """The module's server, with no expectations or log left from the previous test."""
    server.clear()
    yield server
    server.clear()
