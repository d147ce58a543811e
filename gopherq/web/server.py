"""Running the web server in the foreground: Redis through the client, the application, signals, clean exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from aiohttp import web

from gopherq.client import AsyncClient
from gopherq.core.connection import describe_target
from gopherq.core.errors import ConfigError
from gopherq.core.runner import WEB_GC_YOUNG_THRESHOLD, quiet_garbage_collector
from gopherq.core.settings import Settings
from gopherq.web.app import Area, create_app
from gopherq.web.security import check_bind

log = logging.getLogger(__name__)


def check_address(host: str, port: int) -> None:
    """Fail with one line, before anything is started, when the address cannot be bound (a port in use, an
    address that is not this machine's)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
                probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def serve(settings: Settings, stop: asyncio.Event | None = None, areas: list[Area] | None = None) -> None:
    """Serve `settings.web.host:port` until SIGINT/SIGTERM (or `stop` is set). Starts even when Redis is down:
    /readyz says so until it answers."""
    cfg = settings.web
    check_bind(cfg, cfg.host)
    check_address(cfg.host, cfg.port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClient(settings, sinks=True) as client:
        app = create_app(settings, client.connected(), bus=client.bus, areas=areas, plugins=client.plugins)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port)
            try:
                await site.start()
            except OSError as exc:  # taken since check_address looked
                raise ConfigError(f"web: cannot listen on {cfg.host}:{cfg.port}: {exc}") from None
            quiet_garbage_collector(WEB_GC_YOUNG_THRESHOLD)  # long-running like a worker (core/runner.py)
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            auth = "token" if cfg.token else ("basic auth" if cfg.password else "no authentication: loopback only")
            log.info("dashboard on http://%s:%s/ (%s); Redis: %s", shown, port, auth, describe_target(settings))
            await stop.wait()
            log.info("stopping the web server")
        finally:
            await runner.cleanup()
