"""The inspection layer behind the operator pages: a paused schedule's slots pass without a task on every worker,
run now leaves the slots alone; per-flow-key statistics (labels, p95) are bounded and expire; settle writes the
hour's counts and timings beside the minute's."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from gopherq.core.broker import Broker, Settlement
from gopherq.core.flow import FlowGate, FlowLimits
from gopherq.core.flow_stats import BUCKET, LATENCY_BOUNDS, HourStats, bucket_of, label_of, last_hour
from gopherq.core.inspect import Inspector
from gopherq.core.keys import FLOW_STATS_TTL, HOURLY_COUNTS_TTL, QueueKeys
from gopherq.core.schedules import Scheduler
from gopherq.core.settings import Settings


async def test_a_paused_schedule_lets_its_slots_pass_and_run_now_leaves_them(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    settings = make_settings(schedules=[{"name": "beat", "every": 10, "task": {"url": "http://127.0.0.1/x"}}])
    inspector = Inspector(aredis, settings)
    broker = Broker(aredis, queue_name)
    scheduler = Scheduler(settings.schedules, queue_name, {queue_name: broker})
    await scheduler.tick(now=1000.0)  # first sight: starts from here
    await inspector.pause_schedule("beat")
    assert await scheduler.tick(now=1025.0) == 0  # slots 1010 and 1020 pass without a task
    assert await aredis.llen(queue_name) == 0
    assert await aredis.hget(QueueKeys(queue_name).schedules, "beat") == b"1020"
    [row] = await inspector.schedules()
    assert row["paused"] is not None and row["last_task"] == "beat@1020" and row["last_outcome"] is None
    await inspector.pause_schedule("beat", False)
    assert await scheduler.tick(now=1031.0) == 1
    task_id = await inspector.run_schedule_now("beat")
    assert task_id is not None and task_id.startswith("beat@") and await aredis.llen(queue_name) == 2
    assert await aredis.hget(QueueKeys(queue_name).schedules, "beat") == b"1030"


def test_labels_and_buckets_are_bounded() -> None:
    assert label_of("429") == "429" and label_of("x" * 17) == "other" and label_of("a:b") == "other"
    assert label_of(None) == "other"
    assert bucket_of(0.004) == "0" and bucket_of(0.2) == "4" and bucket_of(1e6) == str(len(LATENCY_BOUNDS))
    assert bucket_of(None) == "" and bucket_of(-1) == ""
    stats = HourStats({"ok": 95, "5xx": 5}, {0: 90, 6: 5, 12: 5})
    assert stats.share("ok") == 0.95 and stats.quantile(0.95) == 1.0 and stats.quantile(0.99) == float("inf")
    assert HourStats().quantile(0.95) is None and HourStats().share("ok") is None


async def test_flow_statistics_per_key_and_minute_expire(aredis: aioredis.Redis, queue_name: str) -> None:
    gate = FlowGate(aredis, queue_name)
    limits = FlowLimits(rate=1000, burst=10)
    tokens = [str(n) for n in range(4)]
    await gate.admit([("api.example", limits, token, None) for token in tokens], int(time.time() * 1000) + 60000)
    await gate.done(
        [
            ("api.example", limits, "0", "ok", "ok", 0.02),
            ("api.example", limits, "1", "ok", "ok", 0.03),
            ("api.example", limits, "2", "slow", "429", 0.2),
            ("api.example", limits, "3", "neutral", None, None),  # put back at shutdown: not counted
        ]
    )
    [stats] = await last_hour(aredis, queue_name, ["api.example"])
    assert stats.labels == {"ok": 2, "429": 1} and stats.quantile(0.5) == 0.05
    start = int(time.time()) // BUCKET * BUCKET
    assert 0 < await aredis.ttl(QueueKeys(queue_name).flow_stats("api.example", start)) <= FLOW_STATS_TTL


async def test_settle_writes_the_hours_counts_and_timings(
    make_settings: Callable[..., Settings], aredis: aioredis.Redis, queue_name: str
) -> None:
    broker = Broker(aredis, queue_name, worker_id="w1")
    await broker.push([b'{"id":"a","url":"http://x/"}', b'{"id":"b","url":"http://x/"}'])
    claimed = await broker.claim(2, 60000)
    assert claimed is not None
    items = [Settlement("ack", token, "a", b'{"status":"succeeded"}') for token, _ in claimed]
    await broker.settle(items, 60, 10, timing=(300, 2, 5000, 2))
    keys = QueueKeys(queue_name)
    hour = int(time.time()) // 3600 * 3600
    counts = await aredis.hgetall(keys.hourly_counts(hour))
    assert counts == {b"succeeded": b"2", b"duration_ms": b"300", b"timed": b"2", b"wait_ms": b"5000", b"waited": b"2"}
    assert HOURLY_COUNTS_TTL - 5 < await aredis.ttl(keys.hourly_counts(hour)) <= HOURLY_COUNTS_TTL
    inspector = Inspector(aredis, make_settings())
    for span in ("1h", "24h", "7d"):
        latest = (await inspector.history(queue_name, span))[-1]
        assert latest.succeeded == 2 and latest.failed == 0, span
        assert latest.duration == 0.15 and latest.wait == 2.5, span
    assert len(await inspector.history(queue_name, "7d")) == 168
