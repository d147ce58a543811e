"""The `web` command: the dashboard, the health probes and /metrics on one HTTP server."""

from __future__ import annotations

from gopherq.cli.common import bind_options, config_option, handle_errors, settings_from
from gopherq.cli.root import cli
from gopherq.core.runner import run_on_fast_loop
from gopherq.web.server import serve


@cli.command()
@config_option
@bind_options
@handle_errors
def web(config: str | None, host: str | None, port: int | None) -> None:
    """Serve the web dashboard, /healthz, /readyz and /metrics until SIGTERM/SIGINT.

    Binds 127.0.0.1 unless told otherwise; any other address needs web.token or web.password."""
    settings = settings_from(config, **{"web.host": host, "web.port": port})
    run_on_fast_loop(serve(settings))  # uvloop with the `fast` extra, as workers
