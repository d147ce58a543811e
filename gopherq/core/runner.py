"""Running a worker process: logging set-up, the event loop (uvloop when installed), Redis, signals."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from gopherq.core.connection import Connection, describe_target
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.settings import Settings
from gopherq.core.worker import Worker

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """One stderr handler for the gopherq loggers; the process may configure others as it likes."""
    logger = logging.getLogger("gopherq")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when the `fast` extra is installed (faster I/O), asyncio's otherwise."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


async def serve(settings: Settings, plugins: PluginManager, worker_id: str | None = None) -> Worker:
    """Connect, run a worker until it is told to stop, and release Redis."""
    connection = Connection(settings, "worker")
    log.info("connecting to Redis: %s", describe_target(settings))
    redis = await connection.open()
    try:
        worker = Worker(settings, plugins, redis, worker_id)
        worker.install_signal_handlers()
        await worker.run()
        return worker
    finally:
        await connection.close()


def run_worker(settings: Settings, extra_plugins: dict[str, Any] | None = None) -> int:
    """Run one worker process in the foreground; returns the exit status."""
    plugins = load_plugins(settings, extra=extra_plugins, sinks=True)
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(settings, plugins))
    finally:
        loop.close()
    return 0
