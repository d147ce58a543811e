"""Bounding what GoPherQ stores and shows: each text cut to a byte limit, each value cut once its budget is spent,
and every cut recorded under the path of what was cut.

One walker for every place a value of unknown size leaves a bounded home: a dead letter's error, a stream event,
and every field a page, a fragment or an API answer shows (the inspection layer bounds those, see
core/inspect/inspector.py). A cut is recorded in a `Cuts` mapping, path -> what the whole was: `{"bytes": n}` for
a text (its full UTF-8 size) or `{"items": n}` for a list or an object shortened. Paths read like `result.body`,
`envelope.headers.X-A` or `events[3].data`. A text cut in the middle of a URL loses that URL (see
`masking.drop_cut_url`).
"""

from __future__ import annotations

from typing import Any

import orjson

from gopherq.core.masking import drop_cut_url

#: Most UTF-8 bytes of one text a page, a fragment or an API answer shows.
SHOWN_TEXT = 16 * 1024

#: Most bytes (as compact JSON, before escaping) of one stored field a page or an answer shows, all its parts
#: together: an envelope, a result record, a dead letter.
SHOWN_FIELD = 64 * 1024

#: The same two limits for each event (in the stream, and as a timeline or `gopherq events` shows it).
EVENT_TEXT = 4 * 1024
EVENT_FIELD = 8 * 1024

Cuts = dict[str, dict[str, int]]

#: What a number, a boolean or a null costs in the budget (its JSON text is about this long).
_SCALAR_COST = 6


def utf8_size(text: str) -> int:
    """The size of `text` in UTF-8 bytes (without copying it when it is ASCII, as most stored text is)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def cut_text(text: str, limit: int) -> str:
    """`text` itself when its UTF-8 form fits in `limit` bytes, else its longest prefix that does (never half a
    character). Only the prefix is encoded: cutting a 100 MB text costs what `limit` bytes cost."""
    if len(text) <= limit // 4:
        return text  # even at 4 bytes a character it fits
    head = text[:limit]
    data = head.encode("utf-8", "surrogatepass")
    if len(data) <= limit and len(head) == len(text):
        return text
    return data[:limit].decode("utf-8", "ignore")


def cut_bytes(data: bytes, limit: int) -> bytes:
    """The first `limit` bytes of `data`, one to three fewer when the cut would split a UTF-8 character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and limit - end < 3 and data[end] & 0xC0 == 0x80:  # a continuation byte: back off
        end -= 1
    return data[:end] if data[end] & 0xC0 != 0x80 else data[:limit]


def within(value: Any, *, text: int, total: int) -> bool:
    """Whether `bounded(value, text=text, total=total)` would cut nothing, known without walking `value`: its
    compact JSON is at most `text` bytes (so no text in it is longer) and at most a sixth of `total` (the walk
    charges no part more than six times its JSON size: a scalar costs _SCALAR_COST, a text or a key its size and
    quotes). False also when orjson cannot encode `value` as it is (a key that is not a string, bytes...)."""
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        return False
    return size <= text and size * _SCALAR_COST < total


def bounded(value: Any, *, text: int, total: int, path: str = "", cuts: Cuts | None = None) -> Any:
    """`value` (anything JSON-like) with no text over `text` UTF-8 bytes and, as compact JSON, about `total`
    bytes at most (a list or an object is cut short once the budget is spent). Each cut is added to `cuts`
    under `path`; nothing is added when nothing was cut. Returns `value` itself when it is a scalar."""
    return _Walk(text, total, cuts if cuts is not None else {}).value(value, path)


class _Walk:
    """One bounding pass: the budget left, and the cuts made so far."""

    __slots__ = ("budget", "cuts", "text")

    def __init__(self, text: int, total: int, cuts: Cuts) -> None:
        self.text = text
        self.budget = total
        self.cuts = cuts

    def value(self, item: Any, path: str) -> Any:
        if isinstance(item, str):
            return self._text(item, path)
        if isinstance(item, dict):
            return self._mapping(item, path)
        if isinstance(item, (list, tuple)):
            return self._sequence(item, path)
        if isinstance(item, (bytes, bytearray)):
            return self._text(item.decode("utf-8", "replace"), path)
        self.budget -= _SCALAR_COST
        return item

    def _text(self, item: str, path: str) -> str:
        limit = max(0, min(self.text, self.budget))
        shown = cut_text(item, limit)
        if shown is not item:
            shown = drop_cut_url(shown)  # half a URL cannot be masked reliably
            self.cuts[path] = {"bytes": utf8_size(item)}
        self.budget -= utf8_size(shown) + 2
        return shown

    def _mapping(self, item: dict[Any, Any], path: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        self.budget -= 2
        for key, sub in item.items():
            if self.budget <= 0:
                self.cuts[path] = {"items": len(item)}
                break
            name = key if isinstance(key, str) else str(key)
            self.budget -= min(utf8_size(name), self.text) + 3
            out[cut_text(name, self.text)] = self.value(sub, f"{path}.{name}" if path else name)
        return out

    def _sequence(self, item: list[Any] | tuple[Any, ...], path: str) -> list[Any]:
        out: list[Any] = []
        self.budget -= 2
        for index, sub in enumerate(item):
            if self.budget <= 0:
                self.cuts[path] = {"items": len(item)}
                break
            self.budget -= 1
            out.append(self.value(sub, f"{path}[{index}]"))
        return out
