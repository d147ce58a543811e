"""The queue's event log (core/eventlog.py): outcome events written by the settle script that records the outcome, so
the stream agrees with the result records under fencing, a settle sent again and refused writes; the `stream` sink
for every other event; and each task's timeline, kept with its result and read in one bounded call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from gopherq import EventLog, PermanentFailure
from gopherq.core import codec
from gopherq.core.broker import Broker, Settlement
from gopherq.core.eventlog import (
    ENTRY_BYTES,
    FULL,
    SHORT_BELOW,
    SHORT_FORMS,
    TIMELINE_ENTRY_BYTES,
    ShortEvents,
    duration_json,
    entry_head,
    entry_line,
    plain_line,
)
from gopherq.core.inspect import Inspector
from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings
from gopherq.testing import RedisQueue
from tests.support.common import async_wait_until
from tests.support.plugins import CaptureSink, ExecutorPlugin, NoopExecutor, SinkPlugin
from tests.support.redis_servers import PrivateRedis

LEASE_MS = 60_000
OUTCOMES = {"task.succeeded", "task.failed", "task.dead_lettered"}
LOG = EventLog(maxlen=100_000, timeline=20, ttl=60)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def envelope(task_id: str) -> bytes:
    return codec.dumps({"id": task_id, "method": "GET", "url": "http://127.0.0.1/"})


def line(name: str, task_id: str | None, **extra: Any) -> bytes:
    return entry_line(name, time.time(), "w1", "q", task_id, "http", 1, None, None, extra or None, None)


def stream(client: redis.Redis, broker: Broker) -> list[dict[str, Any]]:
    return [codec.loads(fields[b"event"]) for _, fields in client.xrange(broker.keys.events)]


def retrying(token: str, task_id: str) -> Settlement:
    """A retry due in a minute, with its two events (`task.failed`, `task.retrying`): items of their own."""
    due = str(int(time.time() * 1000) + 60_000)
    events = [line("task.failed", task_id), line("task.retrying", task_id)]
    return Settlement("retry", token, task_id, b"{}", envelope(task_id), due, events=events)


async def claim(broker: Broker, *task_ids: str, lease_ms: int = LEASE_MS) -> dict[str, str]:
    await broker.push([envelope(task_id) for task_id in task_ids])
    return {codec.loads(raw)["id"]: token for token, raw in await broker.claim(len(task_ids), lease_ms)}


async def test_the_settle_writes_each_items_events_with_it_and_a_refused_late_ack_writes_none(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    late = Broker(aredis, queue_name, "w1")
    await late.push([envelope("a")])
    [(stale, _)] = await late.claim(1, -1)  # its lease has already expired
    assert await Broker(aredis, queue_name, "w2").reap(60_000, 1, "w2") is not None  # handed to someone else
    fresh = Broker(aredis, queue_name, "w2")
    [(token, _)] = await fresh.claim(1, LEASE_MS)
    ok = Settlement("ack", token, "a", b'{"by": "w2"}', events=[line("task.succeeded", "a", by="w2")])
    assert await fresh.settle([ok], 60, 10, LOG) == [True]
    refused = Settlement("ack", stale, "a", b'{"by": "w1"}', events=[line("task.succeeded", "a", by="w1")])
    assert await late.settle([refused], 60, 10, LOG) == [False]
    assert [event["data"] for event in stream(sync_redis, late)] == [{"by": "w2"}]  # the fenced settle wrote none
    timeline = await Inspector(aredis, Settings()).events(queue_name, task_id="a")
    assert [(event.name, event.data) for event in timeline] == [("task.succeeded", {"by": "w2"})]
    assert timeline[0].id == sync_redis.xrange(late.keys.events)[0][0].decode()  # the stream entry's own id


async def test_a_settle_sent_again_after_its_reply_was_lost_writes_its_events_once(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    worker = Broker(aredis, queue_name, "w1")
    tokens = await claim(worker, "ok", "again")
    items = [
        Settlement("ack", tokens["ok"], "ok", b"{}", events=[line("task.succeeded", "ok")]),
        retrying(tokens["again"], "again"),
    ]
    assert await worker.settle(items, 60, 10, LOG) == [True, True]
    assert await worker.settle(items, 60, 10, LOG) == [True, True]  # the same call again: reported settled
    names = [(event["event"], event["task_id"]) for event in stream(sync_redis, worker)]
    assert names == [("task.succeeded", "ok"), ("task.failed", "again"), ("task.retrying", "again")]
    inspector = Inspector(aredis, Settings())
    assert [event.name for event in await inspector.timeline(queue_name, "again")] == ["task.failed", "task.retrying"]
    assert [event.name for event in await inspector.timeline(queue_name, "ok")] == ["task.succeeded"]


async def test_riding_events_reach_their_own_timelines_around_a_refused_item_a_retry_and_a_long_event(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    """A success's one event rides in its item (no arguments of its own) and its timeline entry goes into the
    period's hash under its task's id: a refused item between two settled ones writes none, and each event lands in
    its own task's timeline; a retry's two events and a success's long event go as items of their own."""
    worker = Broker(aredis, queue_name, "w1")
    await worker.push([envelope("stale")])
    [(stale, _)] = await worker.claim(1, -1)
    assert await Broker(aredis, queue_name, "w2").reap(60_000, 1, "w2") is not None
    await aredis.lpop(worker.keys.ready)  # the recovered copy goes away: only the stale token is left
    tokens = await claim(worker, "first", "again", "long", "last")
    long_data = {"text": "x" * 3000}  # over a timeline entry (2 KiB): the timeline keeps a shorter copy
    items = [
        Settlement("ack", tokens["first"], "first", b"{}", events=[line("task.succeeded", "first")]),
        Settlement("ack", stale, "stale", b"{}", events=[line("task.succeeded", "stale")]),
        retrying(tokens["again"], "again"),
        Settlement("ack", tokens["long"], "long", b"{}", events=[line("task.succeeded", "long", **long_data)]),
        Settlement("cancel", tokens["last"], "last", b"{}", events=[line("task.cancelled", "last")]),
    ]
    assert await worker.settle(items, 60, 10, LOG) == [True, False, True, True, True]
    names = [(event["event"], event["task_id"]) for event in stream(sync_redis, worker)]
    assert names == [
        ("task.succeeded", "first"),
        ("task.failed", "again"),
        ("task.retrying", "again"),
        ("task.succeeded", "long"),
        ("task.cancelled", "last"),
    ]
    inspector = Inspector(aredis, Settings())
    for task_id, expected in [
        ("first", ["task.succeeded"]),
        ("again", ["task.failed", "task.retrying"]),
        ("long", ["task.succeeded"]),
        ("last", ["task.cancelled"]),
    ]:
        assert [event.name for event in await inspector.timeline(queue_name, task_id)] == expected, task_id
    assert not sync_redis.exists(worker.keys.timeline("stale"))
    [long_event] = await inspector.timeline(queue_name, "long")
    assert long_event.truncated  # the timeline's shorter copy says it was cut
    ack = Settlement("ack", tokens["first"], "first", b"{}", data=b"anything")
    with pytest.raises(ValueError, match="has no data"):
        await worker.settle([ack], 60, 10, LOG)


async def test_a_successs_timeline_entry_goes_into_its_periods_hash_not_a_key_per_task(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    """The settle keeps the riding outcome events' timeline entries in one hash per period of the result TTL (one
    HSET per call, no key with an expiry per task), kept at least the result TTL and at most twice it; the task's
    earlier events stay in its list and a timeline read merges both, in order, whatever bytes the task id holds."""
    ttl = 600
    log = EventLog(maxlen=100_000, timeline=20, ttl=ttl)
    worker = Broker(aredis, queue_name, "w1")
    hostile = 'a b\\ "}\x00\n {x}'  # a space, a backslash, a quote, a NUL, a newline and braces
    ids = [hostile, *(f"t{n}" for n in range(300))]
    tokens = await claim(worker, *ids)
    await log.write(aredis, queue_name, [(line("task.enqueued", hostile), hostile)])
    items = [Settlement("ack", tokens[t], t, b"{}", events=[line("task.succeeded", t)]) for t in ids]
    assert await worker.settle(items, ttl, 10, log) == [True] * len(ids)
    assert not any(sync_redis.exists(worker.keys.timeline(t)) for t in ids[1:])
    period = int(time.time()) // ttl
    hashes = [worker.keys.outcome_events(ttl, p) for p in (period - 1, period)]
    assert sum(sync_redis.hlen(h) for h in hashes) == len(ids)
    expires = max(sync_redis.expiretime(h) for h in hashes if sync_redis.exists(h))
    assert time.time() + ttl - 2 <= expires <= time.time() + 2 * ttl + 2
    inspector = Inspector(aredis, Settings())
    timeline = await inspector.timeline(queue_name, hostile)
    assert [(event.name, event.task_id) for event in timeline] == [
        ("task.enqueued", hostile),
        ("task.succeeded", hostile),
    ]
    [succeeded] = await inspector.timeline(queue_name, "t7")
    assert succeeded.id == next(
        entry_id.decode()
        for entry_id, fields in sync_redis.xrange(worker.keys.events)
        if codec.loads(fields[b"event"])["task_id"] == "t7"
    )


async def test_a_settle_without_the_log_writes_no_event(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    """The stream sink off: no log, nothing written, whatever the settlements carry."""
    worker = Broker(aredis, queue_name, "w1")
    tokens = await claim(worker, "a")
    assert await worker.settle([Settlement("ack", tokens["a"], "a", b"{}", events=[line("x", "a")])], 60, 10) == [True]
    assert not sync_redis.exists(worker.keys.events, worker.keys.timeline("a"), worker.keys.outcome_width)


async def test_while_redis_refuses_writes_an_outcome_and_its_event_land_together(
    private_redis: Callable[..., PrivateRedis], queue_name: str
) -> None:
    """Out of memory under `noeviction`: whatever Redis does with the settle, the result record and the event are
    both written or neither is (one script), and once writes are accepted the settle sent again lands once."""
    server = private_redis("--maxmemory-policy", "noeviction")
    admin = redis.Redis.from_url(server.url)
    client = aioredis.Redis.from_url(server.url)
    try:
        worker = Broker(client, queue_name, "w1")
        tokens = await claim(worker, "a", "b")
        items = [Settlement("ack", tokens[t], t, b"{}", events=[line("task.succeeded", t)]) for t in ("a", "b")]
        admin.config_set("maxmemory", admin.info("memory")["used_memory"])
        try:
            await worker.settle(items, 60, 10, LOG)
        except OutOfMemoryError:
            pass
        results = {t for t in ("a", "b") if admin.exists(worker.keys.result(t))}
        assert {event["task_id"] for event in stream(admin, worker)} == results
        admin.config_set("maxmemory", 0)
        assert await worker.settle(items, 60, 10, LOG) == [True, True]
        assert sorted(event["task_id"] for event in stream(admin, worker)) == ["a", "b"]
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
        await client.aclose()


async def test_a_tasks_timeline_outlives_twenty_thousand_newer_events(
    aredis: aioredis.Redis, queue_name: str, make_settings: Callable[..., Settings]
) -> None:
    """At 1,000 tasks/s the stream's newest 10,000 entries are 10 s: the timeline is read from the task's own key."""
    log = EventLog(maxlen=5_000, timeline=20, ttl=60)
    worker = Broker(aredis, queue_name, "w1")
    tokens = await claim(worker, "old")
    await log.write(aredis, queue_name, [(line("task.enqueued", "old"), "old")])
    await worker.settle(
        [Settlement("ack", tokens["old"], "old", b"{}", events=[line("task.succeeded", "old")])], 60, 1, log
    )
    for chunk in range(20):
        await log.write(aredis, queue_name, [(line("task.succeeded", f"n{chunk}-{n}"), None) for n in range(1000)])
    assert await aredis.xlen(worker.keys.events) < 10_000  # trimmed: "old" is long gone from the stream
    info = await Inspector(aredis, make_settings()).task(queue_name, "old")
    assert info is not None and [event.name for event in info.events] == ["task.enqueued", "task.succeeded"]


async def test_a_settle_caps_the_stream_once_after_its_events(aredis: aioredis.Redis, queue_name: str) -> None:
    """The settle XADDs without MAXLEN and trims once per call: a call of 600 events leaves the stream near its cap
    (XTRIM MAXLEN ~ trims whole nodes of 100 entries), not 600 long."""
    log = EventLog(maxlen=100, timeline=0, ttl=60)
    worker = Broker(aredis, queue_name, "w1")
    ids = [f"t{n}" for n in range(600)]
    tokens = await claim(worker, *ids)
    items = [Settlement("ack", tokens[i], i, b"{}", events=[line("task.succeeded", i)]) for i in ids]
    assert await worker.settle(items, 60, 1, log) == [True] * 600
    assert 100 <= await aredis.xlen(worker.keys.events) <= 200
    newest = await aredis.xrevrange(worker.keys.events, count=1)
    assert codec.loads(newest[0][1][b"event"])["task_id"] == "t599"


@pytest.mark.parametrize("task_id", ["0f3a", 'q"u\\o\nte\u2028\x00é', "x" * (ENTRY_BYTES + 10)])
@pytest.mark.parametrize("task_type", ["http", None, 'ty"pe\x1b'])
@pytest.mark.parametrize(("worker", "queue"), [("w1", "q"), (None, None), ('w"\n', "q\\")])
def test_a_plain_line_is_entry_lines_very_bytes(
    task_id: str, task_type: str | None, worker: str | None, queue: str | None
) -> None:
    """The worker's shortcut for a success's line (its batch's head, then the task's own values) writes what
    entry_line writes: hostile ids and types escaped the same, a long id cut the same, floats formatted the same."""
    stamp = time.time()
    head = entry_head("task.succeeded", stamp, worker, queue)
    for attempt, duration in ((1, 0.000123), (7, None), (10**12, 3.0), (0, 1e-9)):
        expected = entry_line("task.succeeded", stamp, worker, queue, task_id, task_type, attempt, duration, None, None,
                              None)  # fmt: skip
        assert plain_line(head, task_id, task_type, attempt, duration) == expected


#: Ids a short event may carry: none has a quote or a backslash (those are written whole: see below).
SHORT_IDS = ["0f3a", "é", "\U0001f600 ok", "x" * 200, "a'b/c<d>&e"]


async def test_the_settle_completes_short_events_into_entry_lines_very_bytes(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    """A success sent in its short form (its duration, after its form's number but for the first form; core/
    eventlog.py ShortEvents) is written by the settle script as the very bytes entry_line makes: each form's name,
    type and attempt, the id as it is (UTF-8 included), the duration's JSON. Its timeline entry (the period's
    hash) is '<stream entry id> <that line>'."""
    worker = Broker(aredis, queue_name, "w1")
    tokens = await claim(worker, *SHORT_IDS)
    stamp = time.time()
    short = ShortEvents(stamp, "w1", queue_name)
    forms = [("task.succeeded", "http", 1), ("task.succeeded", 'ty"pe\\', 3), ("task.cancelled", None, 2)]
    durations = [0.000123, None, 3.0, -1.2345678901234567e-300, 12.5]
    expected, items = {}, []
    for n, task_id in enumerate(SHORT_IDS):
        name, task_type, attempt = forms[n % len(forms)]
        prefix, room = short.form(name, task_type, attempt)
        assert len(task_id) * 4 <= room
        duration = durations[n % len(durations)]
        kind = "cancel" if name == "task.cancelled" else "ack"
        event = prefix + duration_json(duration)
        assert len(event) < SHORT_BELOW
        items.append(Settlement(kind, tokens[task_id], task_id, b"{}", short_event=event))
        expected[task_id] = entry_line(name, stamp, "w1", queue_name, task_id, task_type, attempt, duration, None,
                                       None, None)  # fmt: skip
    assert await worker.settle(items, 60, 10, LOG, shorts=short.parts()) == [True] * len(SHORT_IDS)
    written = {codec.loads(fields[b"event"])["task_id"]: (entry, fields[b"event"])
               for entry, fields in sync_redis.xrange(worker.keys.events)}  # fmt: skip
    assert {task_id: line for task_id, (_, line) in written.items()} == expected
    assert min(len(line) for line in expected.values()) >= SHORT_BELOW  # whole lines are told apart by length
    outcomes = sync_redis.hgetall(worker.keys.outcome_events(60, int(time.time()) // 60))
    assert {field.decode(): value for field, value in outcomes.items()} == {
        task_id: entry + b" " + line for task_id, (entry, line) in written.items()
    }
    events = await Inspector(aredis, Settings()).events(queue_name, task_id="é")
    assert [(event.name, event.task_type, event.attempt) for event in events] == [("task.succeeded", 'ty"pe\\', 3)]


async def test_a_batch_of_one_form_sends_each_success_as_its_duration_alone(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    """The usual batch, every success of one type and attempt: one form, and each event is its duration's JSON."""
    worker = Broker(aredis, queue_name, "w1")
    ids = [f"t{n}" for n in range(50)]
    tokens = await claim(worker, *ids)
    short = ShortEvents(time.time(), "w1", queue_name)
    prefix, _ = short.form("task.succeeded", "http", 1)
    assert prefix == b""
    items = [Settlement("ack", tokens[i], i, b"{}", short_event=duration_json(n / 7)) for n, i in enumerate(ids)]
    assert await worker.settle(items, 60, 10, LOG, shorts=short.parts()) == [True] * 50
    events = stream(sync_redis, worker)
    assert [(event["task_id"], event["duration"], event["task_type"]) for event in events] == [
        (i, n / 7, "http") for n, i in enumerate(ids)
    ]


def test_a_batch_has_at_most_short_forms_forms_and_each_form_bounds_its_events() -> None:
    """Past SHORT_FORMS distinct (event, type, attempt) forms a batch's events are written whole (FULL: no room);
    each form's number is one byte below any duration's first (the first form has none), and its room keeps a
    short event, its id at four bytes a character, within a timeline entry."""
    short = ShortEvents(time.time(), "w1", "q")
    prefixes = [short.form("task.succeeded", "http", attempt)[0] for attempt in range(1, SHORT_FORMS + 1)]
    assert prefixes == [b""] + [bytes((n,)) for n in range(2, SHORT_FORMS + 1)]
    assert all(prefix < b"-" for prefix in prefixes) and SHORT_FORMS < SHORT_BELOW
    assert short.form("task.succeeded", "http", SHORT_FORMS + 1) == FULL
    assert short.form("task.succeeded", "http", 2)[0] == b"\x02"  # remembered
    head, middle, *_ = short.parts().split(b"\n")
    _, room = short.form("task.succeeded", "http", 1)
    longest = duration_json(-1.2345678901234567e-300)  # the longest float orjson writes
    assert len(head) + 2 + room + len(middle) + len(longest) + 1 <= TIMELINE_ENTRY_BYTES


async def test_a_timeline_expires_with_the_result_and_keeps_its_newest_events_bounded(
    aredis: aioredis.Redis, queue_name: str, sync_redis: redis.Redis
) -> None:
    log = EventLog(maxlen=1000, timeline=3, ttl=600)
    worker = Broker(aredis, queue_name, "w1")
    tokens = await claim(worker, "t")
    await log.write(aredis, queue_name, [(line("task.enqueued", "t", n=n), "t") for n in range(5)])
    huge = line("task.failed", "t", body="x" * 20_000)
    events = [huge, line("task.dead_lettered", "t")]
    assert await worker.settle([Settlement("ack", tokens["t"], "t", b"{}", events=events)], 60, 10, log) == [True]
    key = worker.keys.timeline("t")
    # Set in one script call, from the same TTL: the two expiry times differ at most by the call's own duration.
    assert abs(sync_redis.pexpiretime(key) - sync_redis.pexpiretime(worker.keys.result("t"))) <= 50
    kept = sync_redis.lrange(key, 0, -1)
    assert len(kept) == 3 and all(len(entry) <= TIMELINE_ENTRY_BYTES + 64 for entry in kept)
    timeline = await Inspector(aredis, Settings()).timeline(queue_name, "t")
    assert [event.name for event in timeline] == ["task.enqueued", "task.failed", "task.dead_lettered"]
    assert timeline[1].truncated  # the timeline's copy of the long event says it was cut
    assert len(codec.loads(sync_redis.xrange(worker.keys.events)[-2][1][b"event"])["data"]["body"]) > 2048

    soon = int(time.time() * 1000) + 50
    sync_redis.pexpireat(worker.keys.result("t"), soon)
    sync_redis.pexpireat(key, soon)  # as the settle left them (one expiry time), only sooner
    await async_wait_until(lambda: not sync_redis.exists(worker.keys.result("t")), what="the result expired")
    assert not sync_redis.exists(key) and await Inspector(aredis, Settings()).timeline(queue_name, "t") == []


class LeakyFailure:
    """Fails for good with a message holding a URL with credentials (the masker must hide them)."""

    async def execute(self, task: Any, context: Any) -> None:
        raise PermanentFailure("GET https://bob:hunter2@api.example/x?token=s3cr3t failed", reason="refused")


async def test_a_worker_writes_outcomes_with_the_settle_and_every_other_sink_still_gets_every_event(
    gopherq_queue: RedisQueue, sync_redis: redis.Redis
) -> None:
    capture = CaptureSink()
    plugins = {"capture": SinkPlugin(capture), "noop": ExecutorPlugin("noop", NoopExecutor())}
    plugins["leaky"] = ExecutorPlugin("leaky", LeakyFailure())
    async with gopherq_queue.worker(plugins) as running:
        ok = await running.client.enqueue("noop")
        bad = await running.client.enqueue("leaky")
        traced = await running.client.enqueue("noop", trace={"traceparent": TRACEPARENT})
        await async_wait_until(lambda: len(capture.named("task.succeeded")) == 2, what="both successes")
        await capture.wait_named("task.dead_lettered")
        assert running.worker.bus.log_writer is not None  # the stream sink, on by default
    events = [codec.loads(fields[b"event"]) for _, fields in sync_redis.xrange(QueueKeys(gopherq_queue.name).events)]
    outcomes = [(event["event"], event["task_id"]) for event in events if event["event"] in OUTCOMES]
    assert sorted(outcomes) == sorted(
        [("task.dead_lettered", bad), ("task.failed", bad), ("task.succeeded", ok), ("task.succeeded", traced)]
    )
    # A success's line is written from its batch's head (settling.py): only one without a trace takes that path.
    succeeded = {event["task_id"]: event for event in events if event["event"] == "task.succeeded"}
    assert "trace_id" not in succeeded[ok] and succeeded[traced]["trace_id"] == TRACEPARENT[3:35]
    assert [name for name, task_id in outcomes if task_id == bad] == ["task.failed", "task.dead_lettered"]
    written = [event for event in events if event["event"] in OUTCOMES]
    assert all(event["worker"] == running.worker.id and event["queue"] == gopherq_queue.name for event in written)
    assert "hunter2" not in str(events) and "s3cr3t" not in str(events)
    assert {"worker.started", "worker.stopped"} <= {event["event"] for event in events}  # through the sink
    # Every sink but the log's writer gets the outcome events from the bus, masked, with the logged timestamps.
    assert [(e.name, e.task_id) for e in capture.events if e.name in OUTCOMES] == outcomes
    assert [e.timestamp for e in capture.events if e.name in OUTCOMES] == [event["timestamp"] for event in written]
    assert "hunter2" not in str([e.error for e in capture.events])


async def test_a_worker_writes_every_success_as_entry_line_would_whatever_its_id(
    gopherq_queue: RedisQueue, sync_redis: redis.Redis
) -> None:
    """Through a real worker: ids that take the short form and ids that JSON escapes (written whole), in one
    batch, each success's stream entry the bytes entry_line makes for it."""
    ids = ["plain", 'q"u\\o"te\\', "\\", '"', "é\U0001f600", "x" * 200]
    async with gopherq_queue.worker({"noop": ExecutorPlugin("noop", NoopExecutor())}) as running:
        await running.client.enqueue_many([running.client.task("noop", id=task_id) for task_id in ids])
        await async_wait_until(lambda: running.worker.stats["succeeded"] == len(ids), what="every task to succeed")
        worker_id = running.worker.id
    entries = [fields[b"event"] for _, fields in sync_redis.xrange(QueueKeys(gopherq_queue.name).events)]
    successes = {codec.loads(line)["task_id"]: line for line in entries if b'"task.succeeded"' in line}
    assert sorted(successes) == sorted(ids)
    for task_id, line in successes.items():
        event = codec.loads(line)
        assert line == entry_line("task.succeeded", event["timestamp"], worker_id, gopherq_queue.name, task_id,
                                  "noop", 1, event["duration"], None, None, None)  # fmt: skip
