"""The `otel` plugin's own spans (direct.py) against the SDK's: a span the plugin makes directly must be exported
exactly as the SDK's `start_span` would have made it, take application code's changes through the SDK's checks,
and be used only where the SDK would make no difference (its standard sampler, span limits and processor list).
These pin the SDK internals direct.py relies on, so an SDK upgrade that moves them fails here."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from gopherq.plugins.otel.direct import DirectSpan, span_context
from gopherq.plugins.otel.fast import FLAGS, recognise

PRODUCER = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(3), TraceState([("k", "v")])
)
ATTRIBUTES = {"messaging.system": "gopherq", "messaging.message.id": "t1", "gopherq.task.attempt": 1}


def exported(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter sees of a span, without its timestamps."""
    found: dict[str, Any] = json.loads(span.to_json())
    for key in ("start_time", "end_time"):
        assert found.pop(key)
    for event in found["events"]:
        event.pop("timestamp")
    found["scope"] = span.instrumentation_scope
    found["parent"] = span.parent
    found["links"] = [(link.context, dict(link.attributes or {})) for link in span.links]
    found["dropped"] = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    return found


def test_a_span_made_directly_is_exported_as_the_sdks_own() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("gopherq", "1.0")
    shortcut = recognise(tracer)
    assert shortcut is not None and shortcut.direct is not None
    link = Link(SpanContext(PRODUCER.trace_id, 7, True, TraceFlags(1)), {"gopherq.link": "producer"})
    parent_context = trace.set_span_in_context(NonRecordingSpan(PRODUCER))
    made = tracer.start_span(
        "process q", context=parent_context, kind=SpanKind.CONSUMER, attributes=ATTRIBUTES, links=[link]
    )
    # The same span context as the SDK's: its flags follow the parent's, its tracestate is kept.
    own = span_context(PRODUCER.trace_id, made.get_span_context().span_id, FLAGS[3], PRODUCER.trace_state)
    assert own == made.get_span_context() == SpanContext(*own[:5])
    direct = shortcut.direct.start("process q", own, PRODUCER, SpanKind.CONSUMER, dict(ATTRIBUTES), (link,))
    assert isinstance(direct, DirectSpan) and direct.is_recording()
    for span in (made, direct):  # what application code may do to the current span, invalid values included
        span.set_attribute("user.note", "x")
        span.set_attributes({"user.bad": object(), "user.list": [1, 2]})  # type: ignore[dict-item]
        span.add_event("checkpoint", {"n": 1})
        span.add_link(SpanContext(PRODUCER.trace_id, 9, True, TraceFlags(1)))
        span.update_name("process q2")
        span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end()
        span.set_attribute("after", "end")  # ignored once ended, as by the SDK
        assert not span.is_recording()
    first, second = exporter.get_finished_spans()
    assert exported(first) == exported(second)
    assert second.attributes["user.note"] == "x" and second.attributes["user.list"] == (1, 2)  # checked by the SDK


def test_a_direct_client_span_is_a_child_as_the_sdk_makes_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("gopherq")
    shortcut = recognise(tracer)
    assert shortcut is not None and shortcut.direct is not None
    consumer = span_context(PRODUCER.trace_id, 11, FLAGS[3], PRODUCER.trace_state)
    parent = shortcut.direct.start("process q", consumer, PRODUCER, SpanKind.CONSUMER, {})
    made = tracer.start_span("GET", context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT)
    made_context = made.get_span_context()
    assert made_context == span_context(consumer.trace_id, made_context.span_id, FLAGS[3], consumer.trace_state)
    made.end()
    parent.end()


class Starting(SpanProcessor):
    """A processor with an `on_start`: it is given each direct span and its parent context, as by the SDK."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span, parent_context))


def test_processors_added_later_and_their_on_start_are_honoured() -> None:
    provider = TracerProvider()
    shortcut = recognise(provider.get_tracer("gopherq"))
    assert shortcut is not None and shortcut.direct is not None
    exporter, starting = InMemorySpanExporter(), Starting()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(starting)
    marker = trace.set_span_in_context(NonRecordingSpan(PRODUCER))
    span = shortcut.direct.start("x", span_context(1, 2, FLAGS[1], None), None, SpanKind.CLIENT, {}, (), lambda: marker)
    span.end()
    assert starting.started == [(span, marker)]
    assert exporter.get_finished_spans() == (span,)


def test_direct_spans_only_with_the_sdks_standard_limits_and_samplers() -> None:
    def direct(provider: TracerProvider) -> bool:
        shortcut = recognise(provider.get_tracer("gopherq"))
        return shortcut is not None and shortcut.direct is not None

    assert direct(TracerProvider())
    assert not direct(TracerProvider(span_limits=SpanLimits(max_span_attribute_length=20)))
    assert not direct(TracerProvider(span_limits=SpanLimits(max_span_attributes=4)))
    assert not direct(TracerProvider(span_limits=SpanLimits(max_links=0)))
    # A parent-based sampler that decides children of local spans otherwise than the default.
    assert not direct(TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5), local_parent_sampled=ALWAYS_OFF)))
