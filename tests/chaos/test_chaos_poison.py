"""A poison corpus pushed with raw RPUSH: every kind of bad input, and a task whose executor kills the worker
process every time. Each lands in the dead-letter queue with the right reason; the healthy tasks pushed in
between all run, even those that shared a worker with the crashing task."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.chaos.conftest import CRASH_WORKER, Fleet, chaos_config, print_figures, queue_stats, results
from tests.core.test_bad_input import CASES, LIMIT, sha256, stored_raw
from tests.support.common import wait_until
from tests.support.loopback import LoopbackServer

MAX_RECOVERIES = 3  # the default


def unmarked(raw: bytes) -> bytes:
    """The bytes as pushed: a task that was in flight when its worker crashed carries the time it became ready
    again and a recovery count, which the reaper writes at its end (see restamp in levels.lua)."""
    return re.sub(rb'(,"ready_at":[0-9.]+)?(,"recoveries":\d+)?}$', b"}", raw)


@pytest.mark.chaos
def test_a_poison_corpus_is_dead_lettered_and_healthy_tasks_run(
    tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis, fleet: Fleet, loopback: LoopbackServer
) -> None:
    config = chaos_config(tmp_path, redis_url, queue_name, worker={"concurrency": 10, "max_payload_bytes": LIMIT})
    script = tmp_path / "crash_worker.py"
    script.write_text(CRASH_WORKER)
    corpus = {name: raw for name, (raw, _, _) in CASES.items()}
    corpus["crash"] = codec.dumps({"id": "crasher", "type": "crash"})
    names = list(corpus)
    names.insert(len(names) // 2, names.pop())  # the crasher in the middle of the corpus
    healthy = [f"ok{i}" for i in range(len(names) * 3)]
    pushed: list[bytes] = []
    for i, name in enumerate(names):  # three healthy tasks after every bad one
        pushed.append(corpus[name])
        pushed += [
            codec.dumps({"id": h, "url": loopback.url("/ok?min_ms=20&max_ms=80")}) for h in healthy[i * 3 : i * 3 + 3]
        ]
    sync_redis.rpush(queue_name, *pushed)
    began = time.monotonic()

    keys = QueueKeys(queue_name)
    worker = fleet.start(config, script)
    crashes = 0

    def settled() -> bool:
        nonlocal worker, crashes
        if not worker.alive:  # restart it, as a supervisor would
            crashes += 1
            worker = fleet.start(config, script)
        done = all((r or {}).get("status") == "succeeded" for r in results(sync_redis, queue_name, healthy).values())
        return done and sync_redis.hlen(keys.dead) == len(corpus)

    wait_until(settled, timeout=90, interval=0.1, what="every bad task dead-lettered and every healthy task run")
    elapsed = time.monotonic() - began
    entries = [codec.loads(raw) for raw in sync_redis.hvals(keys.dead)]
    # By the digest of the bytes as pushed: a task too large to keep whole keeps a prefix and the whole's digest.
    by_digest = {entry.get("raw_sha256") or sha256(unmarked(stored_raw(entry))): entry for entry in entries}
    stats = queue_stats(sync_redis, queue_name)
    reasons: dict[str, int] = {}
    for entry in entries:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    print_figures(
        "poison corpus pushed raw, with a task that kills its worker every time",
        {
            "bad tasks": len(CASES),
            "healthy tasks in between": len(healthy),
            "worker crashes (each restarted)": crashes,
            "healthy tasks succeeded": sum(
                1 for r in results(sync_redis, queue_name, healthy).values() if (r or {}).get("status") == "succeeded"
            ),
            "recoveries (crasher and its neighbours)": stats.get("recovered", 0),
            "dead letters by reason": ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())),
            "time until all settled (s)": elapsed,
        },
    )
    for name, (raw, reason, message) in CASES.items():
        entry = by_digest[sha256(raw)]
        assert entry["reason"] == reason and message in entry["error"]["message"], name
    crasher = by_digest[sha256(corpus["crash"])]
    assert crasher["reason"] == "poison" and crasher["task_id"] == "crasher"
    assert (
        f"lost its worker {MAX_RECOVERIES + 1} times (max_recoveries={MAX_RECOVERIES})" in crasher["error"]["message"]
    )
    assert crashes == MAX_RECOVERIES + 1
    assert not any(entry.get("task_id", "").startswith("ok") for entry in entries if entry.get("task_id"))
