"""Health commands: `ping` (for container and service health checks) and `check` (before a deployment)."""

from __future__ import annotations

import dataclasses
import sys

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    handle_errors,
    json_option,
    queue_option,
    run_async,
    settings_from,
)
from gopherq.cli.root import cli
from gopherq.core.health import HealthReport, probe
from gopherq.core.masking import Masker


def _report(report: HealthReport, masker: Masker, as_json: bool) -> None:
    if as_json:
        echo_json(masker.value({"ok": report.ok, **dataclasses.asdict(report)}))
    elif report.ok:
        click.echo(masker.text(report.summary()))
        for warning in report.warnings:
            click.echo(f"gopherq: warning: {masker.text(warning)}", err=True)
    else:
        click.echo(f"gopherq: error: {masker.text(report.summary())}", err=True)
    sys.exit(0 if report.ok else 1)


@cli.command()
@config_option
@queue_option
@json_option
@handle_errors
def ping(config: str | None, queue: str | None, as_json: bool) -> None:
    """Exit 0 when Redis answers, the Lua scripts load and the user may run what GoPherQ needs; 1 otherwise."""
    settings = settings_from(config)
    _report(run_async(probe(settings, queue, full=False)), Masker.from_settings(settings), as_json)


@cli.command()
@config_option
@queue_option
@json_option
@handle_errors
def check(config: str | None, queue: str | None, as_json: bool) -> None:
    """Like `ping`, and also that the server is a master of a supported version (prints what it found), with a
    warning when Redis may evict keys or keeps no append-only file."""
    settings = settings_from(config)
    _report(run_async(probe(settings, queue, full=True)), Masker.from_settings(settings), as_json)
