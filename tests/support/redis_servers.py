"""Redis for the tests: the shared one (each test gets its own queue name, deleted afterwards), private
redis-servers a test may configure, kill and restart, and the embedded server of a data directory.

Redis is 127.0.0.1:6379 unless GOPHERQ_TEST_REDIS_URL says otherwise; `.ci/run` starts one if none answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from gopherq.core.keys import QUEUE_REGISTRY
from tests.support.common import free_port, process_gone, wait_until

REDIS_URL = os.environ.get("GOPHERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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
