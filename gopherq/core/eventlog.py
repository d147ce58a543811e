"""A queue's event log in Redis: the capped stream `gopherq:{Q}:events` and each task's timeline, one format for
every writer.

Two writers fill it. The settle script writes the outcome events of the tasks it settles (`task.succeeded`,
`task.failed`, `task.retrying`, `task.dead_lettered`, `task.cancelled`, `task.released`, `task.throttled`) in the
same call that records the outcome, so the log agrees with the result records by construction: a settle that is
refused (fenced) writes no event, and a settle sent again after its reply was lost writes its events once. A
success's line it puts together itself, from a short form the worker sends (`ShortEvents`). Every
other event (a client's `task.enqueued`, a recovery, a requeue, the worker's lifecycle, operator actions) goes
through the `stream` sink, which writes with the `record` script. Both use lua/events.lua.

Each stream entry has one field, `event`: the event as one JSON object with the keys of `Event.to_dict()` (absent
task fields as null), masked and bounded (ENTRY_BYTES). Masking happens in Python, before the JSON is built, with
the same `Masker` the event bus uses for every sink: Redis never receives an unmasked event text, and there is one
masker (header names, URL userinfo, query parameters, patterns from the settings) rather than a second one in Lua.

A task's timeline is its newest `timeline` events, each '<stream entry id> <JSON>' and at most
TIMELINE_ENTRY_BYTES, kept with the task's result: a task's page reads it in one bounded LRANGE and two HGETs,
however many events the stream has taken since. It has two parts. The outcome event a settle writes with the
task's result in the usual case (a success's or a cancellation's one event, riding in its settle item) goes into
the hash of the outcomes settled in the same period of the result TTL (`QueueKeys.outcome_events`, field: the task
id; one HSET per settle call), which expires when the next period ends, so it is kept between one and two result
TTLs: a key with an expiry per task was a fifth of Redis's work per task. Every other event goes to the task's
list (`QueueKeys.timeline`), expiring with its result (the settle sets both TTLs in one call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from gopherq.core import codec
from gopherq.core.bounds import bounded
from gopherq.core.keys import QueueKeys
from gopherq.core.redis_client import RedisClient
from gopherq.core.scripts import scripts

if TYPE_CHECKING:
    from gopherq.core.events import Event
    from gopherq.core.masking import Masker

#: Most bytes of one stream entry (the event as JSON), and of one text in it: the limits the inspection layer
#: applies to the events it reads (core/bounds.py EVENT_FIELD and EVENT_TEXT).
ENTRY_BYTES = 8 * 1024
TEXT_BYTES = 4 * 1024

#: Events a task's timeline keeps by default (its newest), and most bytes of one of them: a task page reads at most
#: TIMELINE_MAX x TIMELINE_ENTRY_BYTES of events (48 KiB), within its 64 KiB budget per poll.
TIMELINE_EVENTS = 20
TIMELINE_MAX = 24
TIMELINE_ENTRY_BYTES = 2 * 1024
TIMELINE_TEXT_BYTES = 1024


def entry_line(
    name: str,
    timestamp: float,
    worker: str | None,
    queue: str | None,
    task_id: str | None,
    task_type: str | None,
    attempt: int | None,
    duration: float | None,
    error: dict[str, Any] | None,
    data: dict[str, Any] | None,
    trace_id: str | None,
) -> bytes:
    """One stream entry's value: the event as compact JSON (`error` and `data` already masked), bounded to
    ENTRY_BYTES (texts cut to TEXT_BYTES, what was cut said in `truncated`). One dict literal and one dumps: this
    runs once per event."""
    out: dict[str, Any] = {
        "event": name,
        "timestamp": timestamp,
        "worker": worker,
        "queue": queue,
        "task_id": task_id,
        "task_type": task_type,
        "attempt": attempt,
        "duration": duration,
    }
    if error is not None:
        out["error"] = error
    if data:
        out["data"] = data
    if trace_id is not None:
        out["trace_id"] = trace_id
    line = codec.dumps(out)
    if len(line) <= ENTRY_BYTES:
        return line
    return _cut(line, TEXT_BYTES, ENTRY_BYTES)


def entry_head(name: str, timestamp: float, worker: str | None, queue: str | None) -> bytes:
    """The bytes `entry_line` starts with for events that share these four fields (the outcomes of one settle
    batch: one timestamp, one worker and queue), up to the task id's value: `plain_line` completes it."""
    return codec.dumps({"event": name, "timestamp": timestamp, "worker": worker, "queue": queue})[:-1] + b',"task_id":'


#: `plain_line`'s text between the task id and the duration, per task type and attempt (a worker runs a handful of
#: types, and most attempts are first ones).
_MIDDLES: dict[tuple[str | None, int], bytes] = {}
#: orjson itself, as codec.dumps calls it: a str, a float or None needs no `default` (one call less, twice per line).
_encode = orjson.dumps
#: An event's duration as `entry_line` encodes it (a float or None: the end of a short event, `ShortEvents`).
duration_json = orjson.dumps


def _middle(task_type: str | None, attempt: int) -> bytes:
    middle = _MIDDLES.get((task_type, attempt))
    if middle is None:
        middle = b',"task_type":%s,"attempt":%d,"duration":' % (_encode(task_type), attempt)
        if len(_MIDDLES) < 4096:  # types are a worker's executors and attempts are few, but it stays bounded
            _MIDDLES[(task_type, attempt)] = middle
    return middle


def plain_line(head: bytes, task_id: str, task_type: str | None, attempt: int, duration: float | None) -> bytes:
    """`entry_line`'s very bytes for an event without error, data or trace id (a success, as a rule), from its
    batch's `head` (`entry_head`): only the task's id and duration are encoded per event (by the same encoder, so
    escaping and float formatting are the same), its type and attempt once per pair. (The settle script makes
    most such lines itself, from their short form: `ShortEvents`.)"""
    line = b"".join((head, _encode(task_id), _middle(task_type, attempt), _encode(duration), b"}"))
    if len(line) <= ENTRY_BYTES:
        return line
    return _cut(line, TEXT_BYTES, ENTRY_BYTES)


#: Most distinct (event, task type, attempt) forms one settle call completes itself (`ShortEvents`): a short
#: event of a form after the first starts with its number, one byte from 2 to SHORT_FORMS, below the first byte of
#: any duration's JSON (a digit, "-" or "n").
SHORT_FORMS = 31
#: Fewer bytes than any whole line has and more than any short event (at most a byte and 24 for the duration):
#: how the settle script tells them apart, by length alone.
SHORT_BELOW = 32
#: The bytes a short event's form keeps for the duration and the closing brace (a float as orjson writes it: at
#: most 24 characters).
DURATION_ROOM = 26
#: The form of a batch that has SHORT_FORMS already: no room, so its events are written whole.
FULL: tuple[bytes, int] = (b"", -1)


class ShortEvents:
    """One settle batch's plain outcome events (a success, as a rule: no error, data or trace id) in the short form
    the settle script completes (lua/settle.lua), so that a worker pays next to nothing per event.

    Every such event of a batch shares its head (`entry_head`: name, timestamp, worker, queue) with the others of
    its name, and its middle (task type, attempt) with the others of its type and attempt; only the task id and
    the duration are its own, and the script has the task id already (the item's `extra`). So the worker sends each
    distinct (head, middle) pair once per call, as a form (`parts`, in the 'stream' item), and per event its
    duration as `entry_line` encodes it, after its form's number (one byte) unless it is the first form (a batch
    has one, as a rule); the script writes head, the task id in quotes, middle, duration and "}": `entry_line`'s
    very bytes. The id is put in quotes as it is, so an id that JSON would escape (a quote or a backslash: a task id
    has no control characters, core/task.py `name_problem`) takes no short form; nor does an event beyond
    SHORT_FORMS forms, or one that could exceed TIMELINE_ENTRY_BYTES (so its timeline entry is the line itself).
    Those are written whole (`plain_line`).

    Used as `Settler` does: `forms.get((name, task_type, attempt))` per event, `form(...)` for one not seen yet; an
    event fits its form when its id has no quote or backslash and `len(task_id) * 4 <= room` (UTF-8), and is then
    `prefix + duration_json(duration)`.
    """

    __slots__ = ("_fields", "_heads", "_parts", "forms")

    def __init__(self, stamp: float, worker: str | None, queue: str | None) -> None:
        #: (event name, task type, attempt) -> (its events' prefix: b"" for the first form, else the form's number
        #: as one byte; the room its task ids have), or FULL.
        self.forms: dict[tuple[str, str | None, int], tuple[bytes, int]] = {}
        self._fields = (stamp, worker, queue)
        self._heads: dict[str, bytes] = {}
        self._parts: list[bytes] = []

    def head(self, name: str) -> bytes:
        """The batch's `entry_head` for events of this name, made once: its forms' and, for an event written whole
        instead, `plain_line`'s."""
        found = self._heads.get(name)
        if found is None:
            found = self._heads[name] = entry_head(name, *self._fields)
        return found

    def form(self, name: str, task_type: str | None, attempt: int) -> tuple[bytes, int]:
        """The form of events of this name, type and attempt in this batch, made and remembered on first use: the
        prefix of its events (b"" for the first form, else its number) and the room its task ids have."""
        found = self.forms.get((name, task_type, attempt))
        if found is None:
            if len(self._parts) >= 2 * SHORT_FORMS:
                found = FULL
            else:
                head, middle = self.head(name), _middle(task_type, attempt)
                self._parts += (head, middle)
                room = TIMELINE_ENTRY_BYTES - len(head) - len(middle) - 2 - DURATION_ROOM  # (2: the id's quotes)
                number = len(self._parts) // 2
                found = (bytes((number,)) if number > 1 else b"", room)
            self.forms[(name, task_type, attempt)] = found
        return found

    def parts(self) -> bytes:
        """The forms for the settle script: each one's head and middle, in number order, one per line (orjson
        writes no raw newline); b"" when no event took a form."""
        return b"\n".join(self._parts)


def _cut(line: bytes, text: int, total: int) -> bytes:
    """`line` with its texts cut to `text` bytes and its parts to `total`, the cuts added to its `truncated`."""
    event = codec.loads(line)
    earlier = event.pop("truncated", None)
    cuts: dict[str, dict[str, int]] = {}
    out = bounded(event, text=text, total=total, cuts=cuts)
    out["truncated"] = {**earlier, **cuts} if isinstance(earlier, dict) else cuts
    return codec.dumps(out)


def timeline_entry(line: bytes) -> bytes:
    """The event as a timeline keeps it: b"" when the stream entry itself fits TIMELINE_ENTRY_BYTES (almost
    always), else a shorter copy (texts cut to TIMELINE_TEXT_BYTES, `truncated` saying so)."""
    if len(line) <= TIMELINE_ENTRY_BYTES:
        return b""
    return _cut(line, TIMELINE_TEXT_BYTES, TIMELINE_ENTRY_BYTES)


def pack(line: bytes, key_index: int, item: int, packed: tuple[list[bytes], list[bytes]]) -> None:
    """Add one event to the record script's two arguments (see lua/events.lua): its stream entry, and its spec
    line: the KEYS index of its task's timeline (0: none) and an item number (unused: 0), with the shorter timeline
    entry when it needs one. (The settle script takes each event as an argument of its own, after its item.)"""
    entries, spec = packed
    entries.append(line)
    if key_index and len(line) > TIMELINE_ENTRY_BYTES:
        spec.append(b"%d %d %s" % (key_index, item, timeline_entry(line)))
    else:
        spec.append(b"%d %d" % (key_index, item))


@dataclass(frozen=True, slots=True)
class EventLog:
    """Where and how a queue's events are kept: the stream's cap (`maxlen`, approximate as XTRIM MAXLEN ~ trims,
    once per script call) and the events kept per task timeline (`timeline`, 0 for none), which expires `ttl`
    seconds after the task's latest event written outside a settle (the settle uses the result TTL). A sink that has
    one as its `event_log` attribute (the `stream` sink) is the log's writer: the settle script writes the outcome
    events it accepts, and the event bus hands that sink only the rest (see `EventBus.emit`'s `recorded`)."""

    #: Events a timeline keeps by default, and at most (the bound of a task page's read).
    DEFAULT_TIMELINE: ClassVar[int] = TIMELINE_EVENTS
    MAX_TIMELINE: ClassVar[int] = TIMELINE_MAX

    maxlen: int
    timeline: int = TIMELINE_EVENTS
    ttl: int = 86400

    @staticmethod
    def entry(event: Event, masker: Masker) -> bytes:
        """`event` as a stream entry: its `error` and `data` masked with `masker`, as JSON, bounded."""
        return entry_line(
            event.name,
            event.timestamp,
            event.worker,
            event.queue,
            event.task_id,
            event.task_type,
            event.attempt,
            event.duration,
            None if event.error is None else masker.value(event.error),
            masker.value(event.data) if event.data else None,
            event.trace_id,
        )

    async def write(
        self, redis: RedisClient, queue: str, events: Sequence[tuple[bytes, str | None]], pipe: Any = None
    ) -> Any:
        """Append events of `queue` ((stream entry, task id or None) pairs) to its stream and their tasks'
        timelines in one script call (queued on `pipe`, a pipeline of `redis`, when given); returns how many were
        written."""
        keys, args = self.command(queue, events)
        return await scripts(redis)["record"](keys=keys, args=args, client=pipe)

    def command(self, queue: str, events: Sequence[tuple[bytes, str | None]]) -> tuple[list[str], list[Any]]:
        """The `record` script's KEYS and ARGV for `events` (to call it directly, or in a pipeline)."""
        k = QueueKeys(queue)
        keys = [k.events]
        where: dict[str, int] = {}
        packed: tuple[list[bytes], list[bytes]] = ([], [])
        for line, task_id in events:
            index = 0
            if task_id is not None and self.timeline:
                index = where.get(task_id, 0)
                if not index:
                    keys.append(k.timeline(task_id))
                    index = where[task_id] = len(keys)
            pack(line, index, 0, packed)
        return keys, [self.maxlen, self.timeline, self.ttl, b"\n".join(packed[0]), b"\n".join(packed[1])]
