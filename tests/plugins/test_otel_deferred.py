"""Recorded attempts whose spans are made at their end (deferred.py) against those made open (direct.py): for the same
attempt and the same calls, what the span processors receive must be the same spans, ids and times aside. The open
path is taken when a processor has an `on_start`, so each case runs twice on one private provider: without such a
processor (deferred), then with one (open)."""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from gopherq import AttemptOutcome, ExecutionContext, Masker, PermanentFailure, RetryTask, Task, TaskFailure
from gopherq.core.settings import load_settings
from gopherq.plugins.otel.attempts import Attempts
from gopherq.plugins.otel.calls import Targets
from gopherq.plugins.otel.deferred import DeferredAttempt
from tests.plugins.test_otel_direct import exported

PRODUCER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}


class Collecting(SpanProcessor):
    """Keeps every ended span; no `on_start` of its own."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Starting(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass


def without_ids(span: ReadableSpan) -> dict[str, Any]:
    found = exported(span)
    for key in ("context", "parent", "parent_id", "links"):
        found.pop(key)
    return found


def attempt_spans(
    attempts: Attempts,
    collected: Collecting,
    trace: dict[str, str] | None,
    drive: Callable[[Any], AttemptOutcome],
    attempt: int = 1,
) -> tuple[Any, list[Any]]:
    """One HTTP attempt (no application code) started by `attempts`, its calls made by `drive`, and ended as the
    plugin's wrapper ends it; the spans it gave the processors, then its outcome events' data (exemplars)."""
    collected.ended.clear()
    task = Task(id="t1", type="http", trace=trace, attempt=attempt)
    context = attempt_context(attempt)
    span, token, calls, _ = attempts.start(task, context, False)
    assert token is None and calls is not None
    outcome = drive(calls)
    if isinstance(span, DeferredAttempt):
        span.end(outcome, context)
    else:
        attempts.finished(span, outcome, context)
        span.end()
    return span, [*collected.ended, context.event_data]


def succeeded(calls: Any) -> AttemptOutcome:
    with calls.begin("http", "GET", "http://127.0.0.1:9/ok") as call:
        headers: dict[str, str] = {}
        call.propagate(headers)
        call.answered(200)
    return AttemptOutcome(0.0, 1.0, {})


def answered_503(calls: Any) -> AttemptOutcome:
    with pytest.raises(RetryTask), calls.begin("http", "POST", "http://127.0.0.1:9/a") as call:
        call.answered(503)
        raise RetryTask("POST http://127.0.0.1:9/a: HTTP 503", reason="http_status")
    return AttemptOutcome(0.0, 1.0, failure=TaskFailure("http_status", "HTTP 503"))


def two_calls_failing(calls: Any) -> AttemptOutcome:
    """A second call to the same origin with secrets in its URL (masked), failing without an answer."""
    with calls.begin("http", "GET", "http://127.0.0.1:9/first") as call:
        call.answered(200)
    with pytest.raises(PermanentFailure), calls.begin("http", "GET", "http://u:pw@127.0.0.1:9/x?token=s3cret") as call:
        raise PermanentFailure("GET http://u:pw@127.0.0.1:9/x?token=s3cret: cannot connect", reason="connect_error")
    with pytest.raises(ValueError), calls.begin("grpc", "Call", "svc/Method"):
        raise ValueError("not a task failure")
    return AttemptOutcome(0.0, 1.0, failure=TaskFailure("connect_error", "GET http://127.0.0.1:9/?token=s3cret"))


@pytest.mark.parametrize("drive", [succeeded, answered_503, two_calls_failing])
@pytest.mark.parametrize(
    ("trace", "attempt"), [(None, 1), (PRODUCER, 1), (PRODUCER, 2)], ids=["new-trace", "producer", "linked-retry"]
)
def test_spans_made_at_the_end_are_the_open_spans(
    drive: Callable[[Any], AttemptOutcome], trace: Any, attempt: int
) -> None:
    provider = TracerProvider()
    collected = Collecting()
    provider.add_span_processor(collected)
    masker = Masker.from_settings(load_settings(None, {}, environ={}))
    attempts = Attempts(provider.get_tracer("gopherq"), masker, link_retries=True, exemplars=True)
    deferred, [*later, facts] = attempt_spans(attempts, collected, trace, drive, attempt)
    assert isinstance(deferred, DeferredAttempt)
    provider.add_span_processor(Starting())
    opened, [*early, _] = attempt_spans(attempts, collected, trace, drive, attempt)
    assert not isinstance(opened, DeferredAttempt)
    assert [without_ids(span) for span in later] == [without_ids(span) for span in early]
    consumer = later[-1]
    assert consumer.kind is SpanKind.CONSUMER
    assert facts == {"attempt_trace_id": f"{consumer.context.trace_id:032x}"}
    for client in later[:-1]:
        assert client.parent == consumer.context and client.context.trace_id == consumer.context.trace_id
        assert consumer.start_time <= client.start_time <= client.end_time <= consumer.end_time  # type: ignore[operator]
    for spans in (later, early):  # a retry is a new trace linked to the producer's span, not its child
        links = [(link.context.span_id, dict(link.attributes or {})) for link in spans[-1].links]
        assert links == ([(0xB7AD6B7169203331, {"gopherq.link": "producer"})] if attempt > 1 else [])
    if trace is not None and attempt == 1:
        assert consumer.parent is not None and consumer.parent.span_id == 0xB7AD6B7169203331
        assert consumer.context.trace_state.to_header() == "k=v"
    assert "s3cret" not in str([span.to_json() for span in later])


def recording() -> tuple[Attempts, Collecting]:
    """The plugin's attempts on a private provider whose one processor (no `on_start`) keeps what ends."""
    provider = TracerProvider()
    collected = Collecting()
    provider.add_span_processor(collected)
    masker = Masker.from_settings(load_settings(None, {}, environ={}))
    return Attempts(provider.get_tracer("gopherq"), masker, link_retries=True, exemplars=True), collected


def attempt_context(attempt: int = 1) -> ExecutionContext:
    return ExecutionContext("w", "q", attempt, 3, 60.0, None, logging.LoggerAdapter(logging.getLogger("t"), {}))


def test_a_cancelled_deferred_attempt_is_an_error() -> None:
    attempts, collected = recording()
    task, context = Task(id="t1", type="http"), attempt_context()
    attempt, _, _, _ = attempts.start(task, context, False)
    assert isinstance(attempt, DeferredAttempt)
    attempt.begin("http", "GET", "http://127.0.0.1:9/slow").__enter__()  # cancelled inside the call: never exited
    attempt.end(None, context)
    client, consumer = collected.ended
    assert (consumer.attributes or {})["error.type"] == "cancelled" and not consumer.status.is_ok
    assert client.end_time == consumer.end_time and context.event_data is None


def test_a_later_call_to_a_remembered_origin_is_still_masked() -> None:
    targets = Targets(Masker.from_settings(load_settings(None, {}, environ={})))
    first = targets.attributes("http", "GET", "http://127.0.0.1:9/a")
    assert first["url.full"] == "http://127.0.0.1:9/a" and first["server.port"] == 9
    for url in ("http://127.0.0.1:9/b?token=s3cret", "http://127.0.0.1:9/x/http://u:pw@h/"):
        assert "s3cret" not in targets.attributes("http", "GET", url)["url.full"]
        assert "pw" not in targets.attributes("http", "GET", url)["url.full"]
    assert targets.attributes("http", "GET", "http://127.0.0.1:9/c")["url.full"] == "http://127.0.0.1:9/c"
    assert targets.attributes("http", "POST", "http://127.0.0.1:9/c")["http.request.method"] == "POST"


def call_failing(attempt: DeferredAttempt, sent: dict[str, str]) -> None:
    """A call that fails as the `http` executor's do: raised in the frame that holds the call."""
    with attempt.begin("http", "GET", "http://127.0.0.1:9/down") as call:
        call.propagate(sent)
        raise RetryTask("GET http://127.0.0.1:9/down: cannot connect", reason="connect_error")


@pytest.mark.parametrize("fails", [False, True], ids=["answered", "failed"])
def test_a_new_traces_attempt_is_freed_without_the_garbage_collector(fails: bool) -> None:
    """A recorded attempt of a new trace (the wrapper's draw, `Attempts.new_trace`) sends its call the span id of
    that call's CLIENT span, and is freed as soon as nothing refers to it: its calls do not refer back to it, nor
    keep the exception that failed them (whose traceback holds the call), so no reference cycle per recorded
    attempt is left for the garbage collector, in every worker."""
    attempts, collected = recording()
    task, context = Task(id="t1", type="http"), attempt_context()
    sent: dict[str, str] = {"User-Agent": "test"}
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage, to be looked at
    try:
        attempt = attempts.new_trace(task, context, random.getrandbits(256))
        assert attempt is not None
        if fails:
            try:
                call_failing(attempt, sent)
            except RetryTask:
                pass
        else:
            with attempt.begin("http", "GET", "http://127.0.0.1:9/ok") as call:
                call.propagate(sent)
                call.answered(200)
            del call
        attempt.end(AttemptOutcome(0.0, 1.0, {}), context)
        del attempt
        context.calls = None
        gc.collect()
        left = [type(found).__name__ for found in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert "DeferredAttempt" not in left and "DeferredCall" not in left and "RetryTask" not in left
    client, consumer = collected.ended
    assert client.attributes.get("error.type") == ("connect_error" if fails else None)
    assert client.parent == consumer.context
    assert sent["traceparent"] == f"00-{consumer.context.trace_id:032x}-{client.context.span_id:016x}-03"


def test_remembered_consumer_attributes_are_each_attempts_own() -> None:
    """The CONSUMER span's attributes come from a copy of those remembered per queue, worker, type and attempt:
    what one attempt adds (its task id, a failure's error type) never reaches the next attempt's span."""
    attempts, collected = recording()
    context = attempt_context()
    first = attempts.new_trace(Task(id="a1", type="http"), context, random.getrandbits(256))
    assert first is not None
    first.end(AttemptOutcome(0.0, 1.0, failure=TaskFailure("connect_error", "down")), context)
    for task_id in ("a2", "a3"):
        task = Task(id=task_id, type="http")
        attempt = attempts.new_trace(task, attempt_context(), random.getrandbits(256))
        assert attempt is not None
        attempt.end(AttemptOutcome(0.0, 1.0, {}), attempt_context())
        opened, _, _, _ = attempts.start(Task(id=task_id + "-open", type="http"), attempt_context(), True)
        opened.end()
    found = [dict(span.attributes or {}) for span in collected.ended]
    assert [f["messaging.message.id"] for f in found] == ["a1", "a2", "a2-open", "a3", "a3-open"]
    assert found[0]["error.type"] == "connect_error"
    assert all("error.type" not in f for f in found[1:])
    assert all(list(f) == list(found[1]) for f in found[1:])  # the same attributes, in the same order
