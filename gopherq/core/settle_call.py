"""The settle script's call (lua/settle.lua): what a worker decided about each claimed task (`Settlement`), laid out
as that script's KEYS and ARGV. Its own module because the layout is the contract between the worker and the script:
five arguments per item, the after-items that follow an item (where, unlock, uncancel, fair, event), the flows' one
`dag` item each, the outcome events' keys, then the keys and arguments every call ends with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gopherq.core.eventlog import TIMELINE_ENTRY_BYTES, EventLog, timeline_entry
from gopherq.core.keys import COUNTS_TTL, HOURLY_COUNTS_TTL, QueueKeys

#: The kinds that end a task (its uniqueness lock, cancel request and whereabouts go; a flow member counts).
ENDING = frozenset({"ack", "cancel", "dead"})


#: A settle batch's timings, in whole ms: attempt durations summed, attempts timed, times in queue (from when each
#: task became ready to its attempt's start) summed, attempts whose time in queue is known.
Timing = tuple[int, int, int, int]


@dataclass(slots=True)
class Settlement:
    """The outcome of one claimed task, recorded by `Broker.settle`.

    kind: 'ack' (finished, result written), 'cancel' (as 'ack', for a cancelled task), 'retry' (data: new
    envelope, extra: due ms), 'dead' (data: entry JSON, extra: entry id) or 'release' (back to the head of its
    ready list, unchanged). `unique_key`: the task's uniqueness lock, freed when it ends ('ack', 'cancel',
    'dead'); `cancelled`: the task's cancel request is forgotten once this is recorded; `events`: see below;
    `dag`: (flow id, node) of a flow member, whose final outcome moves its flow on in the same script call
    (core/flows).
    """

    kind: str
    token: str
    task_id: str
    result: bytes = b""
    data: bytes = b""
    extra: str = ""
    unique_key: str | None = None
    cancelled: bool = False
    #: Where a retried, deferred or released task is once this is recorded (core/whereabouts.py); None for the
    #: kinds that end it (its whereabouts go).
    where: str | None = None
    #: An id the claim recorded this attempt under that is not the task's (bytes that never became a task): its
    #: record is forgotten if it still names this attempt.
    forget: str | None = None
    #: Its events as stream entries (core/eventlog.py), written by the settle with it, or not at all.
    events: list[bytes] | None = None
    #: Instead of `events`, an 'ack' or 'cancel' item's one plain outcome event in the short form the settle script
    #: completes (core/eventlog.py `ShortEvents`, whose forms go with the call: `settle_call`'s `shorts`).
    short_event: bytes | None = None
    dag: tuple[str, str] | None = None
    #: The task's fair key: its place among the key's running tasks is freed with this settle (see fair_base.lua)
    #: when the claim counted it there (a key with limits: `Broker.fair_counted`).
    fair_key: str | None = None


def settle_call(
    keys_of: QueueKeys,
    items: list[Settlement],
    limits: tuple[int, int],
    stamp: int,
    log: EventLog | None,
    timing: Timing,
    cancel_requests: frozenset[str],
    fair_counted: set[str],
    shorts: bytes = b"",
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of one settle call for `items` (see lua/settle.lua); `limits`: the result TTL and the
    dead-letter cap; `stamp`: now (ms); `cancel_requests`: the ids with a cancel request pending (an ending task
    takes its request with it); `fair_counted`: the attempts the claim counted among their fair keys' running tasks;
    `shorts`: the forms of the items' short events (`ShortEvents.parts`)."""
    k = keys_of
    keys = [k.ready, k.leases, k.inflight, k.delayed, k.dead, k.dead_index, k.stats, k.counts(stamp // 60000 * 60)]
    result_ttl, dead_cap = limits
    args: list[Any] = [stamp, result_ttl, dead_cap, COUNTS_TTL]
    with_events = log is not None and (bool(shorts) or any(item.events for item in items))
    outcomes: list[str] = []  # where riding events' timeline entries go (see below)
    if with_events:
        assert log is not None
        keys.append(k.events)
        args += ["stream", log.maxlen, log.timeline, shorts, b""]  # each event follows its item, as an 'event'
        if log.timeline:
            outcomes = [k.outcome_events(result_ttl, stamp // 1000 // result_ttl), k.outcome_width]
    # A task that ends while a cancel request for it is pending (e.g. it finished before its worker saw the
    # request) takes the request with it, so it does not linger until it expires.
    pending = cancel_requests
    members: dict[str, list[str]] = {}  # flow id -> "<item index, hex>:m:<node>" of its members ending here
    for item in items:
        position = len(keys) - 8  # the item's index in the script (KEYS[9 + position])
        keys.append(k.result(item.task_id))
        # An ending item names its task in `extra` (its whereabouts go); a dead letter's is its entry id already.
        data, events = item.data, item.events if with_events else None
        if item.kind == "ack" or item.kind == "cancel":
            if data:
                raise ValueError(f"a {item.kind!r} settlement has no data (its event rides there)")
            extra = item.task_id
            # The usual case, a success's one event, rides in the item's own `data` (unused by these kinds):
            # no argument of its own to pack and send, and its timeline entry goes into this period's hash of
            # outcome events, one HSET per call, instead of a key with an expiry per task (settle.lua). A short
            # event (ShortEvents) always rides.
            if item.short_event is not None and with_events:
                data = item.short_event
            elif events is not None and len(events) == 1 and len(events[0]) <= TIMELINE_ENTRY_BYTES:
                data, events = events[0], None
        else:
            extra = item.extra
        args += [item.kind, item.token, item.result, data, extra]
        if item.where is not None:
            keys.append(k.where)
            args += ["where", item.task_id, "", item.where, ""]
        if item.forget is not None:
            keys.append(k.where)
            args += ["where", item.forget, "", "", item.token]
        if item.unique_key is not None and item.kind in ENDING:
            keys.append(k.unique(item.unique_key))
            args += ["unlock", item.task_id, "", "", ""]
        if item.cancelled or (pending and item.kind in ENDING and item.task_id in pending):
            keys.append(k.cancels)
            args += ["uncancel", item.task_id, "", "", ""]
        if item.dag is not None and item.kind in ENDING:  # a flow member: named in its flow's 'dag' item
            # The index in hex: Lua reads it with strtoul (tonumber(s, 16)); a decimal goes through strtod. The
            # member's field ("m:<node>") whole: the script reads it as it is, no string made per member there.
            members.setdefault(item.dag[0], []).append(f"{position:x}:m:{item.dag[1]}")
        if item.fair_key is not None and item.token in fair_counted:
            keys.append(k.fair_running(item.fair_key))
            args += ["fair", item.token, "", item.fair_key, ""]
        if events:  # written with the item, or not at all (see lua/events.lua)
            assert log is not None
            timeline = k.timeline(item.task_id) if log.timeline else k.events
            for line in events:
                keys.append(timeline)
                args += ["event", "", line, timeline_entry(line) if log.timeline else b"", ""]
    for flow_id, listed in members.items():  # after the items they name: dag_settle.lua moves each flow on
        keys.append(k.dag(flow_id))
        args += ["dag", flow_id, "", ",".join(listed), ""]
    keys += outcomes
    keys += k.ready_lists[1:]  # the high and low lists
    keys += [k.reaped, k.where, k.hourly_counts(stamp // 3600000 * 3600)]
    args += [HOURLY_COUNTS_TTL, *timing]
    return keys, args
