"""JSON encoding and decoding for everything GoPherQ stores, in one place so the hot path uses one fast codec.

orjson is used because task envelopes, results and events are (de)serialised once per task on the worker's
hot path, where it is several times faster than the standard library.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def _default(value: Any) -> Any:
    """Encode the few non-JSON types GoPherQ records (pydantic models, secrets, sets, bytes)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def dumps(value: Any) -> bytes:
    """Serialise to compact JSON bytes."""
    return orjson.dumps(value, default=_default)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises JSONDecodeError (a ValueError) on bad input, including nesting past 1024 levels."""
    return orjson.loads(data)
