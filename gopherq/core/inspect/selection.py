"""Choosing dead letters by what they say: reason, target host, status code, error text and age, a bounded window
at a time, for listing and for bulk requeue or delete.

A filter is checked against at most SCAN_WINDOW entries (and SCAN_BYTES of them) per call, newest first from a
cursor (the death time of the last entry looked at, exclusive), so a request costs the same whatever the size of the
dead-letter queue; the answer says where to go on from (`next_cursor`, None at the end). A filter matches what an
operator sees: the error text is matched masked, so a filter cannot be used to guess a secret. The host is that of
the task's URL-like field (`url`, `uri`, `endpoint`, `target`) and the status code is the error's
`details.status_code` (what the HTTP executor records; any executor may record one): the core reads both without
knowing what an HTTP task is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gopherq.core import codec
from gopherq.core.errors import ConfigError
from gopherq.core.masking import Masker
from gopherq.core.outcomes import raw_from_entry

#: Most dead letters one call looks at, and most bytes of them read.
SCAN_WINDOW = 1000
SCAN_BYTES = 8 * 1024 * 1024
_CHUNK = 100

#: Envelope fields a target host is read from.
_TARGET_FIELDS = ("url", "uri", "endpoint", "target")

#: Longest filter text accepted.
_TEXT_MAX = 200


def _seconds(value: str, name: str) -> float:
    """`90`, `90s`, `15m`, `2h` or `1d` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:], None)
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ConfigError(f"{name}: expected a duration such as 90s, 15m, 2h or 1d, got {value!r}") from None
    if seconds < 0 or seconds != seconds:
        raise ConfigError(f"{name}: must be a positive duration, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """What a dead letter must match (every field optional; all given must match). `older_than`/`newer_than`:
    seconds since it died."""

    reason: str | None = None
    host: str | None = None
    status: int | None = None
    text: str | None = None
    older_than: float | None = None
    newer_than: float | None = None

    #: The names `from_mapping` reads (query parameters, form fields, CLI options).
    FIELDS = ("reason", "host", "status", "text", "older_than", "newer_than")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DeadFilter:
        """A filter from strings (a query string, a form, CLI options); empty values are left out. ConfigError
        (one line) for a bad value."""
        given = {name: str(values[name]).strip() for name in cls.FIELDS if values.get(name) not in (None, "")}
        status = given.get("status")
        if status is not None and not (status.isdigit() and 100 <= int(status) <= 599):
            raise ConfigError(f"status: expected an HTTP status code from 100 to 599, got {status!r}")
        for name in ("reason", "host", "text"):
            if len(given.get(name, "")) > _TEXT_MAX:
                raise ConfigError(f"{name}: at most {_TEXT_MAX} characters")
        return cls(
            reason=given.get("reason"),
            host=given["host"].lower() if "host" in given else None,
            status=int(status) if status is not None else None,
            text=given["text"].lower() if "text" in given else None,
            older_than=_seconds(given["older_than"], "older_than") if "older_than" in given else None,
            newer_than=_seconds(given["newer_than"], "newer_than") if "newer_than" in given else None,
        )

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS if getattr(self, name) is not None}

    def matches(self, entry: dict[str, Any], masker: Masker, now: float) -> bool:
        """Whether a stored entry (as DeadLetters.get returns it, unmasked) matches."""
        if self.reason is not None and entry.get("reason") != self.reason:
            return False
        died = entry.get("dead_at")
        age = now - died if isinstance(died, (int, float)) else None
        if self.older_than is not None and (age is None or age < self.older_than):
            return False
        if self.newer_than is not None and (age is None or age > self.newer_than):
            return False
        error = _mapping(entry.get("error"))
        details = _mapping(error.get("details"))
        if self.status is not None and details.get("status_code") != self.status:
            return False
        if self.text is not None:
            said = masker.text(f"{error.get('reason', '')}: {error.get('message', '')}").lower()
            if self.text not in said:
                return False
        return self.host is None or target_host(entry) == self.host


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def target_host(entry: dict[str, Any]) -> str | None:
    """The host of the dead task's URL-like field (lower case), None when it has none."""
    try:
        envelope = codec.loads(raw_from_entry(entry))
    except (codec.JSONDecodeError, ValueError, TypeError):
        return None
    if not isinstance(envelope, dict):
        return None
    for name in _TARGET_FIELDS:
        value = envelope.get(name)
        if isinstance(value, str):
            try:
                host = urlsplit(value).hostname
            except ValueError:
                return None
            return host.lower() if host else None
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """The dead letters of one window that matched (`ids`, newest first, at most the limit asked for), how many
    were looked at, and the cursor to go on from (None: the window reached the oldest)."""

    ids: list[str]
    scanned: int
    next_cursor: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "scanned": self.scanned, "next_cursor": self.next_cursor}


async def select_dead(
    redis: Any,
    dead_key: str,
    index_key: str,
    flt: DeadFilter,
    masker: Masker,
    cursor: float | None = None,
    limit: int = SCAN_WINDOW,
) -> Selection:
    """The entries matching `flt` among at most SCAN_WINDOW (and SCAN_BYTES) dead letters that died before
    `cursor` (Unix ms; None: from the newest), newest first, at most `limit` of them."""
    top = "+inf" if cursor is None else f"({cursor}"
    ids_scores = await redis.zrevrangebyscore(index_key, top, "-inf", start=0, num=SCAN_WINDOW, withscores=True)
    now = time.time()
    matched: list[str] = []
    scanned, read = 0, 0
    last: float | None = None
    for start in range(0, len(ids_scores), _CHUNK):
        chunk = ids_scores[start : start + _CHUNK]
        names = [entry_id for entry_id, _ in chunk]
        raws = await redis.hmget(dead_key, names)
        for (entry_id, score), raw in zip(chunk, raws, strict=True):
            scanned += 1
            last = float(score)
            if raw is None:
                continue
            read += len(raw)
            name = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            try:
                entry = codec.loads(raw)
            except codec.JSONDecodeError:
                continue
            if isinstance(entry, dict) and flt.matches(entry, masker, now):
                matched.append(name)
                if len(matched) >= limit:
                    return Selection(matched, scanned, last)
        if read >= SCAN_BYTES:
            return Selection(matched, scanned, last)
    more = len(ids_scores) >= SCAN_WINDOW
    return Selection(matched, scanned, last if more else None)
