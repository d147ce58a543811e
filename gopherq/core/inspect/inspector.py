"""The Inspector: every read of a queue's state that the CLI, the client, the dashboard and the API show.

One query, four faces: none of them talks to Redis on its own. Every call is bounded: lists come in pages, queues
are found in the queue registry (SCAN only on request: `discover`), and looking a task up by id searches at most
SEARCH_LIMIT entries of each unindexed place (ready list, in-flight hash, delayed set) and the last EVENT_SCAN_LIMIT
events of the stream. Everything returned that holds an envelope, a result, an error or event data is masked, and
bounded: each stored field (an envelope, a result record, a dead letter, an event) is cut to the limits of
core/bounds.py, and what was cut is said (`truncated`), so no page, fragment or API answer grows with what a
producer or an endpoint sent. Queue-level reads live in queues.py, events in stream.py.
"""

from __future__ import annotations

import time
from typing import Any

from gopherq.core.bounds import SHOWN_FIELD, SHOWN_TEXT, Cuts, bounded, cut_text
from gopherq.core.broker import Broker
from gopherq.core.deadletters import DeadLetters, masked_entry, masked_raw, masked_raw_text
from gopherq.core.events import EventBus
from gopherq.core.inspect.models import (
    DeadLetterInfo,
    DeadLetterSummary,
    Page,
    RunningTask,
    TaskInfo,
    TaskSummary,
    WorkerInfo,
)
from gopherq.core.inspect.operations import OperationsReader
from gopherq.core.inspect.queues import QueueReader
from gopherq.core.inspect.readiness import ready_since
from gopherq.core.inspect.reading import (
    decode,
    find_in_hash,
    find_in_list,
    find_in_zset,
    id_pattern,
    integer,
    number,
    task_type,
    text,
)
from gopherq.core.inspect.stream import EventReader
from gopherq.core.keys import WAKE_MARKER, QueueKeys, validate_queue_name
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
                    running=[RunningTask(task_id, str(token), since) for token, task_id, since in running],
                    stats={str(name): int(value) for name, value in stats.items()} if isinstance(stats, dict) else {},
                    running_count=integer(info.get("running_count"), len(running)) or 0,
                )
            )
        return out

    async def _holders(self, queue: str) -> dict[str, tuple[str, float | None]]:
        """token -> (worker id, claimed at), from the workers' own lists."""
        return {task.token: (worker.id, task.since) for worker in await self.workers(queue) for task in worker.running}

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

    async def ready(self, queue: str, offset: int = 0, limit: int = 50) -> Page[TaskSummary]:
        """The ready lists from their heads, most urgent priority level first (the order a strict worker takes
        them in); wake markers (see docs/tasks.md) are left out."""
        k = self.keys(queue)
        offset, limit = max(0, offset), max(1, limit)
        lists = [k.level("high"), k.ready, k.level("low")]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in lists:
                pipe.llen(name)
            pipe.lpos(k.ready, WAKE_MARKER, count=0, maxlen=1000)  # markers are not tasks (see heads.lua)
            *sizes, markers = await pipe.execute()
        items: list[bytes] = []
        start = offset
        for name, size in zip(lists, sizes, strict=True):
            if start < size and len(items) < limit:
                items += await self.redis.lrange(name, start, start + limit - len(items) - 1)
            start = max(0, start - size)
        total = sum(sizes) - len(markers or ())
        out = []
        for raw in items:
            if raw == WAKE_MARKER:
                continue
            out.append(self.summarise(raw, "ready", enqueued_at=ready_since(raw)))
        return Page(out, int(total), offset, limit)

    async def delayed(self, queue: str, offset: int = 0, limit: int = 50) -> Page[TaskSummary]:
        """The delayed set (retries waiting, tasks with an eta), soonest first."""
        k = self.keys(queue)
        offset, limit = max(0, offset), max(1, limit)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(k.delayed)
            pipe.zrange(k.delayed, offset, offset + limit - 1, withscores=True)
            total, items = await pipe.execute()
        out = [self.summarise(raw, "delayed", due_at=float(score) / 1000) for raw, score in items]
        return Page(out, int(total), offset, limit)

    async def running(self, queue: str, offset: int = 0, limit: int = 50) -> Page[TaskSummary]:
        """Claimed, unsettled tasks, nearest lease deadline first, with their worker and claim time once that
        worker's heartbeat has listed them. A task whose lease has expired (its worker's heartbeat is gone) is
        `orphaned` (ORPHANED_NOTE): it comes first, as the nearest deadlines do."""
        k = self.keys(queue)
        offset, limit = max(0, offset), max(1, limit)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(k.leases)
            pipe.zrange(k.leases, offset, offset + limit - 1, withscores=True)
            total, leased = await pipe.execute()
        tokens = [text(token) for token, _ in leased]
        envelopes = await self.redis.hmget(k.inflight, tokens) if tokens else []
        holders = await self._holders(queue) if tokens else {}
        now_ms = time.time() * 1000
        out = []
        for (token, (_, deadline)), raw in zip(zip(tokens, leased, strict=True), envelopes, strict=True):
            if raw is None:
                continue  # settled between the two reads
            worker, since = holders.get(token, (None, None))
            state = "orphaned" if deadline <= now_ms else "running"
            out.append(self.summarise(raw, state, since=since, worker=worker, token=token))
        return Page(out, int(total), offset, limit)

    async def dead(self, queue: str, offset: int = 0, limit: int = 50) -> Page[DeadLetterSummary]:
        """Dead letters, newest first."""
        letters = self.dead_letters(queue)
        offset, limit = max(0, offset), max(1, limit)
        entries = await letters.list(limit, offset)
        total = await letters.count()
        out = []
        for entry in entries:
            error = entry.get("error") or {}
            message = f"{error.get('reason', '')}: {error.get('message', '')}".splitlines()
            out.append(
                DeadLetterSummary(
                    entry_id=str(entry["id"]),
                    task_id=entry.get("task_id"),
                    reason=str(entry.get("reason")),
                    error=self.masker.text(message[0] if message else "")[: _SUMMARY_MAX * 2],
                    died_at=number(entry.get("dead_at")),
                    attempts=integer(entry.get("attempts"), 0) or 0,
                )
            )
        return Page(out, total, offset, limit)

    # -- one task --------------------------------------------------------------------------------------------

    async def task(self, queue: str, task_id: str, events: int = 50) -> TaskInfo | None:
        """Everything known about a task: where it is now (running, delayed, ready, dead, finished), its
        envelope, result record, dead letter and last `events` events. None when nothing at all is known."""
        k = self.keys(queue)
        pattern = id_pattern(task_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(k.result(task_id))
            pipe.hget(k.dead, task_id)
            raw_result, raw_dead = await pipe.execute()
        result = decode(raw_result)
        dead = decode(raw_dead)
        status = result.get("status") if isinstance(result, dict) else None
        state, worker, since = "unknown", None, None
        envelope: Any = None
        found = await find_in_hash(self.redis, k.inflight, pattern)
        if found is not None:
            state, envelope = "running", found[1]
            worker, since = (await self._holders(queue)).get(found[0], (None, None))
            deadline = await self.redis.zscore(k.leases, found[0])
            if deadline is not None and deadline <= time.time() * 1000:
                state = "orphaned"  # its worker's heartbeat is gone: ORPHANED_NOTE
        elif status == "succeeded":
            state = "succeeded"
        elif isinstance(dead, dict):
            state, envelope = "dead", decode(dead.get("raw"))
        else:
            raw = await find_in_zset(self.redis, k.delayed, pattern)
            if raw is not None:
                state, envelope = "delayed", raw
            else:
                for name in (k.level("high"), k.ready, k.level("low")):  # every priority level
                    raw = await find_in_list(self.redis, name, pattern)
                    if raw is not None:
                        state, envelope = "ready", raw
                        break
                else:
                    if status in ("dead", "failed", "cancelled"):  # "failed": a record of an earlier version
                        state = "dead" if status == "failed" else status
        timeline = await self.events(queue, count=events, task_id=task_id, latest=True)  # in time order
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
        )

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
