"""The CONSUMER span of each attempt: its parent (the producer's span, or a link to it), the sampling decision, the
context made current while the executor runs (when it runs application code: `entry.runs_application_code`), and
the `context.calls` the executor reports its calls to.

An attempt that is sampled out costs no SDK span when the sampler and propagators are the standard ones (`fast.py`):
its span context is made directly, with the same ids, flags and tracestate the SDK would give it, and its
`traceparent` is formatted once for all its calls. A recorded attempt's span is then made directly too
(`direct.py`), with all its attributes at once; otherwise it is an SDK span.
"""

from __future__ import annotations

from contextvars import Token
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from gopherq import AttemptOutcome, ExecutionContext, Masker, Task
from gopherq.plugins.otel.calls import DirectCalls, SpanCalls, Targets, put
from gopherq.plugins.otel.carrier import extract
from gopherq.plugins.otel.deferred import DeferredAttempt
from gopherq.plugins.otel.direct import DirectSpans, span_context
from gopherq.plugins.otel.fast import (
    FLAGS,
    FLAGS_HEX,
    LOW_64,
    NO_PRODUCER,
    RANDOM,
    SAMPLED,
    ZEROS,
    Producer,
    Shortcut,
    draw,
    parse_traceparent,
    recognise,
    traceparent,
)

SYSTEM = "gopherq"
_new = object.__new__
CONSUMER = SpanKind.CONSUMER
PRODUCER_LINK = {"gopherq.link": "producer"}
#: Distinct (queue, worker, task type, attempt, recoveries) whose CONSUMER span name and attributes are remembered;
#: past it the cache starts again (a worker runs a handful of types, and most attempts are first ones).
CONSUMERS_CACHED = 1024

#: An attempt's ids drawn at once (`fast.draw`): the 256 bits, their 64 hex digits, and the trace id's 32.
Ids = tuple[int, str, str]

#: What `Attempts.start` gives the wrapper: the recorded span (None when not recorded), the context token to detach
#: when the attempt ends (None: nothing was made current), and either the attempt's `context.calls` (recorded) or
#: its `context.call_headers` (not recorded: the same propagation headers on every call, and no call observed).
#: A recorded attempt whose spans are made at its end (deferred.py) is its own span and calls: a `DeferredAttempt`.
Started = tuple[
    Any, "Token[Context] | None", "SpanCalls | DirectCalls | DeferredAttempt | None", "dict[str, str] | None"
]


def remote_context(remote: SpanContext, base: Context) -> Context:
    """The producer's span (remote) in the context `base` (the producer's baggage): an attempt's parent."""
    return trace.set_span_in_context(NonRecordingSpan(remote), base)


class Attempts:
    """Starts and ends the spans of attempts for one process's tracing (`tracing.Tracing` makes one): with its
    tracer, its masker, whether retries are linked rather than children, and whether exemplars are wanted."""

    def __init__(self, tracer: Any, masker: Masker, *, link_retries: bool, exemplars: bool) -> None:
        self.tracer = tracer
        self.targets = Targets(masker)
        self.masker = masker
        self.link_retries = link_retries
        self.exemplars = exemplars
        self.fast: Shortcut | None = None
        #: (deferred.Kit) The cheap path's direct spans and id generator, when it has them.
        self.spans: DirectSpans | None = None
        self.ids: IdGenerator | None = None
        #: Per (queue, worker, task type, attempt, recoveries): the CONSUMER span's name and its attributes but the
        #: task id's (`_consumer`), copied for each attempt: a dict's copy and one value set cost less than
        #: building it and formatting its name each time.
        self._consumers: dict[tuple[str, str, str, int, int], tuple[str, dict[str, Any]]] = {}
        self._recognise()

    def _recognise(self) -> Shortcut | None:
        fast = self.fast = recognise(self.tracer)
        self.spans = None if fast is None else fast.direct
        self.ids = None if fast is None else fast.ids
        return fast

    def start(self, task: Task, context: ExecutionContext, application_code: bool = True) -> Started:
        """The attempt's span, current while the executor runs when it runs application code; for an executor
        that runs none (`application_code` False: `entry.runs_application_code`) nothing reads the current
        context, so a span the plugin makes itself or a sampled-out attempt's is not made current: its calls are
        given their parent (`context.calls`) directly."""
        fast = self.fast
        if fast is not None and not (  # the global propagators were replaced: look again (`Shortcut.current`)
            propagate._HTTP_TEXT_FORMAT is fast.textmap if fast.module_global else fast.current()  # type: ignore[attr-defined]
        ):
            fast = self._recognise()
        if fast is None:
            return self._start_generic(task, context)
        trace_field = task.trace
        parent = None
        producer = NO_PRODUCER
        if trace_field is not None:
            parent = parse_traceparent(trace_field.get("traceparent"))
            producer = fast.producer(trace_field.get("tracestate") if parent else None, trace_field.get("baggage"))
        links: tuple[Link, ...] = ()
        if parent is not None and self._linked(task):
            linked = SpanContext(parent.trace_id, parent.span_id, True, FLAGS[parent.flags & 3], producer.trace_state)
            links = (Link(linked, PRODUCER_LINK),)
            parent = None
        remote = None
        # The attempt's ids at once when they come from the `random` module (`fast.draw`): its span id (bits 64
        # to 127), its first call's (the low 64), and their hex digits; else drawn one by one (`ids` None).
        ids: Ids | None = None
        if parent is not None:
            trace_id = parent.trace_id
            sampled = parent.flags & SAMPLED if fast.parent_based else (trace_id & LOW_64) < fast.bound
            flags = parent.flags & RANDOM
            trace_state = producer.trace_state
            if fast.own_random:
                bits, digits = draw()
                ids = (bits, digits, parent.trace_hex)
            if not sampled:
                return self._unrecorded(trace_id, flags, trace_state, producer, application_code, ids)
            remote = SpanContext(trace_id, parent.span_id, True, TraceFlags(parent.flags), trace_state)
        else:
            trace_id = 0  # drawn by the SDK, when the plugin can neither make the span nor hand the SDK its id
            flags = RANDOM if fast.random_ids else 0
            trace_state = None
            if fast.direct is not None or fast.reserve is not None:  # the plugin draws the id: decide on it now
                if fast.own_random:
                    bits, digits = draw()
                    trace_id = bits >> 128
                    ids = (bits, digits, digits[:32])
                else:
                    trace_id = fast.trace_id()
                if (trace_id & LOW_64) >= fast.bound:
                    return self._unrecorded(trace_id, flags, None, producer, application_code, ids)
        if ids is not None and not application_code and fast.direct is not None and not fast.direct.starting():
            # Nothing can see the attempt's spans before it ends: they are made then (deferred.py).
            bits, digits, trace_digits = ids
            own = tuple.__new__(  # direct.span_context, a frame less
                SpanContext,
                (
                    trace_id,
                    (bits >> 64) & LOW_64,
                    False,
                    FLAGS[flags | SAMPLED],
                    DEFAULT_TRACE_STATE if trace_state is None else trace_state,
                    True,
                ),
            )
            headers = producer.headers
            if trace_state is not None and producer.tracestate is not None:  # the producer's, kept by the attempt
                headers = {**headers, "tracestate": producer.tracestate}
            name, attributes = self._consumer_fields(task, context)
            attempt = DeferredAttempt(
                self,
                name,
                own,
                remote,
                links,
                attributes,
                (bits & LOW_64, digits[48:]),
                trace_digits,
                FLAGS_HEX[flags | SAMPLED],
                headers,
            )
            return attempt, None, attempt, None
        if fast.direct is not None:  # the span made directly (direct.py), as the SDK would make it
            if ids is None:
                span_id = fast.ids.generate_span_id()
                first = None
                trace_hex = None
            else:
                bits, digits, trace_hex = ids
                span_id = (bits >> 64) & LOW_64
                first = (bits & LOW_64, digits[48:])
            own = span_context(trace_id, span_id, FLAGS[flags | SAMPLED], trace_state)
            name, attributes = self._consumer_fields(task, context)
            span = fast.direct.start(
                name,
                own,
                remote,
                CONSUMER,
                attributes,
                links,
                lambda: producer.base if remote is None else remote_context(remote, producer.base),
            )
            calls = DirectCalls(fast.direct, fast.ids, self.targets, producer.base, span, producer.headers)
            if trace_hex is not None:
                calls.trace_hex = trace_hex
                calls.flags_hex = FLAGS_HEX[flags | SAMPLED]
                calls.first = first
            if not application_code:
                return span, None, calls, None
            return span, otel_context.attach(calls.context), calls, None
        # Through the SDK: its sampler decides the same, on the same trace id for a new trace.
        parent_context = producer.base if remote is None else remote_context(remote, producer.base)
        if trace_id and remote is None and fast.reserve is not None:
            fast.reserve(trace_id)  # the SDK's sampler decides the same on it
        span = self._consumer_span(task, context, parent_context, list(links) or None)
        if not span.is_recording():  # the application's provider decided on a trace id of its own
            return self._current(span, producer.base, producer.headers)
        attempt_context = trace.set_span_in_context(span, parent_context)
        token = otel_context.attach(attempt_context)
        return span, token, SpanCalls(self.tracer, self.targets, attempt_context, producer.headers), None

    def new_trace(self, task: Task, context: ExecutionContext, drawn: int) -> DeferredAttempt | None:
        """A recorded attempt of a new trace for an executor that runs no application code, its spans made at its
        end (deferred.py), from the wrapper's draw (`drawn`: 256 bits, `fast.draw`'s layout: the trace id, whose
        low 64 are decided on already, the attempt's span id and its first call's); None when a processor has an
        `on_start` or an id is zero (then `start` decides afresh). The common case of `start`, in fewer steps."""
        spans = self.spans
        if spans is None or (
            spans._processors[0] if spans.multi._span_processors is spans._known else spans.processors()[0]
        ):
            return None
        digits = drawn.to_bytes(32, "big").hex()
        if ZEROS in digits:
            return None
        fast: Shortcut = self.fast  # type: ignore[assignment]
        # The CONSUMER span's name and attributes (`_consumer_fields`, inlined), and the attempt made without
        # calling its class (DeferredAttempt.__init__'s fields, set here): two frames less per recorded attempt.
        found = self._consumers.get((context.queue, context.worker_id, task.type, task.attempt, task.recoveries))
        if found is None:
            found = self._consumer(task, context)
        attempt = _new(DeferredAttempt)
        attempt.kit = self
        attempt.name = found[0]
        attempt.attributes = attributes = found[1].copy()
        attributes["messaging.message.id"] = task.id
        attempt.own = tuple.__new__(  # direct.span_context, a frame less
            SpanContext, (drawn >> 128, (drawn >> 64) & LOW_64, False, fast.root_trace_flags, DEFAULT_TRACE_STATE, True)
        )
        attempt.remote = None
        attempt.links = ()
        attempt.trace_hex = trace_hex = digits[:32]
        attempt.flags_hex = flags_hex = fast.root_sampled_hex
        attempt.headers = NO_PRODUCER.headers
        # Its first call, whose record it is (deferred.CallRecord): the span id and `traceparent` drawn with it.
        attempt.span_id = drawn & LOW_64
        attempt.traceparent = f"00-{trace_hex}-{digits[48:]}-{flags_hex}"
        attempt.kind = None
        attempt.more = None
        attempt.started = time_ns()
        return attempt

    def _unrecorded(
        self,
        trace_id: int,
        flags: int,
        trace_state: Any,
        producer: Producer,
        application_code: bool,
        ids: Ids | None = None,
    ) -> Started:
        """A sampled-out attempt: its span context as the SDK would make it (a new span id, the sampled flag off),
        current while the executor runs when it runs application code (function tasks' spans follow the
        decision), and its headers (the `traceparent` of that span context, with the producer's tracestate
        and baggage), which its calls send either way (`context.call_headers`: no call of the plugin's per call).
        With `ids` (see `start`), its `traceparent` is put together from hex digits already made: no id is
        formatted."""
        if ids is None:
            span_id = self.fast.ids.generate_span_id()  # type: ignore[union-attr]
            parent = "00-%032x-%016x-%02x" % (trace_id, span_id, flags)  # noqa: UP031 (fast.traceparent)
        else:
            bits, digits, trace_hex = ids
            span_id = -1  # (bits 64 to 127, worked out below only when a span context is made)
            parent = f"00-{trace_hex}-{digits[32:48]}-{FLAGS_HEX[flags]}"
        token = None
        if application_code:
            if span_id < 0:
                span_id = (bits >> 64) & LOW_64
            span = NonRecordingSpan(span_context(trace_id, span_id, FLAGS[flags], trace_state))
            token = otel_context.attach(trace.set_span_in_context(span, producer.base))
        headers = {"traceparent": parent, **producer.headers}
        if producer.tracestate and trace_state is not None:
            headers["tracestate"] = producer.tracestate
        return None, token, None, headers

    def _current(self, span: Any, parent_context: Context, baggage: dict[str, str]) -> Started:
        """An SDK span that is not recorded, made current, its context formatted directly."""
        token = otel_context.attach(trace.set_span_in_context(span, parent_context))
        span_context = span.get_span_context()
        headers = {"traceparent": traceparent(span_context), **baggage}
        if span_context.trace_state:
            headers["tracestate"] = span_context.trace_state.to_header()
        return None, token, None, headers

    def _linked(self, task: Task) -> bool:
        """A retry or a recovery starts a trace of its own, linked to the producer span (unless `retries =
        "child"`), so a retry days later does not stretch the original trace. The producer's baggage is kept."""
        return self.link_retries and not (task.attempt == 1 and task.recoveries == 0)

    def _consumer_fields(self, task: Task, context: ExecutionContext) -> tuple[str, dict[str, Any]]:
        """The attempt's CONSUMER span name and attributes (a new dict: the span owns it), from the remembered ones
        (`_consumer`) with the task's id set in its place."""
        name, remembered = self._consumer(task, context)
        attributes = remembered.copy()
        attributes["messaging.message.id"] = task.id
        return name, attributes

    def _consumer(self, task: Task, context: ExecutionContext) -> tuple[str, dict[str, Any]]:
        """The CONSUMER span's name and attributes, its task id's left as None (the key keeps its place), for the
        attempt's queue, worker, task type, attempt and recoveries: remembered (see `_consumers`)."""
        key = (context.queue, context.worker_id, task.type, task.attempt, task.recoveries)
        found = self._consumers.get(key)
        if found is None:
            attributes: dict[str, Any] = {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": context.queue,
                "messaging.message.id": None,
                "messaging.client.id": context.worker_id,
                "gopherq.task.type": task.type,
                "gopherq.task.attempt": task.attempt,
            }
            if task.recoveries:
                attributes["gopherq.task.recoveries"] = task.recoveries
            if len(self._consumers) >= CONSUMERS_CACHED:
                self._consumers.clear()
            found = self._consumers[key] = (f"process {context.queue}", attributes)
        return found

    def _consumer_span(self, task: Task, context: ExecutionContext, parent: Context, links: Any) -> Any:
        """The attempt's CONSUMER span, with every attribute given at its start (one call, not one per attribute)."""
        name, attributes = self._consumer_fields(task, context)
        return self.tracer.start_span(name, context=parent, kind=CONSUMER, links=links, attributes=attributes)

    def _start_generic(self, task: Task, context: ExecutionContext) -> Started:
        """Through the SDK and the configured propagators, whatever they are."""
        links = None
        if task.trace is None:
            parent_context: Context = Context()
        else:
            parent_context = extract(task.trace)
            if self._linked(task):
                linked = trace.get_current_span(parent_context).get_span_context()
                links = [Link(linked, PRODUCER_LINK)] if linked.is_valid else None
                parent_context = trace.set_span_in_context(INVALID_SPAN, parent_context)
        span = self._consumer_span(task, context, parent_context, links)
        attempt_context = trace.set_span_in_context(span, parent_context)
        token = otel_context.attach(attempt_context)
        if span.is_recording():
            return span, token, SpanCalls(self.tracer, self.targets, attempt_context, None), None
        headers: dict[str, str] = {}
        propagate.inject(headers, context=attempt_context)
        return None, token, None, headers

    def finished(self, span: Any, outcome: AttemptOutcome, context: ExecutionContext) -> None:
        """A recorded attempt's outcome on its span (and its trace id in the outcome events, for exemplars)."""
        failure = outcome.failure
        if failure is not None:
            put(span, {"error.type": failure.reason})
            span.set_status(Status(StatusCode.ERROR, self.masker.text(failure.message)[:1000]))
        if self.exemplars:
            facts = context.event_data or {}
            trace_id = getattr(context.calls, "trace_hex", None)  # (DirectCalls: made with the ids)
            if trace_id is None:
                trace_id = "%032x" % span.get_span_context()[0]  # noqa: UP031 (see fast.traceparent; [0]: the trace id)
            context.event_data = {**facts, "attempt_trace_id": trace_id}
