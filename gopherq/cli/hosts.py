"""The `hosts` command: the destinations flow control has seen, with their circuit and rate state."""

from __future__ import annotations

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    handle_errors,
    json_option,
    queue_option,
    run_async,
    settings_from,
    when,
    with_client,
)
from gopherq.cli.root import cli


@cli.command()
@config_option
@queue_option
@json_option
@handle_errors
def hosts(config: str | None, queue: str | None, as_json: bool) -> None:
    """List hosts (flow keys) under [[plugins.http.hosts]] rules: circuit, failures, rate, running tasks."""
    settings = settings_from(config)
    states = run_async(with_client(settings, queue, lambda client: client.inspect.flows(client.queue)))
    if as_json:
        echo_json(states)
        return
    for state in states:
        circuit = state["circuit"]
        if state["open_until"] and circuit == "open":
            circuit += f" until {when(state['open_until'])}"
        click.echo(
            f"{state['key']}  circuit={circuit}  failures={state['failures']}  "
            f"rate={state['rate_factor']:.0%}  running={state['running']}  last_seen={when(state['last_seen'])}"
        )
    click.echo(f"{len(states)} host(s)", err=True)
