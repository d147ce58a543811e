"""Recorded spans the plugin makes itself: the CONSUMER span of a sampled attempt and the CLIENT spans of its calls,
when the tracer is the SDK's with the standard sampler (`fast.py`), the default span limits and the SDK's usual
multi-processor (`spans_for`; anything else takes the SDK's `start_span`).

Why: the SDK's generic span is most of what a recorded attempt costs. It asks the sampler (the plugin has decided
already), validates every attribute into a `BoundedAttributes` under a lock, makes a `BoundedList` for events and
one for links, and copies itself into a `ReadableSpan` when it ends. The plugin's own attributes are strings and
ints it built itself, well within the default limits, so a `DirectSpan` keeps them in a plain dict, has no events
or links it does not need, and, once ended, is itself what the span processors receive (it refuses every change
after `end`, as the SDK's span does, so there is nothing to copy).

A `DirectSpan` is an SDK `Span` to everything else: the span processors and exporters read it as any finished span,
and what application code does to it while it is current (a function task's `get_current_span().set_attribute`,
`add_event`, `record_exception`, `set_status`) goes through the SDK's own checks and limits: the first attribute
or event from outside turns its dict or tuple into the SDK's bounded containers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from threading import Lock
from time import time_ns
from typing import Any, cast

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanLimits, SpanProcessor, SynchronousMultiSpanProcessor, Tracer
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import DEFAULT_TRACE_STATE, Link, SpanContext, SpanKind, Status, StatusCode, TraceState

#: The SDK's own logger: what application code does wrong to a span is reported as for the SDK's spans.
log = logging.getLogger("opentelemetry.sdk.trace")

_new = object.__new__

#: Most attributes a span of the plugin's own has (with room for what application code adds being checked).
OWN_ATTRIBUTES = 16
UNSET = Status(StatusCode.UNSET)
#: The lock of every span made whole at its end (deferred.py): held only for the instant it takes to
#: refuse a change to an ended span, so one lock serves them all (a lock each costs its allocation per span).
ENDED = Lock()


def span_context(trace_id: int, span_id: int, flags: Any, trace_state: TraceState | None) -> SpanContext:
    """A local, valid span context, as `SpanContext(trace_id, span_id, False, flags, trace_state)` makes it, without
    its range checks: the ids come from the id generator or a checked `traceparent` (non-zero, in range)."""
    state = DEFAULT_TRACE_STATE if trace_state is None else trace_state
    return tuple.__new__(SpanContext, (trace_id, span_id, False, flags, state, True))


def child_context(parent: SpanContext, span_id: int) -> SpanContext:
    """The span context of a local child of `parent` (a span context of `span_context`'s), sampled as it is: its
    trace id, flags and tracestate, and `span_id`."""
    return tuple.__new__(SpanContext, (parent[0], span_id, False, parent[3], parent[4], True))


class DirectSpan(Span):
    """A recorded span started and ended by the plugin (see the module doc). The per-tracer parts (processor,
    limits, instrumentation scope) are class attributes of the subclass `DirectSpans` makes for its tracer. Made
    only by `DirectSpans.start`, which sets its own fields without calling the class: neither the SDK's
    `Span.__init__` (the cost this class avoids) nor an `__init__` of its own (a frame less per span) runs."""

    # What the SDK's Span.__init__ sets and a span of the plugin's keeps unless something changes it.
    _end_time: int | None = None
    _status = UNSET
    _events: Sequence[Any] = ()
    _sampler = None
    _trace_config = None
    _record_exception = True
    _set_status_on_exception = True
    _record_end_metrics = None
    _instrumentation_info = None
    _limits: SpanLimits
    _span_processor: SynchronousMultiSpanProcessor
    _kit: DirectSpans

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # (the SDK's wraps it in a `typing.cast` call)

    def record(self, attributes: Mapping[str, Any]) -> None:
        """The plugin's own attributes (known-good values) while the span is open."""
        with self._lock:
            if self._end_time is None:
                self._attributes.update(attributes)  # type: ignore[union-attr]

    def _bounded(self) -> BoundedAttributes:
        found = self._attributes
        if type(found) is not BoundedAttributes:
            limits = self._limits
            found = BoundedAttributes(
                limits.max_span_attributes, found, immutable=False, max_value_len=limits.max_span_attribute_length
            )
            self._attributes = found
        return found

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            if self._end_time is not None:
                log.warning("Setting attribute on ended span.")
                return
            bounded = self._bounded()
            for key, value in attributes.items():
                bounded[key] = value

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        with self._lock:
            if type(self._events) is tuple:
                self._events = BoundedList(self._limits.max_events)
        super().add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        with self._lock:
            if type(self._links) is tuple:
                self._links = BoundedList.from_seq(self._limits.max_links, self._links)
        super().add_link(context, attributes)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is BoundedAttributes:
                self._attributes._immutable = True
        kit = self._kit
        _, ending, processors = kit._processors if kit.multi._span_processors is kit._known else kit.processors()
        for processor in ending:
            processor._on_ending(self)
        for processor in processors:
            processor.on_end(self)  # itself: it no longer changes (see the module doc)


#: (the processors whose `on_start` does something, those whose `_on_ending` does, all of them)
Processors = tuple[tuple[SpanProcessor, ...], tuple[SpanProcessor, ...], tuple[SpanProcessor, ...]]


def _overrides(processor: SpanProcessor, method: str) -> bool:
    """Whether `processor` does something in `method` (the base class's does nothing; older SDKs lack some)."""
    return getattr(type(processor), method, None) is not getattr(SpanProcessor, method, None)


class DirectSpans:
    """Makes `DirectSpan`s for one tracer."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.resource = tracer.resource
        self.multi = cast(SynchronousMultiSpanProcessor, tracer.span_processor)
        self._known: tuple[SpanProcessor, ...] | None = None
        self._processors: Processors = ((), (), ())
        self.kind: type[DirectSpan] = type(
            "TracerSpan",
            (DirectSpan,),
            {
                "_kit": self,
                "_span_processor": tracer.span_processor,
                "_limits": tracer._span_limits,
                "_instrumentation_scope": tracer._instrumentation_scope,
                "_instrumentation_info": tracer.instrumentation_info,
            },
        )
        #: The classes of the spans made whole at an attempt's end (deferred.py), with what is the same for all
        #: their spans (kind, resource, the shared lock, a CLIENT span's lack of links) in the class, not set on
        #: each span.
        self.ended_client: type[DirectSpan] = type(
            "EndedClientSpan",
            (self.kind,),
            {"_kind": SpanKind.CLIENT, "_links": (), "_resource": self.resource, "_lock": ENDED},
        )
        self.ended_consumer: type[DirectSpan] = type(
            "EndedConsumerSpan", (self.kind,), {"_kind": SpanKind.CONSUMER, "_resource": self.resource, "_lock": ENDED}
        )

    def processors(self) -> Processors:
        """The provider's span processors, sorted by what they need; looked at again when one is added."""
        current = self.multi._span_processors
        if current is not self._known:
            starting = tuple(p for p in current if _overrides(p, "on_start"))
            ending = tuple(p for p in current if _overrides(p, "_on_ending"))
            self._processors, self._known = (starting, ending, current), current
        return self._processors

    def start(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link] = (),
        parent_context: Callable[[], Context | None] | None = None,
    ) -> DirectSpan:
        """A started span; `parent_context` makes the context the SDK would give the processors' `on_start`,
        called only when one of them has an `on_start`."""
        # Made without calling the class: the SDK's `Span.__new__` (a check that it is not instantiated directly)
        # costs as much as the rest of the construction; the span's own fields are set here (see DirectSpan).
        span = _new(self.kind)
        span._name = name
        span._context = context
        span._parent = parent
        span._kind = kind
        span._attributes = attributes  # type: ignore[assignment]
        span._links = links  # type: ignore[assignment]
        span._resource = self.resource
        span._lock = Lock()
        span._start_time = time_ns()
        starting = self._processors[0] if self.multi._span_processors is self._known else self.processors()[0]
        if starting:
            given = parent_context() if parent_context is not None else None
            for processor in starting:
                processor.on_start(span, parent_context=given)
        return span

    def starting(self) -> bool:
        """Whether a processor has an `on_start`: then a span must exist from its start (see deferred.py)."""
        return bool(self._processors[0] if self.multi._span_processors is self._known else self.processors()[0])


def spans_for(tracer: Tracer) -> DirectSpans | None:
    """DirectSpans for `tracer` when a span of the plugin's would be exactly what the SDK makes: its span limits
    keep every attribute of the plugin's as it is, and its processors are the SDK's synchronous list; else None.
    (The sampler has been checked by `fast.recognise`, which calls this.)"""
    limits = tracer._span_limits
    if type(tracer.span_processor) is not SynchronousMultiSpanProcessor:
        return None
    if limits.max_span_attribute_length is not None or (limits.max_span_attributes or 0) < OWN_ATTRIBUTES:
        return None
    if (limits.max_links or 0) < 1 or (limits.max_link_attributes or 0) < 1:
        return None
    return DirectSpans(tracer)
