"""A recorded attempt whose spans are made when it is over: the CONSUMER span and the CLIENT span of each call, each
made whole at once (`DeferredAttempt.end`) from what was noted while the attempt ran (its ids, its start and end
times, each call's target, status and error).

Why: while an attempt of an executor that runs no application code (`http`) runs, nothing but the plugin itself
looks at its spans: no context is made current, and when no span processor has an `on_start` (the plugin's own
`BoundedProcessor` has none) none is told a span started. So an open span is not needed: the attempt notes a few
values as it goes, and its spans, with every attribute and status they would have had, reach the processors when
it ends, as they would have. What that saves per recorded attempt is an open span's upkeep: each span's lock, the
attribute dicts updated after the start, the status and end calls, and about half the frames (with the wrapper's
own draw for a new trace, `Attempts.new_trace`: a quarter of the plugin's own instructions per recorded attempt).

Anything that could observe an open span (an `on_start` processor, an executor that runs application code, ids
not drawn by the plugin) takes the open spans of `direct.py`, or the SDK's.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any, Protocol

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, Status, StatusCode

from gopherq import AttemptOutcome, ExecutionContext, Masker, TaskFailure, merge_headers
from gopherq.plugins.otel.calls import Targets
from gopherq.plugins.otel.direct import DirectSpans

#: An error status without a description (an HTTP status from 400 up, an exception that is not a task failure).
ERROR = Status(StatusCode.ERROR)
CANCELLED = Status(StatusCode.ERROR, "attempt cancelled (time limit, cancel or shutdown)")

_new = object.__new__


class Kit(Protocol):
    """What a process's attempts share (`attempts.Attempts`, with the standard tracer): the span maker, the id
    generator, the call targets' attributes, the masker, and whether exemplars are wanted."""

    spans: DirectSpans | None  # (never None when a DeferredAttempt is made)
    ids: IdGenerator | None
    targets: Targets
    masker: Masker
    exemplars: bool


class CallRecord:
    """What the CLIENT span of one call of a `DeferredAttempt` needs, noted as the call goes (see core/calls.py): the
    `OutboundCall` an executor is given. A `DeferredAttempt` is its own first call's record (most attempts make
    one call: one object per recorded attempt, not two); each further call is a `DeferredCall`."""

    __slots__ = (
        "call_started",
        "ended",
        "error",
        "headers",
        "kind",
        "operation",
        "span_id",
        "status",
        "target",
        "traceparent",
    )

    #: None until the call begins (a `DeferredAttempt` that made no call has no CLIENT span).
    kind: str | None
    operation: str
    target: str
    span_id: int
    #: What the call propagates: its `traceparent` (put together from hex digits made with the ids) and the
    #: attempt's other headers. A further call does not keep its attempt: the attempt keeps its calls, and a call
    #: that kept its attempt would make a reference cycle of each recorded attempt, left for the garbage collector.
    traceparent: str
    headers: dict[str, str]
    call_started: int
    ended: int | None
    status: int | None
    #: What the CLIENT span says of the error that ended the call: its reason (a task failure's) or its type's
    #: name, and a task failure's message (None for any other exception). Not the exception: its traceback holds
    #: the executor's frame, which holds this call (a reference cycle per failed call).
    error: tuple[str, str | None] | None

    def __enter__(self) -> CallRecord:
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        out = {"traceparent": self.traceparent}
        if self.headers:  # the producer's baggage, and its tracestate when the attempt keeps it
            out.update(self.headers)
        merge_headers(headers, out)

    def answered(self, status: int) -> None:
        self.status = status

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.ended = time_ns()
        if error is not None:
            self.error = (
                (error.reason, error.message) if isinstance(error, TaskFailure) else (type(error).__name__, None)
            )


class DeferredCall(CallRecord):
    """A call of a `DeferredAttempt` after its first."""

    __slots__ = ()


class DeferredAttempt(CallRecord):
    """`context.calls` of a recorded attempt whose spans are made at its end (see the module doc); `end` makes them.
    Made by `attempts.Attempts.start` with the attempt's span context (`own`), its parent or links, its attributes,
    and the ids drawn with it (`fast.draw`): the trace id's hex digits and the first call's span id and digits. (A
    new trace's, the commonest, is made by `Attempts.new_trace` without calling the class: it sets the same fields
    itself.) It is also the record of its own first call (`CallRecord`), whose `traceparent` is made with it."""

    __slots__ = (
        "attributes",
        "flags_hex",
        "kit",
        "links",
        "more",
        "name",
        "own",
        "remote",
        "started",
        "trace_hex",
    )

    def __init__(
        self,
        kit: Kit,
        name: str,
        own: SpanContext,
        remote: SpanContext | None,
        links: Sequence[Link],
        attributes: dict[str, Any],
        first: tuple[int, str],
        trace_hex: str,
        flags_hex: str,
        headers: dict[str, str],
    ) -> None:
        self.kit = kit
        self.name = name
        self.own = own
        self.remote = remote
        self.links = links
        self.attributes = attributes
        #: What every call's propagation headers are made of: the trace id's and the flags' hex digits, and the
        #: others (the producer's `baggage`, and `tracestate` when the attempt keeps the producer's).
        self.trace_hex = trace_hex
        self.flags_hex = flags_hex
        self.headers = headers
        #: The first call's span id and `traceparent`, from the ids drawn with the attempt's (`first`: the span id
        #: and its hex digits).
        self.span_id, digits = first
        self.traceparent = f"00-{trace_hex}-{digits}-{flags_hex}"
        self.kind = None
        self.more: list[DeferredCall] | None = None
        self.started = time_ns()

    def begin(self, kind: str, operation: str, target: str) -> CallRecord:
        if self.kind is None:  # the first call: the attempt is its record (its span id and traceparent are made)
            call: CallRecord = self
        else:  # made without calling the class (a frame less); every field is set here
            call = _new(DeferredCall)
            call.span_id = span_id = self.kit.ids.generate_span_id()  # type: ignore[union-attr]
            digits = "%016x" % span_id  # noqa: UP031 (see fast.traceparent)
            call.traceparent = f"00-{self.trace_hex}-{digits}-{self.flags_hex}"
            call.headers = self.headers
            if self.more is None:
                self.more = []
            self.more.append(call)
        call.kind = kind
        call.operation = operation
        call.target = target
        call.status = call.ended = call.error = None
        call.call_started = time_ns()
        return call

    def end(self, outcome: AttemptOutcome | None, context: ExecutionContext) -> None:
        """Make the attempt's spans, with its `outcome` (None: cancelled), and hand them to the processors, its
        calls' first (they ended first), all in one frame: each span's fields are set as `DirectSpans.start` and
        `DirectSpan.end` set them, and each call's attributes and status are those `calls.SpanCall` records on an
        open span (the request's, the answer's status code, the error: the status code from 400 up, or the
        failure's reason)."""
        ended = time_ns()
        own = self.own
        kit = self.kit
        spans: DirectSpans = kit.spans  # type: ignore[assignment]
        client = spans.ended_client
        masker = kit.masker
        _, ending, processors = (
            spans._processors if spans.multi._span_processors is spans._known else spans.processors()
        )
        calls: Sequence[CallRecord] = () if self.kind is None else (self,) if self.more is None else (self, *self.more)
        for call in calls:
            attributes = kit.targets.attributes(call.kind, call.operation, call.target)  # type: ignore[arg-type]
            code = call.status
            if code is not None:
                if call.kind != "http":
                    attributes["gopherq.call.status"] = code
                else:
                    attributes["http.response.status_code"] = code
                    if code >= 400:
                        attributes["error.type"] = str(code)
            error = call.error
            span = _new(client)
            if error is not None:
                reason, message = error
                if message is None:  # not a task failure
                    attributes["error.type"] = reason
                    span._status = ERROR
                elif reason != "http_status":  # (else the status said it already)
                    attributes["error.type"] = reason
                    span._status = Status(StatusCode.ERROR, masker.text(message)[:1000])
                elif code is not None and code >= 400:
                    span._status = ERROR
            elif code is not None and code >= 400:
                span._status = ERROR
            span._name = call.operation
            span._context = tuple.__new__(SpanContext, (own[0], call.span_id, False, own[3], own[4], True))
            span._parent = own
            span._attributes = attributes  # type: ignore[assignment]
            span._start_time = call.call_started
            span._end_time = ended if call.ended is None else call.ended
            for processor in ending:
                processor._on_ending(span)
            for processor in processors:
                processor.on_end(span)
        attributes = self.attributes
        span = _new(spans.ended_consumer)
        if outcome is None:
            attributes["error.type"] = "cancelled"
            span._status = CANCELLED
        elif outcome.failure is not None:
            attributes["error.type"] = outcome.failure.reason
            span._status = Status(StatusCode.ERROR, masker.text(outcome.failure.message)[:1000])
        span._name = self.name
        span._context = own
        span._parent = self.remote
        span._attributes = attributes  # type: ignore[assignment]
        span._links = self.links  # type: ignore[assignment]
        span._start_time = self.started
        span._end_time = ended
        for processor in ending:
            processor._on_ending(span)
        for processor in processors:
            processor.on_end(span)
        if outcome is not None and kit.exemplars:  # the attempt's trace id in its outcome events
            facts = context.event_data  # (the executor's, left as it is: a copy with the trace id added)
            facts = {} if facts is None else facts.copy()
            facts["attempt_trace_id"] = self.trace_hex
            context.event_data = facts
