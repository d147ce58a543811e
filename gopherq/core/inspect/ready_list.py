"""The ready listing's reads: the tasks of the three priority levels' lists and of every fair key's lists, a page at
a time, by lua/ready_page.lua (its header gives the order: each level in turn; within it the plain list, then the
keys taking turns, next turn first, then the parked keys; each key's tasks head first).

Why a script and a cursor: a queue may have 100,000 fair keys. Finding where an offset falls among them would mean
reading the length of every key before it, so a page goes on from a cursor (`ReadyCursor`, handed out as
`next_cursor`) that names the key and the place in its list: the script finds that key again by a binary search of
the level's turns (or of the parked set) and reads the page from there, so a page costs O(page + log² keys) however
many keys and tasks there are. An offset still works: whole levels are passed by their counts (the same counts as
`QueueInfo.ready`, so `total` is that number), and inside a level's keys by walking them, a bounded number of keys
per call (`KEYS_PER_CALL`) and at most `CALLS` calls per page; a page that stops there is shorter and its cursor
goes on. The listing is of a live queue: claims move keys' turns and shift lists; a page reads one task more than it
shows and the next starts at that task's own position, so a key whose turn moved comes round again (shown twice,
never missed).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from dataclasses import dataclass

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts

#: Most keys one call of the script looks at (their lengths: a few ms of the server's time, so a walk never blocks
#: it for long), and most calls one page makes (100,000 keys walked at most; a cursor walks none).
KEYS_PER_CALL = 2_000
CALLS = 50
#: Longest cursor accepted (a key is at most 800 bytes in the scripts; base64 and the rest fit well under this).
CURSOR_MAX = 2_048
#: Most bytes of a fair key a position may name (as fair_base.lua's fair_key_of accepts).
KEY_MAX_BYTES = 800


@dataclass(frozen=True, slots=True)
class ReadyCursor:
    """Where a ready page starts: `offset` (what the page says it starts at), and the script's position: level
    (1 high, 2 default, 3 low), section (1 plain list, 2 keys taking turns, 3 parked keys), the key's score and
    name there, tasks `within` that key, and `skip` tasks more."""

    offset: int
    level: int = 1
    section: int = 1
    score: str = "-inf"
    key: bytes = b""
    within: int = 0
    skip: int = 0

    def encode(self) -> str:
        name = base64.urlsafe_b64encode(self.key).decode()
        fields = [self.offset, self.level, self.section, self.score, name, self.within, self.skip]
        return base64.urlsafe_b64encode(codec.dumps(fields)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> ReadyCursor:
        """A cursor from a caller (hostile): a ValueError naming what is wrong unless it is one this module made."""
        if not isinstance(text, str) or not text or len(text) > CURSOR_MAX:
            raise ValueError("cursor: expected the next_cursor of an earlier ready page")
        try:
            fields = codec.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError, codec.JSONDecodeError):
            raise ValueError("cursor: not a ready page's next_cursor") from None
        if not isinstance(fields, list) or len(fields) != 7:
            raise ValueError("cursor: not a ready page's next_cursor")
        offset, level, section, score, key, within, skip = fields
        counts = (offset, level, section, within, skip)
        if not all(type(n) is int and 0 <= n < 2**53 for n in counts) or level not in (1, 2, 3):
            raise ValueError("cursor: not a ready page's next_cursor")
        if section not in (1, 2, 3) or not isinstance(score, str) or not isinstance(key, str):
            raise ValueError("cursor: not a ready page's next_cursor")
        try:
            name = base64.urlsafe_b64decode(key) if len(key) <= 2 * KEY_MAX_BYTES else b"-" * (KEY_MAX_BYTES + 1)
        except (binascii.Error, ValueError):
            raise ValueError("cursor: not a ready page's next_cursor") from None
        if len(name) > KEY_MAX_BYTES or not _score(score):
            raise ValueError("cursor: not a ready page's next_cursor")
        return cls(offset, level, section, score, name, within, skip)


def _score(text: str) -> bool:
    """Whether `text` is a sorted-set score as Redis writes one (a number, inf or -inf): nothing else reaches it."""
    if len(text) > 32:
        return False
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ReadyRows:
    """One page of the ready listing as read: (fair key or None, stored bytes) per task, the total (plain lists
    less wake markers, plus the keys' counts, per level: `QueueInfo.ready`'s sum), the offset it starts at, and the
    cursor of the next page (None: nothing follows)."""

    rows: list[tuple[str | None, bytes]]
    total: int
    offset: int
    next_cursor: ReadyCursor | None


async def read_ready(
    redis: RedisClient, keys: QueueKeys, offset: int, limit: int, cursor: ReadyCursor | None = None
) -> ReadyRows:
    """A page of at most `limit` ready tasks from `cursor`, or else from `offset` (see the module docstring). One
    task more is read than is shown: when it is there, the next page starts at that task's own position, so whether
    more follows does not hang on a count that claims change between pages."""
    script = scripts(redis)["ready_page"]
    at = cursor or ReadyCursor(offset, skip=offset)
    start = at.offset
    rows: list[tuple[str | None, bytes]] = []
    places: list[ReadyCursor] = []
    total, state = 0, 1
    for _ in range(CALLS):
        reply = await script(
            keys=list(keys.ready_lists),
            args=[limit + 1 - len(rows), KEYS_PER_CALL, at.level, at.section, at.score, at.key, at.within, at.skip],
        )
        (level, section, score, key, within, skip, state), sizes, *flat = reply
        total = sum(int(n) for n in sizes)
        for i in range(0, len(flat), 6):
            name, raw, row_level, row_section, row_score, index = flat[i : i + 6]
            rows.append((name.decode("utf-8", "replace") if name else None, raw))
            place = (start + len(places), int(row_level), int(row_section), _score_text(row_score))
            if name:
                places.append(ReadyCursor(*place, key=bytes(name), within=int(index)))
            else:
                places.append(ReadyCursor(*place, skip=int(index)))
        at = ReadyCursor(start, int(level), int(section), _score_text(score), bytes(key), int(within), int(skip))
        if state != 2 or len(rows) > limit:
            break
    if len(rows) > limit:
        return ReadyRows(rows[:limit], total, start, places[limit])
    if state == 2:  # stopped by the keys it may look at: more may follow from where it stopped
        return ReadyRows(rows, total, start, dataclasses.replace(at, offset=start + len(rows)))
    return ReadyRows(rows, total, start, None)


def _score_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
