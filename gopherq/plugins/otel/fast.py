"""The cheap path of an attempt's trace context, used when the configured sampler and propagators are the standard
ones (they are unless the application or `OTEL_*` variables say otherwise): the plugin then knows in advance what
the SDK would decide and write, and does it itself.

- Sampling: a `ParentBased` sampler with the standard delegates follows the sampled flag of the producer's
  `traceparent`; for a new trace (no producer context, or a linked retry) its root sampler (`TraceIdRatioBased`,
  always on, always off) decides on the low 64 bits of the trace id. A sampled-out attempt then needs no SDK span:
  its span context (the ids, the flags, the parent's tracestate) is made here, exactly as the SDK would make its
  `NonRecordingSpan`, and its `traceparent` is formatted directly. For a new trace the plugin draws the trace id
  first; when it is sampled, the provider's id generator (`AttemptIds`, in the plugin's own provider) hands that id
  to the SDK, whose sampler then reaches the same decision on it.
- Propagation: with only the W3C trace-context and baggage propagators configured, only `traceparent` changes from
  one attempt to the next: `tracestate` and `baggage` depend on the producer's values alone, so each distinct pair
  is parsed and re-encoded once, by the real propagators, and remembered (a small bounded cache).

Anything else (another sampler, a custom propagator, SDK metrics about spans) takes the SDK's generic path.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import Tracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gopherq import is_traceparent
from gopherq.plugins.otel.direct import DirectSpans, spans_for

#: The low 64 bits of a trace id, on which the ratio sampler decides.
LOW_64 = (1 << 64) - 1
SAMPLED = TraceFlags.SAMPLED
RANDOM = TraceFlags.RANDOM_TRACE_ID
#: The TraceFlags of each combination of the two flags a span of the plugin's may have, made once.
FLAGS = tuple(TraceFlags(bits) for bits in range(4))
#: Distinct (tracestate, baggage) pairs remembered; past it the cache starts again (producers rarely vary them).
CACHE_SIZE = 256
#: The two hex digits of each combination of the flags (`FLAGS`), for a `traceparent` built from strings.
FLAGS_HEX = tuple(f"{bits:02x}" for bits in range(4))
#: The random bits the SDK's `RandomIdGenerator` draws its ids from (the `random` module's generator).
getrandbits = random.getrandbits
#: What a zero id's hex digits have (and, rarely, the digits of two ids that are not zero, side by side).
ZEROS = "0" * 16


def draw() -> tuple[int, str]:
    """256 random bits, as `RandomIdGenerator` would draw them (a trace id: the high 128 bits, and two span ids:
    the next 64 and the low 64, none of them zero), and their 64 hex digits: one draw and one conversion for all
    the ids an attempt and its call need, where the generator's own methods draw and `%x`-format each id apart
    (about three times the instructions; a sampled-out attempt's whole cost was mostly this)."""
    while True:
        bits = getrandbits(256)
        digits = bits.to_bytes(32, "big").hex()
        if ZEROS not in digits:  # no id is zero (a zero id has 16 zero digits in a row; so, rarely, do others)
            return bits, digits


class AttemptIds(RandomIdGenerator):
    """Random ids, as the SDK's default generator, except that the plugin may choose a thread's next trace id:
    the one it has already decided sampling on (see the module doc)."""

    def __init__(self) -> None:
        self._next = threading.local()

    def reserve(self, trace_id: int) -> None:
        self._next.trace_id = trace_id

    def generate_trace_id(self) -> int:
        reserved: int = getattr(self._next, "trace_id", 0)
        if reserved:
            self._next.trace_id = 0
            return reserved
        return super().generate_trace_id()


@dataclass(frozen=True)
class Producer:
    """What an attempt inherits from its producer's `trace`, parsed once per distinct tracestate and baggage."""

    #: The context to put the attempt's span in: the producer's baggage, no span.
    base: Context
    #: The producer's tracestate (None: none or unusable), which a child span keeps, and its header.
    trace_state: TraceState | None
    tracestate: str | None
    #: The headers every call of an attempt sends besides `traceparent` and `tracestate`: `baggage`.
    headers: dict[str, str]


NO_PRODUCER = Producer(Context(), None, None, {})


class Shortcut:
    """The cheap path for one tracer, when its sampler and the propagators are the standard ones (`recognise`)."""

    def __init__(
        self, tracer: Tracer, bound: int, parent_based: bool, textmap: TextMapPropagator, direct: DirectSpans | None
    ) -> None:
        self.ids = tracer.id_generator
        #: A new trace id: the SDK's random one, without AttemptIds' look for a reserved id (none is reserved for
        #: the plugin's own draws).
        self.trace_id = (
            partial(RandomIdGenerator.generate_trace_id, self.ids)
            if isinstance(self.ids, AttemptIds)
            else self.ids.generate_trace_id
        )
        #: Whether the ids come from the `random` module as the SDK's own generator draws them (AttemptIds or
        #: RandomIdGenerator exactly): then `draw` makes all an attempt needs at once. Else the generator's methods.
        self.own_random = type(self.ids) in (AttemptIds, RandomIdGenerator)
        #: Recorded spans made by the plugin itself (direct.py), or None: through the SDK's `start_span`.
        self.direct = direct
        self.reserve = self.ids.reserve if isinstance(self.ids, AttemptIds) else None
        self.random_ids = self.ids.is_trace_id_random()
        #: Whether the plugin draws a new trace's ids itself and decides on them (`draw`), and either some of
        #: them are sampled out (not at 100 %) or its recorded attempts can be made directly: the wrapper then
        #: settles those before anything else (tracing.py); and the flags of such a trace's sampled-out attempt
        #: (two hex digits) and of its recorded one.
        self.roots = (
            self.own_random
            and (direct is not None or self.reserve is not None)
            and (bound <= LOW_64 or direct is not None)
        )
        self.root_flags = FLAGS_HEX[RANDOM if self.random_ids else 0]
        #: A new trace's recorded attempt's flags, as its span context and its `traceparent` have them.
        root_sampled = (RANDOM if self.random_ids else 0) | SAMPLED
        self.root_trace_flags = FLAGS[root_sampled]
        self.root_sampled_hex = FLAGS_HEX[root_sampled]
        self.bound = bound
        self.parent_based = parent_based
        self.textmap = textmap
        #: Whether the module keeps the global propagator where `get_global_textmap` reads it (it always has): then
        #: `current` is an identity check of that global, which the wrapper makes inline.
        self.module_global = getattr(propagate, "_HTTP_TEXT_FORMAT", None) is propagate.get_global_textmap()
        self._producers: dict[tuple[str | None, str | None], Producer] = {}

    def current(self) -> bool:
        """Still valid: nobody has replaced the global propagators since (a cheap identity check per attempt: the
        module's global itself when it has the one `get_global_textmap` returns, saving two calls per attempt)."""
        if self.module_global:
            return propagate._HTTP_TEXT_FORMAT is self.textmap  # type: ignore[attr-defined]
        return propagate.get_global_textmap() is self.textmap

    def producer(self, tracestate: str | None, baggage: str | None) -> Producer:
        """The producer's tracestate and baggage as the configured propagators read and write them."""
        if tracestate is None and baggage is None:
            return NO_PRODUCER
        key = (tracestate, baggage)
        found = self._producers.get(key)
        if found is None:
            if len(self._producers) >= CACHE_SIZE:
                self._producers.clear()
            found = self._producers[key] = self._parse(tracestate, baggage)
        return found

    def _parse(self, tracestate: str | None, baggage: str | None) -> Producer:
        carrier = {"traceparent": "00-" + "0" * 31 + "1-" + "0" * 15 + "1-01"}
        if tracestate is not None:
            carrier["tracestate"] = tracestate
        if baggage is not None:
            carrier["baggage"] = baggage
        extracted = self.textmap.extract(carrier, context=Context())
        trace_state = trace.get_current_span(extracted).get_span_context().trace_state or None
        base = trace.set_span_in_context(INVALID_SPAN, extracted)
        headers: dict[str, str] = {}
        self.textmap.inject(headers, context=base)  # no span: the baggage alone
        return Producer(base, trace_state, trace_state.to_header() if trace_state else None, headers)


def recognise(tracer: Any) -> Shortcut | None:
    """A Shortcut for `tracer` when the SDK would decide and propagate as `Shortcut` assumes; else None."""
    textmap = propagate.get_global_textmap()
    members = textmap._propagators if type(textmap) is CompositePropagator else [textmap]
    kinds = [type(member) for member in members]
    if TraceContextTextMapPropagator not in kinds or any(
        kind not in (TraceContextTextMapPropagator, W3CBaggagePropagator) for kind in kinds
    ):
        return None
    if type(tracer) is not Tracer or not tracer._is_enabled():
        return None
    if type(tracer._tracer_metrics).__name__ != "NoOpTracerMetrics":
        return None
    sampler: Any = tracer.sampler
    parent_based = type(sampler) is ParentBased
    local = True  # a child of a local span is decided as the SDK's ParentBased default does (direct spans)
    if parent_based:
        delegates = (
            getattr(sampler, "_remote_parent_sampled", None),
            getattr(sampler, "_remote_parent_not_sampled", None),
        )
        if delegates != (ALWAYS_ON, ALWAYS_OFF):
            return None
        local = (
            getattr(sampler, "_local_parent_sampled", None),
            getattr(sampler, "_local_parent_not_sampled", None),
        ) == (ALWAYS_ON, ALWAYS_OFF)
        sampler = getattr(sampler, "_root", None)
    if sampler is ALWAYS_ON:
        bound = LOW_64 + 1
    elif sampler is ALWAYS_OFF:
        bound = 0
    elif type(sampler) is TraceIdRatioBased:
        bound = sampler.bound
    else:
        return None
    return Shortcut(tracer, bound, parent_based, textmap, spans_for(tracer) if local else None)


@dataclass(frozen=True)
class Parent:
    """The producer's span, from a `traceparent` the SDK's propagator would accept."""

    trace_id: int
    span_id: int
    flags: int
    #: The trace id's 32 hex digits, as the `traceparent` has them (a child's `traceparent` reuses them).
    trace_hex: str


def parse_traceparent(value: str | None) -> Parent | None:
    """The producer's span, or None where the SDK's propagator would find none (the core has checked the field's
    form already; this keeps the plugin as strict as the SDK if it ever meets one that was not checked)."""
    if value is None or not is_traceparent(value):
        return None
    trace_hex = value[3:35]
    return Parent(int(trace_hex, 16), int(value[36:52], 16), int(value[53:55], 16), trace_hex)


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span context, as the trace-context propagator writes it (%-formatting: an f-string
    formats a 128-bit id through the general format machinery, at twice the cost)."""
    return "00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)  # noqa: UP031
