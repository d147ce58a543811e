"""The envelope's `trace` field, with no tracing plugin at all: checked like every control field, kept across
retries and dead letters, and its trace id carried by events, result records and dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from gopherq import AsyncClient, Settings, is_traceparent, trace_field
from gopherq.core import codec
from gopherq.core.errors import TaskRejected
from gopherq.core.keys import QueueKeys
from gopherq.core.task import task_from_dict
from tests.support.common import async_wait_until
from tests.support.loopback import LoopbackServer

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_trace_is_kept_as_given() -> None:
    trace = {"traceparent": PARENT, "tracestate": "vendor=opaque", "baggage": "tenant=acme,plan=pro"}
    task = task_from_dict({"id": "t", "url": "http://127.0.0.1/", "trace": trace})
    assert task.trace == trace and "trace" not in task.fields
    assert json.loads(task.encode())["trace"] == trace
    assert task_from_dict({"id": "t", "url": "http://127.0.0.1/"}).trace is None  # safe to omit


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ("00-x", "must be an object"),
        ({}, "'trace.traceparent' is required"),
        ({"traceparent": PARENT, "tracestat": "a=b"}, "'trace.tracestat' is not a field of 'trace'"),
        ({"traceparent": PARENT.upper()}, "not a W3C traceparent"),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, "not a W3C traceparent"),
        ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01"}, "not a W3C traceparent"),
        ({"traceparent": "ff" + PARENT[2:]}, "not a W3C traceparent"),
        ({"traceparent": PARENT + "-extra"}, "not a W3C traceparent"),  # version 00 has exactly four fields
        ({"traceparent": 42}, "'trace.traceparent' must be a string"),
        ({"traceparent": PARENT, "tracestate": "a=" + "b" * 600}, "'trace.tracestate' must be a string of at most 512"),
        ({"traceparent": PARENT, "baggage": "k=v\r\nX-Injected: 1"}, "'trace.baggage' must be a string"),
    ],
)
def test_a_bad_trace_is_refused_naming_the_field(trace: Any, message: str) -> None:
    with pytest.raises(TaskRejected) as caught:
        task_from_dict({"id": "t", "url": "http://127.0.0.1/", "trace": trace})
    assert caught.value.reason == "schema_invalid" and message in caught.value.message


def test_a_future_version_may_carry_more_fields() -> None:
    assert task_from_dict({"id": "t", "trace": {"traceparent": "01" + PARENT[2:] + "-more"}}).trace is not None


async def test_the_trace_id_reaches_events_results_and_dead_letters(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    sync_redis: redis.Redis,
    queue_name: str,
    loopback: LoopbackServer,
) -> None:
    settings = make_settings(queue={"backoff_min": 0.01, "backoff_max": 0.02})
    await start_worker(settings)
    trace = {"traceparent": PARENT}
    sync_redis.rpush(
        queue_name,
        codec.dumps({"id": "flaky", "url": loopback.url("/flaky/1?retry_after=0"), "trace": trace}),
        codec.dumps({"id": "gone", "url": loopback.url("/status/404"), "trace": trace}),
        codec.dumps({"id": "bad", "url": loopback.url("/ok"), "trace": {"traceparent": "00-nope"}}),
    )
    keys = QueueKeys(queue_name)
    async with AsyncClient(settings) as client:
        for task_id in ("gone", "bad"):
            await async_wait_until(lambda t=task_id: sync_redis.exists(keys.result(t)), what=f"{task_id} to end")
        record = await client.wait("flaky", timeout=15)
        assert record is not None and record.attempts == 2 and record.trace_id == PARENT[3:35]  # kept by the retry
        letters = {entry["task_id"]: entry for entry in await client.dead_letters.list()}
        assert letters["gone"]["trace_id"] == PARENT[3:35] and letters["gone"]["reason"] == "non_retryable"
        # A malformed trace is a malformed task: dead-lettered with its bytes, never run.
        assert (
            letters["bad"]["reason"] == "schema_invalid" and "trace.traceparent" in letters["bad"]["error"]["message"]
        )
        assert loopback.count("bad") == 0
        info = await client.inspect.task(queue_name, "flaky")
        assert info is not None and info.trace_id == PARENT[3:35]

        async def events() -> dict[str, str | None]:
            found = await client.inspect.task(queue_name, "flaky")
            return {event.name: event.trace_id for event in found.events} if found else {}

        async def both() -> bool:
            return {"task.retrying", "task.succeeded"} <= set(await events())

        await async_wait_until(both, what="the task's events in the stream")
        seen = await events()
        assert seen["task.retrying"] == PARENT[3:35] and seen["task.succeeded"] == PARENT[3:35]


@pytest.mark.parametrize(
    "parent",
    [
        PARENT,
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later-fields",  # a later version may add fields
    ],
)
def test_is_traceparent_accepts_what_the_envelope_keeps(parent: str) -> None:
    assert is_traceparent(parent)
    assert task_from_dict({"id": "t", "url": "http://127.0.0.1/", "trace": {"traceparent": parent}}).trace


@pytest.mark.parametrize(
    "parent",
    [
        PARENT.upper(),
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        "ff" + PARENT[2:],
        PARENT + "-extra",
        PARENT[:-1],
        "",
    ],
)
def test_is_traceparent_refuses_what_check_trace_refuses(parent: str) -> None:
    assert not is_traceparent(parent)
    with pytest.raises(TaskRejected, match="not a W3C traceparent"):
        task_from_dict({"id": "t", "url": "http://127.0.0.1/", "trace": {"traceparent": parent}})


def test_trace_field_keeps_what_fits_and_drops_what_the_envelope_would_refuse() -> None:
    """What a propagator wrote becomes a `trace` field that is always accepted: a tracestate over its 512
    characters or a baggage with a line break (a header injection) is left out, not the task."""
    kept = trace_field({"traceparent": PARENT, "tracestate": "v=1", "baggage": "tenant=acme", "other": "x"})
    assert kept == {"traceparent": PARENT, "tracestate": "v=1", "baggage": "tenant=acme"}
    cut = trace_field({"traceparent": PARENT, "tracestate": "a=" + "b" * 600, "baggage": "k=v\r\nX-Injected: 1"})
    assert cut == {"traceparent": PARENT}
    at_limit = "k=" + "v" * 8190  # 8,192 characters: W3C Baggage's limit, kept; one more is left out
    assert trace_field({"traceparent": PARENT, "baggage": at_limit}) == {"traceparent": PARENT, "baggage": at_limit}
    assert trace_field({"traceparent": PARENT, "baggage": at_limit + "v"}) == {"traceparent": PARENT}
    for field in (kept, cut):
        assert task_from_dict({"id": "t", "url": "http://127.0.0.1/", "trace": field}).trace == field
    assert trace_field({}) is None
    assert trace_field({"tracestate": "v=1"}) is None  # no traceparent: no trace
    assert trace_field({"traceparent": "00-x"}) is None
    assert trace_field({"traceparent": 42}) is None  # type: ignore[dict-item]  # the wrong type: no trace
    nested = {"traceparent": PARENT, "baggage": {"k": ["v"] * 1000}, "tracestate": b"v=1"}
    assert trace_field(nested) == {"traceparent": PARENT}  # type: ignore[arg-type]
    assert trace_field({"traceparent": PARENT + "\x00"}) is None  # a control character in the parent
    assert trace_field({"traceparent": "01-" + PARENT[3:] + "-" + "x" * 300}) is None  # over TRACEPARENT_MAX
