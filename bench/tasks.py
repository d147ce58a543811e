"""The bodies of the benchmark tasks, shared by every system so that all of them run the same code.

- `noop`: nothing; what is measured is the queue's own cost per task.
- `mark(path, label)`: appends `<label> <unix time>` to a file; a drain run is timed from its `start` marker
  (queued first) to its `end` marker (queued last).
- `probe(path, t0)`: appends `<t0> <unix time at start>`; `t0` is taken just before the task was enqueued, so
  the difference is the enqueue-to-start latency.
- `http_get(url)`: one GET; sync systems use a requests.Session per thread, async ones one aiohttp session per
  process (the best client of each kind). The HTTP target's log times and counts the requests.

Each has a plain and an `async def` version (prefixed `a`); a system uses the kind its workers run natively.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

_local = threading.local()
_aio: dict[str, Any] = {}


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def noop() -> None:
    return None


async def anoop() -> None:
    return None


def mark(path: str, label: str) -> None:
    _append(path, f"{label} {time.time()!r}\n")


async def amark(path: str, label: str) -> None:
    mark(path, label)


def probe(path: str, t0: float) -> None:
    started = time.time()
    _append(path, f"{t0!r} {started!r}\n")


async def aprobe(path: str, t0: float) -> None:
    started = time.time()
    _append(path, f"{t0!r} {started!r}\n")


def http_get(url: str) -> int:
    session = getattr(_local, "session", None)
    if session is None:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=16))
        _local.session = session
    response = session.get(url, timeout=30)
    response.raise_for_status()
    return int(response.status_code)


async def ahttp_get(url: str) -> int:
    session = _aio.get("session")
    if session is None:
        import aiohttp

        session = _aio["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with session.get(url) as response:
        await response.read()
        response.raise_for_status()
        return int(response.status)
