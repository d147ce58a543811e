"""The `keys` commands: each fair key's backlog, running tasks, weight and limits; change them at run time."""

from __future__ import annotations

from typing import Any

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
from gopherq.core.fair import FairKeys
from gopherq.core.fairspec import KeyLimits, parse_rate
from gopherq.core.inspect.fair_keys import KeyInfo


def rate_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A rate as `5/s`, `300/m`, `10/h` or a number per second (0: no limit)."""
    if value is None:
        return None
    try:
        return parse_rate(value) or 0.0
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def limits_line(limits: KeyLimits) -> str:
    parts = [f"weight={limits.weight:g}"]
    if limits.concurrency:
        parts.append(f"concurrency={limits.concurrency}")
    if limits.rate:
        parts.append(f"rate={limits.rate:g}/s" + (f" burst={limits.burst}" if limits.burst > 1 else ""))
    if limits.ordered:
        parts.append("ordered")
    if limits.paused:
        parts.append("PAUSED")
    return "  ".join(parts)


def key_line(info: KeyInfo) -> str:
    wait = "-" if info.oldest_wait is None else f"{info.oldest_wait:.1f}s"
    line = f"{info.key}  backlog={info.backlog}  running={info.running}  oldest_wait={wait}  {limits_line(info.limits)}"
    if info.parked == "limit":
        line += "  (at its limit)"
    elif info.parked in ("rate", "retry"):
        line += f"  (waits for its {info.parked} until {when(info.parked_until)})"
    return line


@cli.group(invoke_without_command=True)
@config_option
@queue_option
@json_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000), help="most keys listed")
@click.pass_context
@handle_errors
def keys(ctx: click.Context, config: str | None, queue: str | None, as_json: bool, limit: int) -> None:
    """List the fair keys with waiting tasks or settings, most backlogged first (see `keys set`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from(config)
    infos = run_async(with_client(settings, queue, lambda client: client.inspect.fair_keys(client.queue, limit)))
    if as_json:
        echo_json([info.to_dict() for info in infos])
        return
    for info in infos:
        click.echo(key_line(info))
    click.echo(f"{len(infos)} key(s)", err=True)


def _change(config: str | None, queue: str | None, as_json: bool, key: str, action: str, **changes: Any) -> None:
    settings = settings_from(config)

    async def run(client: Any) -> KeyLimits:
        control: FairKeys = client.inspect.fair_control(client.queue)
        if action == "set":
            return await control.set(key, **changes)
        actions = {"pause": control.pause, "resume": control.resume, "reset": control.reset}
        return await actions[action](key)

    limits = run_async(with_client(settings, queue, run))
    if as_json:
        echo_json({"key": key, **limits.to_dict()})
    else:
        click.echo(f"{key}  {limits_line(limits)}")


@keys.command("set")
@config_option
@queue_option
@json_option
@click.argument("key")
@click.option("--weight", type=click.FloatRange(min=0, min_open=True), help="share of the claims among busy keys")
@click.option("--concurrency", type=click.IntRange(min=0), help="most running tasks of the key (0: no limit)")
@click.option("--rate", callback=rate_option, help="most tasks started: 5/s, 300/m, 10/h (0: no limit)")
@click.option("--burst", type=click.IntRange(min=1), help="tasks allowed at once above the rate")
@click.option("--ordered/--unordered", default=None, help="one task of the key in flight at a time, in order")
@handle_errors
def set_key(
    config: str | None,
    queue: str | None,
    as_json: bool,
    key: str,
    weight: float | None,
    concurrency: int | None,
    rate: float | None,
    burst: int | None,
    ordered: bool | None,
) -> None:
    """Change KEY's weight and limits from now on (what is not given stays as it is)."""
    changes = {"weight": weight, "concurrency": concurrency, "burst": burst, "ordered": ordered}
    if rate is not None:
        changes["rate"] = rate or 0.0
    _change(config, queue, as_json, key, "set", **changes)


@keys.command("pause")
@config_option
@queue_option
@json_option
@click.argument("key")
@handle_errors
def pause_key(config: str | None, queue: str | None, as_json: bool, key: str) -> None:
    """Claim no task of KEY until it is resumed (running tasks finish)."""
    _change(config, queue, as_json, key, "pause")


@keys.command("resume")
@config_option
@queue_option
@json_option
@click.argument("key")
@handle_errors
def resume_key(config: str | None, queue: str | None, as_json: bool, key: str) -> None:
    """Let KEY's tasks be claimed again."""
    _change(config, queue, as_json, key, "resume")


@keys.command("reset")
@config_option
@queue_option
@json_option
@click.argument("key")
@handle_errors
def reset_key(config: str | None, queue: str | None, as_json: bool, key: str) -> None:
    """Forget KEY's run-time settings: the [fair] settings apply to it again."""
    _change(config, queue, as_json, key, "reset")
