"""The common interface every benchmarked system implements, and the registry of systems.

One module per system (bench/peers/<name>.py) defines the system's tasks (wrapping bench/tasks.py) and a
`Peer` subclass that knows how to enqueue them (one by one, and in bulk where the system has a bulk API) and
how to start the system's worker as a subprocess in its fastest reasonable single-process configuration for
each workload. The harness does the timing of drains and latency itself, the same way for every system.
A peer module reads BENCH_REDIS_URL and BENCH_QUEUE at import time: the harness sets them before it imports
a peer, and its worker subprocesses inherit them.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Registry: system name -> "module:class". Order is the order of the report.
PEERS: dict[str, str] = {
    "gopherq": "bench.peers.gopherq:GoPherQPeer",
    "celery": "bench.peers.celery:CeleryPeer",
    "rq": "bench.peers.rq:RQPeer",
    "dramatiq": "bench.peers.dramatiq:DramatiqPeer",
    "huey": "bench.peers.huey:HueyPeer",
    "arq": "bench.peers.arq:ArqPeer",
    "taskiq": "bench.peers.taskiq:TaskiqPeer",
    "saq": "bench.peers.saq:SaqPeer",
}

BULK_CHUNK = 1000


def bench_redis_url() -> str:
    """The harness's private Redis. No default: a peer must never touch any other Redis."""
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise RuntimeError("BENCH_REDIS_URL is not set: peers are imported by the harness (python -m bench)")
    return url


def bench_queue() -> str:
    return os.environ.get("BENCH_QUEUE", "bench")


@dataclass
class Context:
    """Where a peer runs: the private Redis, the HTTP target and the run's scratch directory."""

    redis_url: str
    target_url: str
    run_dir: Path
    queue: str = "bench"
    repo: Path = Path(__file__).resolve().parents[2]

    @property
    def bin_dir(self) -> Path:
        return Path(sys.executable).parent


@dataclass
class Batch:
    """Tasks to send: `count` tasks of one kind (noop, mark, probe, http); `args(i)` is called just before the
    i-th task is sent (so a probe's t0 is the moment of sending). With `rate`, one by one at that pace."""

    kind: str
    count: int
    args: Callable[[int], tuple[Any, ...]] = lambda i: ()
    bulk: bool = False
    rate: float | None = None


@dataclass
class WorkerSpec:
    """Which worker to start: the workload it is tuned for, its concurrency, and system-specific options."""

    workload: str  # "noop", "http" or "latency"
    concurrency: int = 1
    processes: int = 1
    options: dict[str, str] = field(default_factory=dict)


class Peer(ABC):
    """One benchmarked system."""

    name: str = ""
    label: str = ""
    dist: str = ""
    has_bulk: bool = False
    http_client: str = ""
    #: One line per workload: the worker configuration used, for the report.
    configs: dict[str, str] = {}

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def version(self) -> str:
        return importlib.metadata.version(self.dist)

    @abstractmethod
    def send(self, batch: Batch) -> float:
        """Send the batch; returns the seconds spent sending (client set-up excluded)."""

    @abstractmethod
    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        """The argv and extra environment of a worker subprocess for `spec`."""

    def describe(self, spec: WorkerSpec) -> str:
        return self.configs.get(spec.workload, "")

    def exe(self, name: str) -> str:
        """A console script of the harness's environment."""
        return str(self.ctx.bin_dir / name)


def chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(count, start + size))


def pace(start: float, i: int, rate: float | None) -> float:
    """Seconds to wait before sending the i-th task of a paced batch."""
    if rate is None:
        return 0.0
    return start + i / rate - time.perf_counter()


class SyncPeer(Peer):
    """A peer whose client API is synchronous."""

    def open(self) -> None:
        """Connect (not timed)."""

    def close(self) -> None:
        """Disconnect (not timed)."""

    @abstractmethod
    def send_one(self, kind: str, args: tuple[Any, ...]) -> None: ...

    def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    def send(self, batch: Batch) -> float:
        self.open()
        try:
            start = time.perf_counter()
            if batch.bulk and self.has_bulk:
                for part in chunks(batch.count, BULK_CHUNK):
                    self.send_many(batch.kind, [batch.args(i) for i in part])
            else:
                for i in range(batch.count):
                    wait = pace(start, i, batch.rate)
                    if wait > 0:
                        time.sleep(wait)
                    self.send_one(batch.kind, batch.args(i))
            return time.perf_counter() - start
        finally:
            self.close()


class AsyncPeer(Peer):
    """A peer whose client API is asyncio; each `send` runs on a fresh uvloop event loop."""

    async def open(self) -> None:
        """Connect (not timed)."""

    async def close(self) -> None:
        """Disconnect (not timed)."""

    @abstractmethod
    async def send_one(self, kind: str, args: tuple[Any, ...]) -> None: ...

    async def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    async def _send(self, batch: Batch) -> float:
        await self.open()
        try:
            start = time.perf_counter()
            if batch.bulk and self.has_bulk:
                for part in chunks(batch.count, BULK_CHUNK):
                    await self.send_many(batch.kind, [batch.args(i) for i in part])
            else:
                for i in range(batch.count):
                    wait = pace(start, i, batch.rate)
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self.send_one(batch.kind, batch.args(i))
            return time.perf_counter() - start
        finally:
            await self.close()

    def send(self, batch: Batch) -> float:
        return run_async(self._send(batch))


def run_async(coro: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (every async client and worker here uses it)."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def load_peer(name: str, ctx: Context) -> Peer:
    module_name, _, class_name = PEERS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    peer: Peer = cls(ctx)
    return peer
