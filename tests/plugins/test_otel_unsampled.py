"""Sampled-out attempts (the `otel` plugin's cheap path): an executor that runs no application code (`http`) does not
get the attempt's context made current, yet its request still carries it; a function task still runs inside it. Same
in-process set-up as test_otel.py (its provider, fixtures and loopback service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gopherq import AsyncClient, Settings
from tests.plugins.test_otel import TracedService, function_app, service, spans, traced_settings

__all__ = ["service", "spans", "traced_settings"]  # fixtures, used by name

#: A producer's context that is not sampled: its attempts are sampled out (the parent-based sampler follows it).
UNSAMPLED = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(0))


async def test_a_sampled_out_http_attempt_still_sends_its_context_with_the_sampled_flag_off(
    traced_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    """The http executor runs no application code, so a sampled-out attempt's context is not made current, yet
    its request carries it: the producer's trace, a span id of the attempt's own, the sampled flag off."""
    settings = traced_settings()
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        with trace.use_span(NonRecordingSpan(UNSAMPLED)):
            task_id = await client.enqueue_http(service.url("/ok"))
        record = await client.wait(task_id, timeout=15)
    assert record is not None and record.status.value == "succeeded"
    [headers] = service.headers
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", format(UNSAMPLED.trace_id, "032x"), "00")
    assert span_id != format(UNSAMPLED.span_id, "016x")  # not the producer's: the attempt's own
    assert record.trace_id == trace_id
    assert not spans()  # nothing recorded: not the producer, the attempt, its call or the service


async def test_a_sampled_out_function_task_runs_inside_its_attempts_context(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    """A function task runs application code: its sampled-out attempt's context is current while it runs, so the
    function's own spans follow the producer's decision (same trace, not recorded)."""
    settings = make_settings(
        plugins={"otel": {"enabled": True}, "functions": {"modules": ["tests.support.function_targets"]}}
    )
    with function_app(settings) as targets:
        await start_worker(settings)
        with trace.use_span(NonRecordingSpan(UNSAMPLED)):
            handle = await targets.current_trace.aenqueue()
        assert await handle.aresult(timeout=10) == [format(UNSAMPLED.trace_id, "032x"), False, False]
    assert not spans()


def test_an_attempts_ids_are_drawn_at_once_with_their_hex_digits() -> None:
    """`fast.draw`: 256 random bits and their 64 hex digits, from which a trace id and two span ids are cut, none of
    them zero (the digits go into `traceparent` as they are, so they must be the bits' own, lower case)."""
    from gopherq.plugins.otel.fast import LOW_64, draw

    for _ in range(200):
        bits, digits = draw()
        assert len(digits) == 64 and digits == format(bits, "064x")
        assert bits >> 128 and (bits >> 64) & LOW_64 and bits & LOW_64


def test_a_sampled_out_attempts_headers_go_out_unless_the_task_sets_its_own() -> None:
    """A sampled-out attempt's headers (`context.call_headers`: its `traceparent` and the producer's others) are
    added to each call as `merge_headers` adds them: a task's own `traceparent` (any case) wins, and then the
    attempt's `tracestate` is left out too (it belongs to the other)."""
    from gopherq.core.calls import merge_headers

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    extra = {"traceparent": parent, "baggage": "k=v", "tracestate": "a=1"}
    headers = {"User-Agent": "x"}
    merge_headers(headers, extra)
    assert headers == {"User-Agent": "x", "traceparent": parent, "baggage": "k=v", "tracestate": "a=1"}
    own = {"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    merge_headers(own, extra)
    assert own == {"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "baggage": "k=v"}
    plain: dict[str, str] = {}
    merge_headers(plain, {"traceparent": parent})
    assert plain == {"traceparent": parent}
    assert extra == {"traceparent": parent, "baggage": "k=v", "tracestate": "a=1"}  # never changed: it is shared


def test_a_calls_url_is_recorded_as_it_is_only_when_there_is_nothing_in_it_to_mask() -> None:
    """`calls.PLAIN_URL` spares `Masker.url` and `origin` for a URL with nothing to mask: it must never say so of
    one `masking.plain_url` would mask, and its origin must be `origin`'s."""
    from gopherq.core.masking import plain_url
    from gopherq.plugins.otel.calls import PLAIN_URL, origin

    urls = ["http://127.0.0.1:8080/r/1", "https://a.b/x#f", "http://h", "http://u:p@h/x", "http://h/x?a=1",
            "http://h/x%3A", "http://h/a/http://x", "ht-tp://h/", "http://h#frag://x", "1http://h/"]  # fmt: skip
    for url in urls:
        plain = PLAIN_URL.match(url)
        assert (plain is not None) == plain_url(url), url
        if plain is not None:
            assert plain[1] == origin(url)


def test_names_remembered_as_plain_never_hide_a_tasks_own_propagation_header() -> None:
    """`merge_headers` remembers names (exactly as spelt) seen not to be propagation headers: a set of names all
    remembered merges at once, but a name in another case, or a propagation header beside remembered names, is
    still found, and the cache stays within its bound."""
    from gopherq.core import calls
    from gopherq.core.calls import PLAIN_NAMES_KEPT, merge_headers

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    own = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    extra = {"traceparent": parent, "tracestate": "a=1"}
    for _ in range(2):  # (remembered the second time)
        headers = {"User-Agent": "x", "Idempotency-Key": "k"}
        merge_headers(headers, extra)
        assert headers == {"User-Agent": "x", "Idempotency-Key": "k", **extra}
    assert {"User-Agent", "Idempotency-Key"} <= calls._PLAIN_NAMES
    for spelt in ("traceparent", "TRACEPARENT", "Traceparent"):
        theirs = {"User-Agent": "x", spelt: own, "Idempotency-Key": "k"}
        merge_headers(theirs, extra)
        assert theirs == {"User-Agent": "x", spelt: own, "Idempotency-Key": "k"}, spelt
        assert spelt not in calls._PLAIN_NAMES
    baggage = {"User-Agent": "x", "Baggage": "mine"}
    merge_headers(baggage, {"baggage": "theirs"})
    assert baggage == {"User-Agent": "x", "Baggage": "mine"}
    for n in range(3 * PLAIN_NAMES_KEPT):
        merge_headers({f"X-{n}": "v"}, extra)
        assert len(calls._PLAIN_NAMES) <= PLAIN_NAMES_KEPT
    merge_headers({"X-" + "a" * 100: "v"}, extra)
    assert "X-" + "a" * 100 not in calls._PLAIN_NAMES  # too long to keep
