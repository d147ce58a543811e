"""Running the web server in the foreground: Redis through the client, the application, signals, clean exit."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gopherq.client import AsyncClient
from gopherq.core.connection import describe_target
from gopherq.core.runner import quiet_garbage_collector
from gopherq.core.settings import Settings
from gopherq.web.app import Area, create_app
from gopherq.web.security import check_bind

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event | None = None, areas: list[Area] | None = None) -> None:
    """Serve `settings.web.host:port` until SIGINT/SIGTERM (or `stop` is set). Starts even when Redis is down:
    /readyz says so until it answers."""
    cfg = settings.web
    check_bind(cfg, cfg.host)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClient(settings, sinks=True) as client:
        app = create_app(settings, client.redis, bus=client.bus, areas=areas)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port)
            await site.start()
            quiet_garbage_collector()  # long-running like a worker: the same collector tuning (core/runner.py)
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            auth = "token" if cfg.token else ("basic auth" if cfg.password else "no authentication: loopback only")
            log.info("dashboard on http://%s:%s/ (%s); Redis: %s", shown, port, auth, describe_target(settings))
            await stop.wait()
            log.info("stopping the web server")
        finally:
            await runner.cleanup()
