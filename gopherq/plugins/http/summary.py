"""What an http task calls, as its result record and dead letter keep it (the executor's `describe_call`).

Method, URL and headers as the task gives them, masked (`[masking]`: credentials in the URL, secret query
parameters, secret header names); a header read from the environment is shown by the variable's name, never its
value; and the request body's size and SHA-256, never the body itself. The headers the executor adds per attempt
(User-Agent, Idempotency-Key, a signature) are not part of it: they are the executor's, not the task's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gopherq import Masker
from gopherq.plugins.http.extras import EnvValue

#: The digest of an empty body (most calls'): computed once.
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Most headers a call summary lists (a task may send more; the count says how many there were).
MAX_HEADERS = 50


def encoded_body(body: str | dict[str, Any] | list[Any] | None, signed: bool) -> bytes:
    """The request body's bytes as the executor sends them: text as UTF-8; JSON compact, as httpx encodes a
    `json=` body, or, for a signed task, as the executor itself encodes it before signing."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if signed:
        return json.dumps(body, separators=(",", ":")).encode()
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def call_summary(method: str, url: str, headers: dict[str, Any], content: bytes, masker: Masker) -> dict[str, Any]:
    """The call, masked and small: at most MAX_HEADERS headers; no body, only its size and digest."""
    shown: dict[str, str] = {}
    for name, value in list(headers.items())[:MAX_HEADERS]:
        shown[name] = f"(from environment variable {value.env})" if isinstance(value, EnvValue) else str(value)
    summary: dict[str, Any] = {
        "method": method,
        "url": masker.url(url),
        "headers": masker.value(shown),
        "body_bytes": len(content),
        "body_sha256": hashlib.sha256(content).hexdigest() if content else _EMPTY_SHA256,
    }
    if len(headers) > MAX_HEADERS:
        summary["headers_count"] = len(headers)
    return summary
