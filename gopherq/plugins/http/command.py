"""An HTTP task as the curl command that makes the same request (the dashboard's "copy as curl").

Rendered from the envelope as the inspection layer shows it, so masked values stay masked (an operator fills them
in, or edits and requeues the task, which keeps the stored secrets). Every value is shell-quoted; a header whose
value comes from the worker's environment (`{"env": "NAME"}`) is rendered as `"$NAME"`, which the shell expands
from the operator's own environment.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

#: An environment variable name a header may name (anything else is not rendered as an expansion).
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def curl_command(envelope: dict[str, Any]) -> str | None:
    """`curl ...` for an HTTP task envelope; None when it has no URL."""
    url = envelope.get("url")
    if not isinstance(url, str):
        return None
    method = str(envelope.get("method") or "GET").upper()
    parts = ["curl", "--request", shlex.quote(method)]
    headers = envelope.get("headers", envelope.get("header"))
    for name, value in (headers or {}).items() if isinstance(headers, dict) else ():
        if isinstance(value, dict) and isinstance(value.get("env"), str) and _ENV_NAME.match(value["env"]):
            parts += ["--header", f'"{_double_quoted(str(name))}: ${value["env"]}"']
        else:
            parts += ["--header", shlex.quote(f"{name}: {value}")]
    body = envelope.get("body")
    if body is not None and body != "":
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        if not isinstance(body, str) and not _has_header(headers, "content-type"):
            parts += ["--header", shlex.quote("Content-Type: application/json")]
        parts += ["--data-binary", shlex.quote(text)]
    if envelope.get("follow_redirects"):
        parts.append("--location")
    timeout = envelope.get("timeout")
    if isinstance(timeout, (int, float)) and timeout > 0:
        parts += ["--max-time", shlex.quote(f"{timeout:g}")]
    parts.append(shlex.quote(url))
    return " ".join(parts)


def _double_quoted(text: str) -> str:
    return re.sub(r'(["\\$`])', r"\\\1", text)


def _has_header(headers: Any, name: str) -> bool:
    return isinstance(headers, dict) and any(str(key).lower() == name for key in headers)
