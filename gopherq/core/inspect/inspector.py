"""The Inspector: every read of a queue's state that the CLI, the client, the dashboard and the API show.

One query, four faces: none of them talks to Redis on its own. Every call is bounded: lists come in pages, queues
are found in the queue registry (SCAN only on request: `discover`), and looking a task up by id reads its
whereabouts record (lookup.py: one HGET; a bounded search on the server only for a task without one), and its
events come from its timeline (at most TIMELINE_READ events). Everything returned that holds an envelope, a result,
an error or event data is masked, and bounded: each stored field (an envelope, a result record, a dead letter, an
event) is cut to the limits of core/bounds.py, and what was cut is said (`truncated`), so no page, fragment or API
answer grows with what a producer or an endpoint sent. Queue-level reads live in queues.py, events in stream.py.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from gopherq.core import codec
from gopherq.core.audit import Actor
from gopherq.core.bounds import SHOWN_FIELD, SHOWN_TEXT, Cuts, bounded, cut_text
from gopherq.core.broker import Broker
from gopherq.core.deadletters import DeadLetters, masked_entry, masked_raw, masked_raw_text
from gopherq.core.events import EventBus
from gopherq.core.holdings import STAGED
from gopherq.core.inspect.explain import Explanation, explain
from gopherq.core.inspect.lookup import Located, TaskLocator
from gopherq.core.inspect.models import (
    DeadLetterInfo,
    DeadLetterSummary,
    Page,
    RunningTask,
    TaskInfo,
    TaskSummary,
    WorkerInfo,
)
from gopherq.core.inspect.operations import Operator
from gopherq.core.inspect.operator_pages import OperationsReader
from gopherq.core.inspect.queues import QueueReader
from gopherq.core.inspect.readiness import ready_since
from gopherq.core.inspect.reading import decode, integer, number, task_type, text
from gopherq.core.inspect.ready_list import ReadyCursor, read_ready
from gopherq.core.inspect.selection import SCAN_WINDOW, DeadFilter, Selection, select_dead, target_host
from gopherq.core.inspect.stream import EventReader
from gopherq.core.inspect.waiting import WAITING_KINDS, DelayedSplit, held_by, waiting_kind
from gopherq.core.keys import QueueKeys, validate_queue_name
from gopherq.core.masking import Masker, drop_cut_url
from gopherq.core.outcomes import raw_from_entry
from gopherq.core.redis_client import RedisClient
from gopherq.core.settings import Settings

#: Payload fields a summary line is made of: a method-like one, then a target-like one.
_VERB_FIELDS = ("method", "verb", "action")
_TARGET_FIELDS = ("url", "uri", "endpoint", "target", "function", "func", "path", "name")
_SUMMARY_MAX = 160
#: Most bytes of a task id a page line shows (longer ids are refused at enqueue; a raw push may still have one).
_ID_MAX = 256


def _raw_key(raw: bytes) -> str | None:
    """The fair key a task in a plain list names (pushed raw: a claim moves it to its key's list), or None."""
    if b'"fair_key"' not in raw:
        return None
    envelope = decode(raw)
    key = envelope.get("fair_key") if isinstance(envelope, dict) else None
    return key if isinstance(key, str) and key else None


def running_task(entry: list[Any]) -> RunningTask:
    """One entry of a worker's `running` list (core.holdings: token, task id, claimed at, and "staged" for a task
    claimed ahead that has not started)."""
    token, task_id, since = entry[0], entry[1], entry[2]
    return RunningTask(
        None if task_id is None else str(task_id),
        str(token),
        since if isinstance(since, (int, float)) else None,
        staged=STAGED in entry[3:],
    )


class Inspector(QueueReader, EventReader, OperationsReader):
    """Reads (and pauses or resumes) queues on one Redis. Build it with the client the caller already has."""

    def __init__(self, redis: RedisClient, settings: Settings, masker: Masker | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.masker = masker or Masker.from_settings(settings)

    def keys(self, queue: str) -> QueueKeys:
        return QueueKeys(validate_queue_name(queue))

    def dead_letters(self, queue: str, bus: EventBus | None = None) -> DeadLetters:
        """The dead-letter queue of `queue`, to change it (requeue, delete): with `bus`, a requeue is announced.
        Cheap to make: its scripts are registered once per client (core/scripts.py)."""
        return DeadLetters(Broker(self.redis, validate_queue_name(queue)), bus)

    # -- workers ---------------------------------------------------------------------------------------------

    async def workers(self, queue: str) -> list[WorkerInfo]:
        """Every worker registered on the queue (alive ones, and dead ones until the reaper forgets them)."""
        k = self.keys(queue)
        members = await self.redis.zrange(k.workers, 0, -1, withscores=True)
        if not members:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in members:
                pipe.hgetall(k.worker_info(text(member)))
            infos = await pipe.execute()
        alive_after = time.time() - self.settings.worker.lease_timeout
        out = []
        for (member, score), raw in zip(members, infos, strict=True):
            worker_id = text(member)
            info = {text(key): value for key, value in raw.items()}
            host, _, rest = worker_id.partition(":")
            heartbeat = float(score) / 1000
            running = decode(info.get("running")) or []
            stats = decode(info.get("stats"))
            out.append(
                WorkerInfo(
                    id=worker_id,
                    host=text(info["host"]) if "host" in info else host or None,
                    pid=integer(info.get("pid"), integer(rest.partition(":")[0])),
                    queue=queue,
                    started=number(info.get("started")),
                    concurrency=integer(info.get("concurrency")),
                    last_heartbeat=heartbeat,
                    alive=heartbeat >= alive_after,
                    running=[running_task(entry) for entry in running if isinstance(entry, list) and len(entry) >= 3],
                    stats={str(name): int(value) for name, value in stats.items()} if isinstance(stats, dict) else {},
                    running_count=integer(info.get("running_count"), len(running)) or 0,
                    staged_count=integer(info.get("staged_count")) or 0,
                )
            )
        return out

    async def _holding(self, queue: str, located: Located) -> tuple[str, str | None, float | None]:
        """(state, worker, claimed at) of a task held by a worker (located running or orphaned): the worker and
        claim time its whereabouts record gives, else its worker's heartbeat list; and from that list, whether a
        running task has started or waits staged (claimed ahead by `worker.prefetch`: state 'staged')."""
        state, worker, since = located.state, located.worker, located.since
        token = located.where.token if located.where is not None else None
        if token and (worker is None or state == "running"):
            holder = (await self._holders(queue)).get(token)
            if holder is not None:
                worker, since = worker or holder[0], since if since is not None else holder[1]
                state = "staged" if holder[2] and state == "running" else state
        return state, worker, since

    async def _holders(self, queue: str) -> dict[str, tuple[str, float | None, bool]]:
        """token -> (worker id, claimed at, staged), from the workers' own lists."""
        return {
            task.token: (worker.id, task.since, task.staged)
            for worker in await self.workers(queue)
            for task in worker.running
        }

    # -- pages -----------------------------------------------------------------------------------------------

    def shown(self, value: Any, path: str, cuts: Cuts) -> Any:
        """A stored field as every face shows it: cut to SHOWN_TEXT per text and SHOWN_FIELD in all (each cut
        added to `cuts`), then masked. Cut first, so a huge field costs the masker no more than a small one (a URL
        a cut goes through is dropped whole, see core/bounds.py)."""
        return self.masker.value(bounded(value, text=SHOWN_TEXT, total=SHOWN_FIELD, path=path, cuts=cuts))

    def summarise(self, raw: Any, state: str, **when: Any) -> TaskSummary:
        """A page line for one envelope (bytes as stored); bytes that are not a JSON object still get a line."""
        envelope = decode(raw)
        if not isinstance(envelope, dict):
            raw = raw or b""
            head = text(raw[: _SUMMARY_MAX * 4])  # a line shows 160 characters: the rest is not even decoded
            shown = self.masker.text(drop_cut_url(head) if len(raw) > _SUMMARY_MAX * 4 else head)
            return TaskSummary(None, None, state, 0, None, shown[:_SUMMARY_MAX], **when)
        task_type = str(envelope.get("type") or ("http" if "url" in envelope else "")) or None
        verb = next((str(envelope[f]) for f in _VERB_FIELDS if isinstance(envelope.get(f), str)), None)
        target = next((str(envelope[f]) for f in _TARGET_FIELDS if isinstance(envelope.get(f), str)), None)
        summary = " ".join(part for part in (verb, target) if part) or (task_type or "")
        summary = drop_cut_url(cut_text(summary, _SUMMARY_MAX * 4)) if len(summary) > _SUMMARY_MAX else summary
        task_id = envelope.get("id")
        return TaskSummary(
            id=None if task_id is None else cut_text(str(task_id), _ID_MAX),
            type=None if task_type is None else cut_text(task_type, _ID_MAX),
            state=state,
            attempt=integer(envelope.get("attempt"), 1) or 1,
            max_attempts=integer(envelope.get("max_attempts")),
            summary=self.masker.text(summary)[:_SUMMARY_MAX],
            **when,
        )

    async def ready(self, queue: str, offset: int = 0, limit: int = 50, cursor: str | None = None) -> Page[TaskSummary]:
        """Every ready task, in the order of core/inspect/ready_list.py (each priority level in turn, most urgent
        first; within it the tasks without a fair key, then each fair key's, by turn), each line naming its fair
        key; `total` is `QueueInfo.ready`'s count. From `offset`, or from `cursor` (a page's `next_cursor`: how to go
        on past many fair keys at a bounded cost); a bad cursor is a ValueError. Wake markers are left out."""
        offset, limit = max(0, offset), max(1, limit)
        at = ReadyCursor.decode(cursor) if cursor else None
        page = await read_ready(self.redis, self.keys(queue), offset, limit, at)
        out = [
            self.summarise(raw, "ready", enqueued_at=ready_since(raw), fair_key=self.shown_key(name or _raw_key(raw)))
            for name, raw in page.rows
        ]
        following = page.next_cursor.encode() if page.next_cursor is not None else None
        return Page(out, page.total, page.offset, limit, following)

    def shown_key(self, fair_key: str | None) -> str | None:
        """A fair key as a page line shows it: masked, and cut as an id is (a raw push's key may be long)."""
        return None if fair_key is None else self.masker.text(cut_text(fair_key, _ID_MAX))

    async def delayed(self, queue: str, offset: int = 0, limit: int = 50, kind: str | None = None) -> Page[TaskSummary]:
        """The delayed set, soonest first, each line saying why it waits (see waiting.py); with `kind` (retrying,
        scheduled or held) only those, found among the PAGE_SCAN_LIMIT soonest due (`total`: the queue's count of
        that kind, see QueueInfo)."""
        k = self.keys(queue)
        offset, limit = max(0, offset), max(1, limit)
        if kind is not None:
            if kind not in WAITING_KINDS:
                raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(WAITING_KINDS)}")
            items = await self.delayed_kinds.page(k, kind, offset, limit)
            size = int(await self.redis.zcard(k.delayed))
            split = await self.delayed_kinds.count(k, size) if size else DelayedSplit(0, 0, 0, True)
            total = getattr(split, kind)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(k.delayed)
                pipe.zrange(k.delayed, offset, offset + limit - 1, withscores=True)
                total, items = await pipe.execute()
        out = [self.waiting_line(raw, float(score) / 1000) for raw, score in items]
        return Page(out, int(total), offset, limit)

    def waiting_line(self, raw: bytes, due_at: float) -> TaskSummary:
        """A delayed page line: the summary, and why it waits (kind, hold, a retry's last error; masked)."""
        line = self.summarise(raw, "delayed", due_at=due_at)
        envelope = decode(raw)
        kind = waiting_kind(envelope)
        error = envelope.get("last_error") if isinstance(envelope, dict) and kind == "retrying" else None
        message = None
        if isinstance(error, dict):
            first = f"{error.get('reason', '')}: {error.get('message', '')}".splitlines()
            message = self.masker.text(cut_text(first[0] if first else "", _SUMMARY_MAX * 8))[: _SUMMARY_MAX * 2]
        held = held_by(envelope)
        if held is not None:
            held["key"] = self.masker.text(held["key"])
        return dataclasses.replace(line, waiting=kind, held=held, last_error=message)

    async def running(self, queue: str, offset: int = 0, limit: int = 50) -> Page[TaskSummary]:
        """Claimed, unsettled tasks, nearest lease deadline first, with their worker and claim time once that
        worker's heartbeat has listed them. A task whose lease has expired (its worker's heartbeat is gone) is
        `orphaned` (ORPHANED_NOTE): it comes first, as the nearest deadlines do."""
        k = self.keys(queue)
        offset, limit = max(0, offset), max(1, limit)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(k.leases, "-inf", "(+inf")  # below +inf: not the layout member (keys.LEASES_LAYOUT)
            pipe.zrangebyscore(k.leases, "-inf", "(+inf", start=offset, num=limit, withscores=True)
            total, leased = await pipe.execute()
        tokens = [text(token) for token, _ in leased]
        envelopes = await self.redis.hmget(k.inflight, tokens) if tokens else []
        holders = await self._holders(queue) if tokens else {}
        now_ms = time.time() * 1000
        out = []
        for (token, (_, deadline)), raw in zip(zip(tokens, leased, strict=True), envelopes, strict=True):
            if raw is None:
                continue  # settled between the two reads
            worker, since, staged = holders.get(token, (None, None, False))
            state = "orphaned" if deadline <= now_ms else "staged" if staged else "running"
            out.append(self.summarise(raw, state, since=since, worker=worker, token=token))
        return Page(out, int(total), offset, limit)

    async def dead(
        self,
        queue: str,
        offset: int = 0,
        limit: int = 50,
        where: DeadFilter | None = None,
        cursor: float | None = None,
    ) -> Page[DeadLetterSummary]:
        """Dead letters, newest first. With a filter (`where`), those of one bounded window that match it, from
        `cursor` (see selection.py): the page's `next_cursor` goes on."""
        letters = self.dead_letters(queue)
        offset, limit = max(0, offset), max(1, limit)
        if where is not None and not where.empty:
            chosen = await self.select_dead(queue, where, cursor, limit)
            raw = await self.redis.hmget(letters.keys.dead, chosen.ids) if chosen.ids else []
            found = [{"id": name, **codec.loads(item)} for name, item in zip(chosen.ids, raw, strict=True) if item]
            lines = [self._dead_line(entry) for entry in found]
            return Page(lines, len(lines), 0, limit, chosen.next_cursor)
        entries = await letters.list(limit, offset)
        total = await letters.count()
        return Page([self._dead_line(entry) for entry in entries], total, offset, limit)

    def _dead_line(self, entry: dict[str, Any]) -> DeadLetterSummary:
        error = entry.get("error") or {}
        message = f"{error.get('reason', '')}: {error.get('message', '')}".splitlines()
        details = error.get("details") if isinstance(error.get("details"), dict) else None
        details = details or {}
        host = target_host(entry)
        return DeadLetterSummary(
            entry_id=str(entry["id"]),
            task_id=entry.get("task_id"),
            reason=str(entry.get("reason")),
            error=self.masker.text(message[0] if message else "")[: _SUMMARY_MAX * 2],
            died_at=number(entry.get("dead_at")),
            attempts=integer(entry.get("attempts"), 0) or 0,
            host=None if host is None else self.masker.text(host)[:_ID_MAX],
            status=integer(details.get("status_code")),
        )

    async def select_dead(
        self, queue: str, where: DeadFilter, cursor: float | None = None, limit: int = SCAN_WINDOW
    ) -> Selection:
        """The ids of the dead letters matching `where` in one bounded window from `cursor` (selection.py)."""
        k = self.keys(queue)
        return await select_dead(self.redis, k.dead, k.dead_index, where, self.masker, cursor, limit)

    # -- one task --------------------------------------------------------------------------------------------

    async def task(self, queue: str, task_id: str, events: int = 50) -> TaskInfo | None:
        """Everything known about a task: where it is now (ready at a level, delayed and why, running and where,
        dead, finished: its whereabouts, see core/whereabouts.py), its envelope, result record, dead letter and
        last `events` events. None when nothing at all is known. What it reads is bounded whatever the backlog."""
        k = self.keys(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.result(task_id))
            pipe.hget(k.dead, task_id)
            pipe.hget(k.where, task_id)
            raw_result, raw_dead, raw_where = await pipe.execute()
        result = decode(raw_result)
        dead = decode(raw_dead)
        status = result.get("status") if isinstance(result, dict) else None
        settled = isinstance(dead, dict) or status in ("succeeded", "dead", "failed", "cancelled")
        located = await TaskLocator(self.redis).locate(k, task_id, raw_where, settled)
        state, worker, since = located.state or "unknown", located.worker, located.since
        envelope: Any = located.envelope
        if located.state in ("running", "orphaned"):
            state, worker, since = await self._holding(queue, located)
        if not located.state:
            if status == "succeeded":
                state = "succeeded"
            elif isinstance(dead, dict):
                state, envelope = "dead", decode(dead.get("raw"))
            elif status in ("dead", "failed", "cancelled"):  # "failed": a record of an earlier version
                state = "dead" if status == "failed" else status
        timeline = await self.timeline(queue, task_id, events)
        if state == "unknown" and result is None and not timeline:
            return None
        cuts: Cuts = {}
        if isinstance(envelope, bytes):
            parsed = decode(envelope)
            if parsed is None and len(envelope) > SHOWN_TEXT:  # not JSON: shown as text, the stored size said
                cuts["envelope.raw"] = {"bytes": len(envelope)}
                parsed = {"raw": drop_cut_url(text(envelope[:SHOWN_TEXT]))}
            envelope = parsed if parsed is not None else {"raw": text(envelope)}
        if isinstance(dead, dict):  # masked first: its raw bytes are JSON text, masked only while whole
            dead = masked_entry({"id": task_id, **dead}, self.masker)
            dead = bounded(dead, text=SHOWN_TEXT, total=SHOWN_FIELD, path="dead_letter", cuts=cuts)
        for index, event in enumerate(timeline):
            cuts.update({f"events[{index}].{path}": cut for path, cut in event.truncated.items()})
        return TaskInfo(
            type=task_type(envelope, result, dead, timeline),
            id=task_id,
            queue=queue,
            state=state,
            envelope=self.shown(envelope, "envelope", cuts) if envelope is not None else None,
            worker=worker,
            since=since,
            result=self.shown(result, "result", cuts) if isinstance(result, dict) else None,
            dead_letter=dead if isinstance(dead, dict) else None,
            events=timeline,
            truncated=cuts,
            where=located.where.to_dict() if located.where is not None and located.state else None,
            note=located.note,
        )

    def operator(self, actor: Actor, bus: EventBus | None = None) -> Operator:
        """The changes `actor` makes through this inspection layer, checked and audited (operations.py)."""
        return Operator(self, actor, bus)

    async def explain(self, queue: str, task_id: str) -> Explanation | None:
        """The one thing the task waits for (see explain.py); None when nothing is known of it."""
        return await explain(self, queue, task_id)

    # -- one dead letter -------------------------------------------------------------------------------------

    async def dead_letter(self, queue: str, entry_id: str) -> DeadLetterInfo | None:
        """One dead letter, fit to show (masked, each field bounded; see DeadLetterInfo); None when there is none."""
        entry = await self.dead_letters(queue).get(entry_id)
        if entry is None:
            return None
        raw = raw_from_entry(entry)
        cuts: Cuts = {}
        fields = {key: value for key, value in entry.items() if key not in ("raw", "raw_base64")}
        task = decode(raw)
        raw_text = None
        if task is not None:
            task = self.shown(task, "task", cuts)
        else:
            head = raw.decode("utf-8", "replace")
            raw_text = bounded(head, text=SHOWN_TEXT, total=SHOWN_FIELD, path="raw_text", cuts=cuts)
            raw_text = masked_raw_text(raw_text, self.masker, cut=bool(entry.get("raw_truncated")))
            if "raw_text" in cuts:
                cuts["raw_text"] = {"bytes": len(raw)}  # the stored size (decoding may have grown it)
        return DeadLetterInfo(
            id=entry_id,
            queue=queue,
            entry=self.shown(fields, "entry", cuts),
            task=task,
            raw_text=raw_text,
            truncated=cuts,
        )

    async def dead_letter_raw(self, queue: str, entry_id: str) -> bytes | None:
        """A dead letter's stored bytes, masked (see deadletters.masked_raw): at most `worker.max_payload_bytes`,
        or the prefix kept of a `too_large` task. None when there is no such dead letter."""
        entry = await self.dead_letters(queue).get(entry_id)
        return None if entry is None else masked_raw(entry, self.masker)
