"""Retries: backoff bounds, Retry-After parsing and capping, deadlines, and which HTTP outcomes are retried, on
the pure policy and through a real worker against a real loopback server."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gopherq.core import codec
from gopherq.core.broker import Broker
from gopherq.core.outcomes import DEAD_DETAIL_LIMIT, DEAD_ERROR_LIMIT, OutcomePolicy, backoff_delay
from gopherq.core.resilience import Backoff
from gopherq.core.results import ErrorInfo
from gopherq.core.sections import QueueSettings
from gopherq.core.settings import Settings
from gopherq.core.task import RetryBackoff, Task
from gopherq.plugins.http.responses import retry_after_seconds
from tests.support.common import async_wait_until
from tests.support.loopback import LoopbackServer
from tests.support.plugins import CaptureSink, SinkPlugin

# -- the pure policy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20, 100])
def test_backoff_is_exponential_with_full_jitter_between_min_and_max(attempt: int) -> None:
    low, high = 0.5, 30.0
    cap = min(high, low * 2 ** (attempt - 1))
    delays = [backoff_delay(attempt, low, high) for _ in range(500)]
    assert all(low <= delay <= cap for delay in delays)
    if cap > low:
        assert max(delays) - min(delays) > (cap - low) / 2  # jittered over the whole range, not a constant


def test_reconnect_backoff_never_waits_less_than_its_floor_nor_more_than_its_ceiling() -> None:
    backoff = Backoff("test", low=0.1, high=2.0)
    for failures in range(40):
        backoff.failures = failures
        delays = [backoff.delay() for _ in range(50)]
        assert all(0.1 <= delay <= 2.0 for delay in delays)  # never a busy loop while Redis is down


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds("1") == 1.0
    assert retry_after_seconds(" 120 ") == 120.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_seconds(unreadable) is None


def policy(**queue: Any) -> OutcomePolicy:
    return OutcomePolicy(QueueSettings(name="q", **queue), "w1")


def failing(task: Task, retryable: bool = True, delay: float | None = None, at: float = 1000.0) -> Any:
    error = ErrorInfo("http_status", "GET http://x/: HTTP 503", {"status_code": 503})
    return policy(max_attempts=3, backoff_min=1.0, backoff_max=60.0).failure(
        "7", task, error, retryable, delay, at - 0.1, at
    )


def test_a_retry_goes_to_the_delayed_set_with_the_next_attempt_and_the_last_error() -> None:
    decision = failing(Task(id="t"))
    settlement = decision.settlement
    assert settlement.kind == "retry" and decision.event == "task.retrying"
    envelope = codec.loads(settlement.data)
    assert envelope["id"] == "t" and envelope["attempt"] == 2
    assert envelope["last_error"]["reason"] == "http_status"
    assert 1000 + 1.0 <= int(settlement.extra) / 1000 <= 1000 + 1.0 + 0.001  # attempt 1: exactly min delay
    assert decision.data == {"delay": pytest.approx(1.0), "retry_at": pytest.approx(1001.0)}


def test_retry_after_is_honoured_but_capped_by_the_max_delay() -> None:
    assert failing(Task(id="t"), delay=7.0).data["delay"] == 7.0
    assert failing(Task(id="t"), delay=3600.0).data["delay"] == 60.0
    per_task = Task(id="t", backoff=RetryBackoff(0.1, 5.0))
    decision = policy().failure("7", per_task, ErrorInfo("x", "y"), True, 3600.0, 0.0, 1.0)
    assert decision.data["delay"] == 5.0


def test_no_retry_for_a_non_retryable_failure_or_the_last_attempt() -> None:
    assert failing(Task(id="t"), retryable=False).data["reason"] == "non_retryable"
    last = failing(Task(id="t", attempt=3))
    assert last.settlement.kind == "dead" and last.data["reason"] == "retries_exhausted"
    entry = codec.loads(last.settlement.data)
    assert entry["error"]["details"]["status_code"] == 503 and entry["attempts"] == 3
    assert failing(Task(id="t", attempt=2, max_attempts=10)).settlement.kind == "retry"  # per-task max wins


def test_no_retry_that_would_start_after_the_deadline() -> None:
    decision = failing(Task(id="t", deadline=1000.5), delay=1.0)
    assert decision.settlement.kind == "dead" and decision.data["reason"] == "deadline"
    assert failing(Task(id="t", deadline=1010.0), delay=1.0).settlement.kind == "retry"


# -- through a worker ----------------------------------------------------------------------------------------


def fast_retries(make_settings: Callable[..., Settings], **plugins: Any) -> Settings:
    return make_settings(
        queue={"max_attempts": 3, "backoff_min": 0.05, "backoff_max": 0.1}, worker={"task_timeout": 5.0}, **plugins
    )


async def push(aredis: aioredis.Redis, queue: str, *tasks: dict[str, Any]) -> None:
    await aredis.rpush(queue, *(codec.dumps(task) for task in tasks))


async def final(aredis: aioredis.Redis, queue: str, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
    broker = Broker(aredis, queue)

    async def done() -> dict[str, Any] | None:
        record = await broker.get_result(task_id)
        return record if record is not None and record["status"] != "retrying" else None

    result: dict[str, Any] = await async_wait_until(done, timeout=timeout, what=f"final result of {task_id}")
    return result


def cut_retry(loopback: LoopbackServer, last_error: Any) -> dict[str, Any]:
    """Task "cut" as a retry's envelope carries it: its second attempt, the first one's error inside, its deadline
    0.5 s away and its call slower than that, so the attempt's time limit is cut at the deadline."""
    return {
        "id": "cut",
        "url": loopback.url("/slow?seconds=5"),
        "deadline": time.time() + 0.5,
        "attempt": 2,
        "last_error": last_error,
    }


async def dead_letter(aredis: aioredis.Redis, queue: str, task_id: str) -> dict[str, Any]:
    raw = await aredis.hget(Broker(aredis, queue).keys.dead, task_id)
    assert raw is not None, f"{task_id} is not a dead letter"
    return codec.loads(raw)  # type: ignore[no-any-return]


async def test_network_errors_timeouts_408_429_and_5xx_are_retried(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    sink = CaptureSink()
    await start_worker(fast_retries(make_settings), extra_plugins={"capture": SinkPlugin(sink)})
    tasks = {f"s{status}": loopback.url(f"/flaky/1?status={status}") for status in (408, 429, 500, 502, 503, 599)}
    await push(aredis, queue_name, *({"id": key, "url": url} for key, url in tasks.items()))
    for key in tasks:
        record = await final(aredis, queue_name, key)
        assert (record["status"], record["attempts"]) == ("succeeded", 2), key
        assert loopback.count(key) == 2
    retrying = {event.task_id: event for event in await sink.wait_named("task.retrying", len(tasks))}
    assert set(retrying) == set(tasks)
    assert all(0.05 <= event.data["delay"] <= 0.1 for event in retrying.values())
    # A refused connection and a timeout are retried until the attempts run out.
    with_closed_port = "http://127.0.0.1:9/"  # discard port: nothing listens there
    await push(
        aredis,
        queue_name,
        {"id": "refused", "url": with_closed_port},
        {"id": "hangs", "url": loopback.url("/slow?seconds=3"), "timeout": 0.2},
    )
    for key, reason in (("refused", "connect_error"), ("hangs", "timeout")):
        record = await final(aredis, queue_name, key)
        assert (record["status"], record["attempts"], record["dead_reason"]) == ("dead", 3, "retries_exhausted")
        entry = await dead_letter(aredis, queue_name, key)
        assert entry["reason"] == "retries_exhausted" and entry["error"]["reason"] == reason
    dead = {event.task_id: event.data["reason"] for event in await sink.wait_named("task.dead_lettered", 2)}
    assert dead == {"refused": "retries_exhausted", "hangs": "retries_exhausted"}


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_other_4xx_are_not_retried_and_the_dead_letter_keeps_the_response(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
    status: int,
) -> None:
    await start_worker(fast_retries(make_settings))
    await push(aredis, queue_name, {"id": "no", "url": loopback.url(f"/status/{status}?body_size=20000")})
    record = await final(aredis, queue_name, "no")
    assert (record["status"], record["attempts"], record["dead_reason"]) == ("dead", 1, "non_retryable")
    assert loopback.count("no") == 1
    entry = await dead_letter(aredis, queue_name, "no")
    details = entry["error"]["details"]
    assert details["status_code"] == status
    assert len(details["body"]) == DEAD_DETAIL_LIMIT and details["body_truncated"] is True  # capped


async def test_the_retried_statuses_are_configurable(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    settings = fast_retries(make_settings, plugins={"http": {"retry_statuses": [404]}})
    await start_worker(settings)
    await push(
        aredis,
        queue_name,
        {"id": "gone", "url": loopback.url("/flaky/1?status=404")},
        {"id": "unavailable", "url": loopback.url("/status/503")},
    )
    assert (await final(aredis, queue_name, "gone"))["attempts"] == 2
    assert (await final(aredis, queue_name, "unavailable"))["dead_reason"] == "non_retryable"


async def test_a_task_past_its_deadline_gets_no_further_attempt(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    settings = make_settings(queue={"max_attempts": 100, "backoff_min": 0.2, "backoff_max": 0.2})
    await start_worker(settings)
    now = time.time()
    await push(
        aredis,
        queue_name,
        {"id": "expired", "url": loopback.url("/ok"), "deadline": now - 1},
        {"id": "runs-out", "url": loopback.url("/status/503"), "deadline": now + 1.0},
    )
    record = await final(aredis, queue_name, "expired")
    assert record["dead_reason"] == "deadline" and loopback.count("expired") == 0
    record = await final(aredis, queue_name, "runs-out")
    assert record["dead_reason"] == "deadline" and record["status"] == "dead"
    assert 2 <= loopback.count("runs-out") <= 6  # about one attempt per 0.2 s until the deadline
    entry = await dead_letter(aredis, queue_name, "runs-out")
    assert entry["reason"] == "deadline"
    # Dead when the next retry would start too late (the error is the last response); when a retry was due just
    # before the deadline but claimed after it, before that attempt; or when it started just before the deadline and
    # was cut at it (in both, the last response is kept inside).
    details = entry["error"]["details"]
    assert details.get("status_code", details.get("last_error", {}).get("details", {}).get("status_code")) == 503


async def test_an_attempt_cut_at_the_deadline_says_so_and_keeps_the_error_before_it(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    """A retry that starts just before the deadline gets a time limit cut to it, often too short for an answer: the
    dead letter names the cut and still carries what the attempts before it got (CI once saw a 0.3 ms attempt)."""
    await start_worker(make_settings(queue={"max_attempts": 100}))
    earlier = {"reason": "http_status", "message": "HTTP 503", "details": {"status_code": 503}}
    await push(
        aredis,
        queue_name,
        cut_retry(loopback, earlier),
        {"id": "own-limit", "url": loopback.url("/slow?seconds=5"), "timeout": 0.3, "max_attempts": 1},
    )
    record = await final(aredis, queue_name, "cut")
    assert record["dead_reason"] == "deadline" and loopback.count("cut") == 1
    error = (await dead_letter(aredis, queue_name, "cut"))["error"]
    assert error["reason"] == "timeout" and "cut at the task's deadline" in error["message"]
    assert error["details"]["last_error"] == earlier
    # An attempt that outlasted its own time limit is a plain timeout.
    await final(aredis, queue_name, "own-limit")
    error = (await dead_letter(aredis, queue_name, "own-limit"))["error"]
    assert error["message"] == "attempt exceeded its time limit of 0.3s" and "last_error" not in error.get(
        "details", {}
    )


async def test_a_hostile_last_error_carried_into_a_cut_attempt_stays_bounded(
    make_settings: Callable[..., Settings],
    start_worker: Any,
    aredis: aioredis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    """`last_error` is a reserved field, but a raw push can set it: huge, deeply nested, with control characters.
    The cut attempt keeps it in its dead letter only through the dead letter's own bound (capped_error)."""
    await start_worker(make_settings(queue={"max_attempts": 100}))
    nested: dict[str, Any] = {"x": "\x1b[31m\r\nforged"}
    for _ in range(200):
        nested = {"n": nested}
    hostile = {"reason": "r", "message": "m", "details": {"blob": "A" * 500_000, "deep": nested}}
    await push(aredis, queue_name, cut_retry(loopback, hostile))
    assert (await final(aredis, queue_name, "cut"))["dead_reason"] == "deadline"
    error = (await dead_letter(aredis, queue_name, "cut"))["error"]
    assert "cut at the task's deadline" in error["message"]
    assert len(codec.dumps(error["details"])) <= DEAD_ERROR_LIMIT + 1024
