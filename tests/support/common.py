"""Helpers every kind of test uses: where the repository and the `gopherq` command are, waiting on a condition,
free loopback ports, config files, and the environment a `gopherq` subprocess runs in."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GOPHERQ = shutil.which("gopherq", path=str(Path(sys.executable).parent)) or "gopherq"


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


def write_config(directory: Path, text: str, name: str = "gopherq.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def worker_config(directory: Path, redis_url: str, queue: str, **worker: Any) -> Path:
    """A worker's config file for a subprocess test: short leases and heartbeats (a stop or a recovery shows within
    seconds), `worker` settings on top, INFO logging with the worker's own events logged."""
    timings = {"lease_timeout": 2.0, "heartbeat_interval": 0.5, "reaper_interval": 0.5, **worker}
    lines = "\n".join(f"{key} = {value!r}" for key, value in timings.items())
    return write_config(
        directory,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue}"\n[worker]\n{lines}\n'
        '[logging]\nlevel = "INFO"\n[plugins.logging]\nevents = ["worker.*"]\n',
    )


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


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without GoPherQ's and the seed's variables (as `worker_process` does), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))}
    env.update(extra or {})
    return env


def process_gone(pid: int) -> bool:
    """True when no process `pid` runs (a zombie counts as gone: it has exited, only its parent has not reaped it)."""
    from gopherq.core.embedded import process_alive

    return not process_alive(pid)
