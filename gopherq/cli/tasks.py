"""Commands for single tasks: `enqueue` and `result`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from gopherq.cli.common import (
    config_option,
    echo_json,
    fail,
    handle_errors,
    json_option,
    queue_option,
    run_async,
    settings_from,
    with_client,
)
from gopherq.cli.payload import json_object, task_fields
from gopherq.cli.root import cli
from gopherq.client import AsyncClient
from gopherq.core.jsontext import parse_json


@cli.command()
@config_option
@queue_option
@click.option("--type", "task_type", default="http", show_default=True, help="task type: the executor that runs it")
@click.option(
    "--payload", callback=json_object, metavar="JSON|@FILE", help="the task's own fields: a JSON object, or @file.json"
)
@click.option("--url", default=None, help="http: URL to call")
@click.option("--method", "-X", default=None, help="http: method (default GET)")
@click.option("--header", "-H", "headers", multiple=True, help="http: 'Name: value' (repeatable)")
@click.option("--body", default=None, help="http: request body (text)")
@click.option("--json-body", default=None, help="http: request body (JSON)")
@click.option("--id", "task_id", default=None, help="task id (default: generated)")
@click.option("--delay", type=float, default=None, help="run after this many seconds")
@click.option("--max-attempts", type=int, default=None)
@click.option("--timeout", type=float, default=None, help="time limit of one attempt, seconds")
@click.option("--priority", type=click.Choice(["high", "default", "low"]), default=None, help="priority level")
@click.option("--unique-key", default=None, help="refuse the task while one with this key is waiting or running")
@click.option("--unique-for", type=float, default=None, help="seconds the uniqueness lock lasts at most")
@click.option("--fair-key", default=None, help="the tenant the task belongs to: keys take turns (see `keys`)")
@click.option("--wait", "wait", type=float, default=None, help="wait this many seconds for the result")
@handle_errors
def enqueue(
    config: str | None,
    queue: str | None,
    task_type: str,
    payload: dict[str, Any] | None,
    url: str | None,
    method: str | None,
    headers: tuple[str, ...],
    body: str | None,
    json_body: str | None,
    task_id: str | None,
    delay: float | None,
    max_attempts: int | None,
    timeout: float | None,
    priority: str | None,
    unique_key: str | None,
    unique_for: float | None,
    fair_key: str | None,
    wait: float | None,
) -> None:
    """Enqueue a task and print its id (with --wait, then its result): an HTTP task from --url and the HTTP options,
    or a task of any type from --type and --payload, validated by its executor as a worker would."""
    settings = settings_from(config)
    parsed_headers: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {header!r}", param_hint="--header")
        parsed_headers[name.strip()] = value.strip()
    if body is not None and json_body is not None:
        raise click.UsageError("give --body or --json-body, not both")
    request_body: Any = body
    if json_body is not None:
        request_body = parse_json(json_body)  # rejected exactly as a worker would reject it
    http = {"url": url, "method": method, "headers": parsed_headers or None, "body": request_body}
    fields = task_fields(task_type, payload, http)

    async def action(client: AsyncClient) -> Any:
        client.origin = "cli"  # for the plugins' gopherq_before_enqueue (the otel plugin reads TRACEPARENT)
        task = client.task(
            task_type,
            id=task_id,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            priority=priority,
            unique_key=unique_key,
            unique_for=unique_for,
            fair_key=fair_key,
            **fields,
        )
        [outcome] = await client.submit([task])
        click.echo(outcome.id)
        if outcome.duplicate:
            click.echo(f"gopherq: a task with this uniqueness key is already queued or running: {outcome.id}", err=True)
        if wait is not None:
            return await client.wait(outcome.id, wait)
        return None

    record = run_async(with_client(settings, queue, action))
    if wait is not None:
        if record is None or not record.status.final:
            fail(f"no final result within {wait}s", 1)
        else:
            echo_json(record.to_dict())
            sys.exit(0 if record.status.value == "succeeded" else 1)


@cli.command()
@config_option
@queue_option
@click.argument("task_id")
@json_option
@handle_errors
def result(config: str | None, queue: str | None, task_id: str, as_json: bool) -> None:
    """Show a task's result (exit 1 when unknown or not finished)."""
    settings = settings_from(config)
    record = run_async(with_client(settings, queue, lambda client: client.result(task_id)))
    if record is None:
        fail(f"no result for task {task_id} (unknown, not run yet, or expired)", 1)
        return
    if as_json:
        echo_json(record.to_dict())
    else:
        line = f"{record.id}: {record.status.value} after {record.attempts} attempt(s)"
        if record.error:
            line += f" - {record.error.reason}: {record.error.message}"
        http = isinstance(record.result, dict) and "status_code" in record.result
        if http:
            line += f" - HTTP {record.result['status_code']}"
        click.echo(line)
        if record.call is not None:  # on stderr: stdout stays the summary line, then the response body
            click.echo(f"called: {json.dumps(record.call, default=str)}", err=True)
        if http and record.result.get("body") not in (None, ""):
            click.echo(str(record.result["body"]))  # an HTTP task's result, for a reader: the response body
        elif not http and record.result is not None:
            click.echo(f"result: {json.dumps(record.result, default=str)}")
    if not record.status.final:
        sys.exit(1)
