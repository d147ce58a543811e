"""Parsing JSON that becomes (part of) a task: one place, so every entry point refuses the same input the same way.

Kept apart from core/task.py, which holds the envelope and its field rules; re-exported there.
"""

from __future__ import annotations

from typing import Any

from gopherq.core import codec
from gopherq.core.errors import TaskRejected

#: The codec writes at most this many levels of nesting: a task nested deeper could be read but never written
#: back (as a retry, a recovery or a dead letter), so it is refused as unparseable.
MAX_NESTING = 254
NESTED_TOO_DEEPLY = f"invalid JSON: nested more than {MAX_NESTING} levels deep"


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON that will become (part of) a task; raises TaskRejected('parse_error') naming the problem."""
    try:
        obj = codec.loads(raw)
    except codec.JSONDecodeError as exc:
        detail = str(exc)
        if "depth" in detail.lower() or "recursion" in detail.lower():
            raise TaskRejected("parse_error", NESTED_TOO_DEEPLY) from None
        raise TaskRejected("parse_error", f"invalid JSON: {detail}") from None
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > MAX_NESTING:  # cheap pre-check; only such input pays for the real one
        try:
            codec.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError: recursion limit
            task_id = obj.get("id") if isinstance(obj, dict) else None
            raise TaskRejected(
                "parse_error", NESTED_TOO_DEEPLY, task_id=task_id if isinstance(task_id, str) and task_id else None
            ) from None
    return obj
