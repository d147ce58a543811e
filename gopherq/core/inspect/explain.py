"""`gopherq task ID --explain`: the one thing a task waits for, in a sentence and as a code.

`explain` asks `locate` where the task is, then the queue's numbers, and names what stands between the task and its
next step: a paused queue, no live worker, the backlog ahead of it at its priority level (and the more urgent levels),
a retry due at T after error E, an eta, a flow-control hold on key K until T, the worker holding it (or gone:
orphaned), or its end (succeeded, cancelled, dead with its reason). A ready task with a fair key waits for its key's
turn, or for its key to be resumed, to have a running task end (its concurrency limit, or ordered with a task in
flight) or to be under its rate again (the key's state as `Inspector.fair_keys` reads it). `locate` is the only
place that finds a task: its whereabouts record (O(1), the same lookup as `Inspector.task`); `explain` does not care
how.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gopherq.core.inspect.fair_keys import LEVELS, KeyInfo
from gopherq.core.inspect.lookup import SEARCH_LIMIT, TaskLocator, ready_list
from gopherq.core.inspect.models import ORPHANED_NOTE
from gopherq.core.inspect.reading import decode, integer, number
from gopherq.core.inspect.waiting import held_by, waiting_kind

if TYPE_CHECKING:
    from gopherq.core.inspect.inspector import Inspector

#: The codes `Explanation.waiting_for` takes, most of them a state of the task's.
CODES = (
    "paused",
    "no_worker",
    "backlog",
    "key_turn",
    "key_paused",
    "key_limit",
    "key_ordered",
    "key_rate",
    "retrying",
    "scheduled",
    "held",
    "due",
    "running",
    "staged",
    "orphaned",
    "dead",
    "succeeded",
    "cancelled",
)

_LEVELS = ("high", "default", "low")


@dataclass(slots=True)
class Whereabouts:
    """Where a task is now. `state`: ready, delayed, running, staged (claimed ahead by `worker.prefetch`, not
    started), orphaned, succeeded, dead, cancelled or unknown. `raw`: its envelope as stored (ready, delayed,
    running, staged); `level`/`position`: its priority level and index in the list it waits in (ready), its level's
    or its `fair_key`'s; `due_at`: when it comes due (delayed, Unix s); `token`, `worker`, `since`, `lease_until`:
    its attempt (running, staged); `result`, `dead`: its result record and dead letter, parsed."""

    state: str
    raw: bytes | None = None
    level: str | None = None
    position: int | None = None
    fair_key: str | None = None
    due_at: float | None = None
    token: str | None = None
    worker: str | None = None
    since: float | None = None
    lease_until: float | None = None
    result: dict[str, Any] | None = None
    dead: dict[str, Any] | None = None


async def locate(inspector: Inspector, queue: str, task_id: str) -> Whereabouts:
    """Where the task is: its whereabouts record (one HGET, see core/whereabouts.py) read with its result record and
    dead letter, then the envelope where the record says (lookup.py's TaskLocator; a bounded search only for a task
    without a record). A ready task's place in its list is asked of the server, at most SEARCH_LIMIT entries from
    either end."""
    k = inspector.keys(queue)
    redis = inspector.redis
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(k.result(task_id))
        pipe.hget(k.dead, task_id)
        pipe.hget(k.where, task_id)
        raw_result, raw_dead, raw_where = await pipe.execute()
    result, dead = decode(raw_result), decode(raw_dead)
    result = result if isinstance(result, dict) else None
    dead = dead if isinstance(dead, dict) else None
    status = result.get("status") if result else None
    settled = status in ("succeeded", "cancelled", "dead", "failed") or dead is not None
    located = await TaskLocator(redis).locate(k, task_id, raw_where, settled)
    record = located.where
    if located.state in ("running", "orphaned"):
        token = record.token if record is not None else None
        state, worker, since = await inspector._holding(queue, located)
        deadline = None if token is None else await redis.zscore(k.leases, token)
        lease = None if deadline is None else float(deadline) / 1000
        raw = located.envelope
        return Whereabouts(state, raw, token=token, worker=worker, since=since, lease_until=lease, result=result)
    if located.state == "delayed":
        due = record.at if record is not None else None
        if due is None and located.envelope is not None:
            score = await redis.zscore(k.delayed, located.envelope)
            due = None if score is None else float(score) / 1000
        return Whereabouts("delayed", located.envelope, due_at=due, result=result)
    if located.state == "ready":
        level = (record.level if record is not None else None) or "default"
        fair_key = record.fair_key if record is not None else None
        position = None
        if located.envelope is not None:
            name = ready_list(k, record) if record is not None else k.level(level)
            position = await redis.lpos(name, located.envelope, maxlen=SEARCH_LIMIT)
            if position is None:
                position = await redis.lpos(name, located.envelope, rank=-1, maxlen=SEARCH_LIMIT)
        return Whereabouts(
            "ready", located.envelope, level=level, position=integer(position), fair_key=fair_key, result=result
        )
    if status in ("succeeded", "cancelled"):
        return Whereabouts(str(status), result=result)
    if dead is not None or status in ("dead", "failed"):
        return Whereabouts("dead", result=result, dead=dead)
    return Whereabouts("unknown", result=result)


@dataclass(frozen=True, slots=True)
class Explanation:
    """What a task waits for: `waiting_for` (one of CODES, or "unknown"), `message` (one sentence, masked) and the
    facts it was made of (`details`: times as Unix seconds)."""

    task_id: str
    queue: str
    state: str
    waiting_for: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


#: Makes the answer: (code, message, **details) -> Explanation.
Answer = Callable[..., Explanation]


def _at(stamp: float | None) -> str:
    """UTC, as the dashboard shows every time (the same on every reader's screen)."""
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _error_line(error: Any) -> str:
    if not isinstance(error, dict):
        return "?"
    first = f"{error.get('reason', '')}: {error.get('message', '')}".splitlines()
    return (first[0] if first else "?")[:300]


async def explain(inspector: Inspector, queue: str, task_id: str) -> Explanation | None:
    """What the task waits for; None when nothing at all is known of it (unknown id, or its result expired)."""
    where = await locate(inspector, queue, task_id)
    if where.state == "unknown" and where.result is None:
        return None
    masked = inspector.masker.text

    def answer(code: str, message: str, **details: Any) -> Explanation:
        return Explanation(task_id, queue, where.state, code, masked(message), details)

    envelope = decode(where.raw) if where.raw is not None else None
    envelope = envelope if isinstance(envelope, dict) else {}
    if where.state == "ready":
        return await _ready(inspector, queue, where, answer)
    if where.state == "delayed":
        return _delayed(inspector, queue, where, envelope, answer)
    if where.state in ("running", "staged", "orphaned"):
        holder = where.worker or "an unknown worker"
        if where.state == "staged":
            return answer(
                "staged",
                f"claimed ahead by {holder} at {_at(where.since)} (worker.prefetch): starts when one of its slots"
                f" frees (lease until {_at(where.lease_until)})",
                worker=where.worker,
                since=where.since,
                lease_until=where.lease_until,
            )
        if where.state == "orphaned":
            return answer(
                "orphaned",
                f"held by {holder}, whose heartbeat is gone: {ORPHANED_NOTE}",
                worker=where.worker,
                since=where.since,
                lease_until=where.lease_until,
            )
        return answer(
            "running",
            f"running on {holder} since {_at(where.since)} (lease until {_at(where.lease_until)})",
            worker=where.worker,
            since=where.since,
            lease_until=where.lease_until,
        )
    if where.state == "dead":
        entry = where.dead or {}
        reason = str(entry.get("reason") or (where.result or {}).get("status") or "dead")
        error = _error_line(entry.get("error") or (where.result or {}).get("error"))
        return answer(
            "dead",
            f"dead ({reason}): {error}; it waits for an operator: requeue it (gopherq dlq requeue) or delete it",
            reason=reason,
            error=error,
            died_at=number(entry.get("dead_at")),
        )
    record = where.result or {}
    finished = number(record.get("finished_at"))
    return answer(where.state, f"{where.state} at {_at(finished)}: nothing left to wait for", finished_at=finished)


async def _ready(inspector: Inspector, queue: str, where: Whereabouts, answer: Answer) -> Explanation:
    info = await inspector.queue(queue)
    level = where.level or "default"
    ahead = where.position or 0
    urgent = sum(info.levels[name].ready for name in _LEVELS[: _LEVELS.index(level)] if name in info.levels)
    details = {"level": level, "ahead": ahead, "ahead_more_urgent": urgent, "workers": info.workers}
    if info.paused:
        stamp = number(await inspector.redis.get(inspector.keys(queue).paused))
        return answer(
            "paused",
            f"queue {queue} is paused (since {_at(stamp)}): workers claim nothing from it until `gopherq resume`",
            paused_at=stamp,
            **details,
        )
    if info.workers == 0:
        return answer(
            "no_worker",
            f"no live worker on queue {queue}: it is ready ({ahead} ahead of it at level {level}) and waits for one",
            **details,
        )
    if where.fair_key is not None:
        return await _fair(inspector, queue, where, answer, details)
    more = f", and {urgent} at more urgent levels" if urgent else ""
    return answer(
        "backlog",
        f"ready at level {level}: {ahead} task(s) ahead of it{more}; {info.workers} live worker(s) on {queue}",
        **details,
    )


async def _fair(
    inspector: Inspector, queue: str, where: Whereabouts, answer: Answer, details: dict[str, Any]
) -> Explanation:
    """A ready task in its fair key's list: what its key waits for, if anything, else its turn among the keys."""
    key = str(where.fair_key)
    found = await inspector.fair_keys(queue, limit=1, only=key)
    state = found[0] if found else None
    details = {**details, "fair_key": key}
    if state is not None:
        details.update(running=state.running, **state.limits.to_dict())
        blocked = _key_blocked(state)
        if blocked is not None:
            code, why = blocked
            return answer(code, f"ready, but its fair key {key} {why}", parked_until=state.parked_until, **details)
    # The keys taking turns at its level (the level's keyless tasks count as one more): one ZCARD.
    active = await inspector.redis.zcard(inspector.keys(queue).fair_active(LEVELS.get(details["level"], "d")))
    others = max(0, int(active) - 1)
    return answer(
        "key_turn",
        f"waiting for its key's turn: {details['ahead']} task(s) of fair key {key} ahead of it at level "
        f"{details['level']}, which takes turns with {others} other key(s) there; "
        f"{details['workers']} live worker(s) on {queue}",
        other_keys=others,
        **details,
    )


def _key_blocked(state: KeyInfo) -> tuple[str, str] | None:
    """(code, words) when the key may not run a task now: paused, at its concurrency limit, ordered with a task in
    flight or its retry pending, over its rate; None when it takes its turns. Its settings say paused and its
    running count says at a limit even before a claim has parked it; a rate or a retry only the parking tells."""
    limits = state.limits
    if limits.paused or state.parked == "paused":
        return "key_paused", "is paused: none of its tasks is claimed until `gopherq keys resume`"
    if limits.ordered and state.parked == "retry":
        due = _at(state.parked_until)
        return "key_ordered", f"is ordered and waits for a retry due at {due}: its tasks run one at a time, in order"
    if limits.ordered and (state.running > 0 or state.parked == "limit"):
        return "key_ordered", "is ordered and busy: its tasks run one at a time, in order, and one is not done"
    if limits.concurrency and (state.running >= limits.concurrency or state.parked == "limit"):
        return "key_limit", f"is at its concurrency limit: {state.running} of {limits.concurrency} running"
    if state.parked == "rate":
        rate = f"{limits.rate:g}/s" if limits.rate else "its rate"
        return "key_rate", f"is over its rate limit ({rate}) until {_at(state.parked_until)}"
    return None


def _delayed(
    inspector: Inspector, queue: str, where: Whereabouts, envelope: dict[str, Any], answer: Answer
) -> Explanation:
    due = where.due_at
    if due is not None and due <= time.time():
        return answer(
            "due",
            f"due since {_at(due)}: moved to the ready list by the next promotion (a worker of {queue} runs it)",
            due_at=due,
        )
    kind = waiting_kind(envelope)
    if kind == "retrying":
        attempt = integer(envelope.get("attempt"), 2) or 2
        most = integer(envelope.get("max_attempts")) or inspector.settings.queue.max_attempts
        error = _error_line(envelope.get("last_error"))
        return answer(
            "retrying",
            f"retry: attempt {attempt} of {most} is due at {_at(due)} after error {error}",
            attempt=attempt,
            max_attempts=most,
            due_at=due,
            last_error=error,
        )
    held = held_by(envelope)
    if kind == "held" and held is not None:
        return answer(
            "held",
            f"held back by the {held['limit']} of {held['key']} until {_at(held['until'] or due)}",
            reason=held["reason"],
            key=held["key"],
            until=held["until"] or due,
        )
    eta = number(envelope.get("eta"), due)
    return answer("scheduled", f"scheduled: eta {_at(eta)}", eta=eta, due_at=due)
