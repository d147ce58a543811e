"""A task's whereabouts: where it is now, one record per live task in the queue's `where` hash (QueueKeys.where).

The Lua scripts that move a task write its record in the same step as the move (see lua/whereabouts.lua): enqueue,
claim, settle (retry, deferral, release), promote, reap, requeue from the dead-letter queue, adopt, cancel, a
schedule's run and the flow scripts that make a member ready (lua/flow_where.lua). A lookup by id is then one HGET
instead of a search. A settled task's record is deleted by the settle that ends it: its result record (kept
`queue.result_ttl`) says how it ended, and expires with it.

The record is text, '|'-separated, four fields (the last may hold anything but a newline; a ready record has a
fifth, the fair key, only when the task waits in its key's list):

    ready|<level>|<since ms>|<how>        level: high, default or low; how: enqueued, promoted, recovered,
                                          requeued, released, scheduled, run_now, flow (a flow member made ready
                                          by its flow's creation or its parents' settles)
    ready|<level>|<since ms>|<how>|<key>  the same, for a task waiting in its fair key's own list of that level
                                          (lua/fair_base.lua): a fifth field, the fair key, only for such tasks;
                                          how may also be sorted (a raw push a claim moved to its key's list),
                                          retrying or deferred (an ordered key's retry, kept in its key's list)
    delayed|<reason>|<due ms>|<detail>    reason: retrying (detail: "<next attempt>/<max attempts>"), scheduled
                                          (an eta), held (held back by flow control; detail: the flow key)
    running|<token>|<since ms>|<worker>   claimed by that worker with that attempt token

The hash also holds one field that is not a task's: `LAYOUT_FIELD` (the empty string, which no task id can be),
whose value is longer than Redis's `hash-max-listpack-value` (64 bytes by default). Redis keeps a hash of up to
`hash-max-listpack-entries` (512) short fields as a listpack, whose every write and delete scans it whole; with a few
hundred tasks in flight that was over a third of Redis's work per task. A value over the limit makes Redis store
the hash as a hash table from its first write, and the field keeps the key from being emptied back into a listpack.
Every writer of a batch of records writes it along with them (lua/whereabouts.lua's `flush_where`, `stage_push`),
so a hash that lost it (e.g. to a hostile raw push whose id is "") has it again with its next batch.

This module builds the records Python writes (client pushes, settle follow-ups) and parses them for the inspection
layer. A task pushed raw (`RPUSH Q '{...}'`, no script) has no record until a worker claims it (or, with a fair
key, a claim moves it to its key's list).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gopherq.core import codec

#: The field (no task id can be empty) and value that keep the `where` hash a hash table; lua/whereabouts.lua
#: writes the same pair (see the module docstring). The value is over Redis's 64-byte listpack limit.
LAYOUT_FIELD = ""
LAYOUT_VALUE = "not a task: this value, over 64 bytes, keeps the hash a hash table (see core/whereabouts.py)"


def with_layout(records: dict[str, str]) -> dict[str, str]:
    """`records` as a client's HSET of them writes them: with the layout field first (see the module docstring)."""
    return {LAYOUT_FIELD: LAYOUT_VALUE, **records}


#: The states a record can name (a settled task has no record).
PLACES = ("ready", "delayed", "running")

#: Why a delayed task waits.
DELAY_REASONS = ("retrying", "scheduled", "held")


#: Most bytes of an envelope whose id the claim script decodes when it is not written first (see `claimed_id`).
DECODE_LIMIT = 65536

_FIRST_ID = re.compile(rb'^\{"id":"([^"\\]*)"')


def claimed_id(raw: bytes) -> str | None:
    """The id the claim script records a claimed envelope under (lua/whereabouts.lua's `task_id`, the same rule):
    a leading `{"id":"..."` read as it is, else the decoded top-level `id` of an envelope of at most DECODE_LIMIT
    bytes that names one. Asked only of bytes that never became a task, so that their record is forgotten."""
    first = _FIRST_ID.match(raw)
    if first is not None:
        return first.group(1).decode("utf-8", "replace")
    if len(raw) > DECODE_LIMIT or b'"id"' not in raw:
        return None
    try:
        obj = codec.loads(raw)
    except (codec.JSONDecodeError, TypeError):
        return None
    found = obj.get("id") if isinstance(obj, dict) else None
    return found if isinstance(found, str) else None


def ready_record(level: str | None, since_ms: int, how: str, fair_key: str | None = None) -> str:
    """A ready record; with `fair_key`, the task waits in that key's list (not its level's)."""
    tail = "" if fair_key is None else f"|{fair_key}"
    return f"ready|{level or 'default'}|{since_ms}|{how}{tail}"


def delayed_record(reason: str, due_ms: int, detail: str = "") -> str:
    return f"delayed|{reason}|{due_ms}|{detail}"


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """A parsed record. `place`: ready, delayed or running; `at`: the time (Unix s) it became ready, is due, or was
    claimed; `level` and `how` of a ready task, and `fair_key` when it waits in that key's list; `reason` and
    `detail` of a delayed one; `token` and `worker` of a running one."""

    place: str
    at: float | None
    level: str | None = None
    how: str | None = None
    reason: str | None = None
    detail: str | None = None
    token: str | None = None
    worker: str | None = None
    fair_key: str | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Whereabouts | None:
        """The record, or None when there is none or it is not one this version knows (then the caller searches)."""
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
        parts = text.split("|", 3)
        if len(parts) != 4 or parts[0] not in PLACES:
            return None
        place, first, stamp, last = parts
        try:
            at: float | None = int(stamp) / 1000
        except ValueError:
            at = None
        if place == "ready":
            how, _, fair_key = last.partition("|")  # a record without the fifth field (no fair key) reads as before
            return cls(place, at, level=first, how=how, fair_key=fair_key or None)
        if place == "delayed":
            return cls(place, at, reason=first, detail=last or None)
        return cls(place, at, token=first, worker=last or None)

    def to_dict(self) -> dict[str, str | float | None]:
        """The fields that apply to its place (what the CLI, API and dashboard show)."""
        out: dict[str, str | float | None] = {"place": self.place}
        if self.place == "ready":
            out.update(level=self.level, ready_since=self.at, how=self.how)
            if self.fair_key is not None:
                out["fair_key"] = self.fair_key
        elif self.place == "delayed":
            out.update(reason=self.reason, due_at=self.at, detail=self.detail)
        else:
            out.update(worker=self.worker, token=self.token, claimed_at=self.at)
        return out


def where_text(where: Mapping[str, Any], when: Callable[[Any], str]) -> str:
    """A record (as `Whereabouts.to_dict` gives it) in words, one line, for the CLI and the dashboard; `when`
    formats a Unix time."""
    place = where.get("place")
    if place == "ready":
        how = f", {where['how']}" if where.get("how") else ""
        key = f" in fair key {where['fair_key']}'s list" if where.get("fair_key") else ""
        return f"ready at level {where.get('level') or 'default'}{key} since {when(where.get('ready_since'))}{how}"
    if place == "delayed":
        reason, detail = where.get("reason"), where.get("detail")
        words = {"retrying": "retrying", "scheduled": "scheduled (eta)", "held": "held back by flow control"}
        extra = ""
        if detail and reason == "retrying":
            extra = f" (attempt {detail})"
        elif detail and reason == "held":
            extra = f" (flow key {detail})"
        return f"delayed: {words.get(str(reason), str(reason))}{extra}, due {when(where.get('due_at'))}"
    if place == "running":
        worker, token = where.get("worker") or "?", where.get("token")
        return f"held by worker {worker} with token {token} since {when(where.get('claimed_at'))}"
    return str(place)
