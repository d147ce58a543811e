"""`--payload`: a task's own fields as a JSON object, given inline or as `@file.json` (`@-`: standard input)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gopherq.core.errors import TaskRejected
from gopherq.core.jsontext import parse_json
from gopherq.core.task import CONTROL_FIELDS


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    """The `--payload` callback: a JSON object, inline or `@path`, parsed as a worker parses a task (so bad JSON
    is refused the same way)."""
    if value is None:
        return None
    text = value
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {source}: {exc.strerror}", ctx, param) from None
    try:
        parsed = parse_json(text)
    except TaskRejected as exc:
        raise click.BadParameter(exc.message, ctx, param) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object (the task's fields), got {type(parsed).__name__}", ctx, param)
    return parsed


#: Names `--payload` may not use: the envelope's control fields, and the client's own keyword (`delay`). Each has
#: an option of `gopherq enqueue` (--id, --max-attempts, ...), or is GoPherQ's to set.
NOT_PAYLOAD = CONTROL_FIELDS | {"delay"}


def task_fields(task_type: str, payload: dict[str, Any] | None, http: dict[str, Any]) -> dict[str, Any]:
    """The executor's fields of the task `gopherq enqueue` makes: `--payload`, plus for an `http` task the
    fields its options give (`http`: url, method, headers, body, each None when not given). A field given both
    ways, an HTTP option on another type, or a control field in the payload is a usage error naming it."""
    fields = dict(payload or {})
    control = sorted(NOT_PAYLOAD.intersection(fields))
    if control:
        raise click.UsageError(
            f"--payload holds the task's own fields; {', '.join(control)} is set with an option of its own"
            " (--id, --max-attempts, --timeout, --delay, --priority, --unique-key, --unique-for) or by GoPherQ"
        )
    given = {name: value for name, value in http.items() if value is not None}
    if task_type != "http":
        if given:
            raise click.UsageError(
                f"--url, --method, --header, --body and --json-body make http tasks; a {task_type!r} task's fields"
                " go in --payload"
            )
        return fields
    both = sorted(set(given) & set(fields))
    if both:
        raise click.UsageError(f"{', '.join(both)} given both in --payload and as an option: give it once")
    fields.update(given)
    fields.setdefault("method", "GET")
    return fields
