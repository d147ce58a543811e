"""The http task's optional parts: header values from the environment, response rules, signing and callbacks.

- A header value may be `{"env": "PARTNER_TOKEN"}`: the worker reads the variable when it sends the request, so
  the secret never sits in Redis. An unset variable is a permanent failure (`invalid_request`) naming it.
- `success_status` / `retry_status` (codes, or ranges as "200-299") override "2xx is success" and the
  configured retried statuses for one task.
- `sign = true` signs the request by the Standard Webhooks scheme (the webhook sink's `sign`) with
  `[plugins.http] signing_secret`, at send time, so the timestamp is that of the attempt.
- `on_success` / `on_failure`: when the task ends, a signed POST of its (masked) result record to that URL is
  enqueued as an http task of its own (id `<task id>.on_success` / `.on_failure`), with the same retries and
  guarantees as any task. It is pushed before the task's own outcome is settled, so it is never lost; a worker
  crash in between may send it twice, with the same `webhook-id` (the callback id, or its ASCII form:
  checks.idempotency_key), by which receivers de-duplicate.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from gopherq import Masker, PermanentFailure, Task
from gopherq.plugins.http.checks import check_headers, idempotency_key

_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*-\s*([1-5]\d\d)\s*\Z")


class EnvValue(BaseModel):
    """A header value read from the worker's environment at send time."""

    model_config = ConfigDict(extra="forbid")

    env: str


def resolve_headers(headers: dict[str, str | EnvValue]) -> dict[str, str]:
    """The headers with every `{"env": NAME}` value replaced by the variable's value."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, EnvValue):
            found = os.environ.get(value.env)
            if found is None:
                raise PermanentFailure(
                    f"header {name!r}: environment variable {value.env} is not set on worker", reason="invalid_request"
                )
            try:
                check_headers({name: found})
            except ValueError as exc:
                raise PermanentFailure(
                    f"{exc} (from environment variable {value.env})", reason="invalid_request"
                ) from None
            out[name] = found
        else:
            out[name] = value
    return out


def parse_statuses(values: Iterable[int | str]) -> frozenset[int]:
    """Status codes and "low-high" ranges as one set; raises ValueError naming a bad entry."""
    codes: set[int] = set()
    for value in values:
        if isinstance(value, int) and 100 <= value <= 599:
            codes.add(value)
            continue
        match = _RANGE.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) > int(match.group(2)):
            raise ValueError(f"{value!r} is not a status code (100-599) or a range such as '200-299'")
        codes.update(range(int(match.group(1)), int(match.group(2)) + 1))
    return frozenset(codes)


def callback_tasks(task: Task, record: bytes, succeeded: bool, masker: Masker) -> list[bytes]:
    """The envelope of the task's `on_success` / `on_failure` callback, when it has one for this end."""
    payload = task.payload
    url = getattr(payload, "on_success" if succeeded else "on_failure", None)
    if url is None:
        return []
    kind = "on_success" if succeeded else "on_failure"
    body = {
        "type": "task.succeeded" if succeeded else "task.failed",
        "timestamp": time.time(),
        "data": masker.value(json.loads(record)) if record else {"id": task.id},
    }
    envelope: dict[str, Any] = {
        "id": f"{task.id}.{kind}",
        "type": "http",
        "method": "POST",
        "url": url,
        "headers": {"Content-Type": "application/json", "webhook-id": idempotency_key(f"{task.id}.{kind}")},
        "body": body,
        "sign": True,
    }
    if task.queue is not None:
        envelope["queue"] = task.queue
    return [json.dumps(envelope, separators=(",", ":")).encode()]
