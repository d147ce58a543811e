"""The `api` command: the `/v1` HTTP enqueue API (and the health probes) without the dashboard."""

from __future__ import annotations

from gopherq.cli.common import bind_options, config_option, handle_errors, settings_from
from gopherq.cli.root import cli
from gopherq.core.runner import run_on_fast_loop
from gopherq.web.app import API_AREAS
from gopherq.web.server import serve


@cli.command()
@config_option
@bind_options
@handle_errors
def api(config: str | None, host: str | None, port: int | None) -> None:
    """Serve the /v1 enqueue API, /healthz and /readyz until SIGTERM/SIGINT (`gopherq web` serves them too).

    Binds 127.0.0.1 unless told otherwise; any other address needs web.token or web.password."""
    settings = settings_from(config, **{"web.host": host, "web.port": port})
    run_on_fast_loop(serve(settings, areas=API_AREAS))  # uvloop with the `fast` extra, as workers
