"""The envelope's `trace` field: W3C Trace Context (`traceparent`, `tracestate`) and W3C Baggage, checked and kept.

The core only keeps this field with the task (across retries, recoveries and dead letters) and reads the trace id
out of it for events, result records and dead letters; the `otel` plugin is what fills and reads it. The trace id is
part of a documented text format (`version-traceid-parentid-flags`), so reading it needs no tracing library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gopherq.core.errors import TaskRejected

#: The keys of the `trace` object; `traceparent` is required.
TRACE_KEYS = ("traceparent", "tracestate", "baggage")

#: W3C Trace Context, version 00 (and any later version, whose first four fields have the same form): lower-case
#: hex, a trace id and a parent id that are not all zeros, version ff forbidden.
TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-[\x21-\x7e]*)?\Z"
)

#: Longest `tracestate` kept: W3C asks propagators to pass on at least 512 characters and lets them cut the rest.
TRACESTATE_MAX = 512
#: Longest `baggage`: W3C Baggage's own limit for the whole header.
BAGGAGE_MAX = 8192
#: Longest `traceparent` of a future version (version 00 is exactly 55 characters).
TRACEPARENT_MAX = 256

_LIMITS = {"traceparent": TRACEPARENT_MAX, "tracestate": TRACESTATE_MAX, "baggage": BAGGAGE_MAX}

#: Header values are sent as they are by an executor that propagates them: printable ASCII only (no CR/LF).
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")


def _reject(message: str) -> TaskRejected:
    return TaskRejected("schema_invalid", message)


def is_traceparent(value: str) -> bool:
    """Whether `value` is a W3C `traceparent` the envelope keeps: lower-case hex, ids not all zeros, version ff
    forbidden, and a version 00 value exactly 55 characters (a later version may add fields after the four)."""
    return TRACEPARENT.match(value) is not None and (len(value) == 55 or not value.startswith("00-"))


def trace_field(carrier: Mapping[str, str]) -> dict[str, str] | None:
    """The envelope's `trace` field made from W3C headers (what a propagator wrote into `carrier`), within the
    limits `check_trace` applies: None without a usable `traceparent`; a `tracestate` or `baggage` over its limit
    or with anything but printable ASCII is left out (W3C lets a propagator drop either), so a producer's tracing
    can never get its task refused."""
    parent = carrier.get("traceparent")
    if type(parent) is not str or len(parent) > TRACEPARENT_MAX or not is_traceparent(parent):
        return None
    field = {"traceparent": parent}
    for key in ("tracestate", "baggage"):
        value = carrier.get(key)
        if type(value) is str and len(value) <= _LIMITS[key] and _PRINTABLE.match(value):
            field[key] = value
    return field


def check_trace(value: Any) -> dict[str, str]:
    """The `trace` field, checked: an object with a W3C `traceparent` and, optionally, `tracestate` and `baggage`
    strings, each printable ASCII within its size limit. Raises TaskRejected naming what is wrong."""
    if not isinstance(value, dict):
        raise _reject(f"field 'trace' must be an object with a 'traceparent', got {type(value).__name__}")
    unknown = [key for key in value if key not in _LIMITS]
    if unknown:
        raise _reject(f"field 'trace.{unknown[0]}' is not a field of 'trace' (use {', '.join(TRACE_KEYS)})")
    for key, item in value.items():
        if type(item) is not str or len(item) > _LIMITS[key] or not _PRINTABLE.match(item):
            raise _reject(f"field 'trace.{key}' must be a string of at most {_LIMITS[key]} printable ASCII characters")
    parent = value.get("traceparent")
    if parent is None:
        raise _reject("field 'trace.traceparent' is required")
    if not is_traceparent(parent):
        raise _reject(f"field 'trace.traceparent' is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>): {parent!r}")
    return value


def trace_id(trace: dict[str, str] | None) -> str | None:
    """The trace id (32 hex digits) of a checked `trace` field, or None without one."""
    return None if trace is None else trace["traceparent"][3:35]
