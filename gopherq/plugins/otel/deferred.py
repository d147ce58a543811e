"""A recorded attempt whose spans are made when it is over: the CONSUMER span and the CLIENT span of each call, each
made whole at once (`DirectSpans.finished`) from what was noted while the attempt ran (its ids, its start and end
times, each call's target, status and error).

Why: while an attempt of an executor that runs no application code (`http`) runs, nothing but the plugin itself
looks at its spans: no context is made current, and when no span processor has an `on_start` (the plugin's own
`BoundedProcessor` has none) none is told a span started. So an open span is not needed: the attempt notes a few
values as it goes, and its spans, with every attribute and status they would have had, reach the processors when
it ends, as they would have. What that saves per recorded attempt is an open span's upkeep: each span's lock, the
attribute dicts updated after the start, the status and end calls, and half the frames (about a third of what a
recorded HTTP attempt cost).

Anything that could observe an open span (an `on_start` processor, an executor that runs application code, ids
not drawn by the plugin) takes the open spans of `direct.py`, or the SDK's.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any, Protocol

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from gopherq import AttemptOutcome, ExecutionContext, Masker, TaskFailure, merge_headers
from gopherq.plugins.otel.calls import Targets
from gopherq.plugins.otel.direct import UNSET, DirectSpans

CLIENT = SpanKind.CLIENT
CONSUMER = SpanKind.CONSUMER
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


class DeferredCall:
    """One call of a `DeferredAttempt`: what its CLIENT span needs, noted as the call goes (see core/calls.py)."""

    __slots__ = ("attempt", "digits", "ended", "error", "kind", "operation", "span_id", "started", "status", "target")

    attempt: DeferredAttempt
    kind: str
    operation: str
    target: str
    span_id: int
    #: The span id's 16 hex digits, as the call's `traceparent` has them.
    digits: str
    started: int
    ended: int | None
    status: int | None
    error: BaseException | None

    def __enter__(self) -> DeferredCall:
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        attempt = self.attempt
        merge_headers(
            headers, {"traceparent": f"00-{attempt.trace_hex}-{self.digits}-{attempt.flags_hex}", **attempt.headers}
        )

    def answered(self, status: int) -> None:
        self.status = status

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.ended = time_ns()
        self.error = error


class DeferredAttempt:
    """`context.calls` of a recorded attempt whose spans are made at its end (see the module doc); `end` makes them.
    Made by `attempts.Attempts.start` with the attempt's span context (`own`), its parent or links, its attributes,
    and the ids drawn with it (`fast.draw`): the trace id's hex digits and the first call's span id."""

    __slots__ = (
        "attributes",
        "calls",
        "first",
        "flags_hex",
        "headers",
        "kit",
        "links",
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
        first: tuple[int, str] | None,
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
        #: The first call's span id and its hex digits when drawn with the attempt's ids, taken by that call.
        self.first: tuple[int, str] | None = first
        #: What every call's propagation headers are made of: the trace id's and the flags' hex digits, and the
        #: others (the producer's `baggage`, and `tracestate` when the attempt keeps the producer's).
        self.trace_hex = trace_hex
        self.flags_hex = flags_hex
        self.headers = headers
        self.calls: list[DeferredCall] = []
        self.started = time_ns()

    def begin(self, kind: str, operation: str, target: str) -> DeferredCall:
        # Made without calling the class (a frame less); every field is set here.
        call = _new(DeferredCall)
        call.attempt = self
        call.kind = kind
        call.operation = operation
        call.target = target
        first = self.first
        if first is not None:
            self.first = None
            call.span_id, call.digits = first
        else:
            call.span_id = span_id = self.kit.ids.generate_span_id()  # type: ignore[union-attr]
            call.digits = "%016x" % span_id  # noqa: UP031 (see fast.traceparent)
        call.status = call.ended = call.error = None
        self.calls.append(call)
        call.started = time_ns()
        return call

    def end(self, outcome: AttemptOutcome | None, context: ExecutionContext) -> None:
        """Make the attempt's spans, its calls' first (they ended first), with its `outcome` (None: cancelled), in
        one frame: each call's attributes and status are those `calls.SpanCall` records on an open span (the
        request's, the answer's status code, the error: the status code from 400 up, or the failure's reason)."""
        ended = time_ns()
        own = self.own
        kit = self.kit
        finished = kit.spans.finished  # type: ignore[union-attr]
        masker = kit.masker
        for call in self.calls:
            attributes = kit.targets.attributes(call.kind, call.operation, call.target)
            status = UNSET
            code = call.status
            if code is not None:
                if call.kind != "http":
                    attributes["gopherq.call.status"] = code
                else:
                    attributes["http.response.status_code"] = code
                    if code >= 400:
                        attributes["error.type"] = str(code)
                        status = ERROR
            error = call.error
            if error is not None:
                if isinstance(error, TaskFailure):
                    if error.reason != "http_status":  # the status said it already
                        attributes["error.type"] = error.reason
                        status = Status(StatusCode.ERROR, masker.text(error.message)[:1000])
                else:
                    attributes["error.type"] = type(error).__name__
                    status = ERROR
            finished(
                call.operation,
                tuple.__new__(SpanContext, (own[0], call.span_id, False, own[3], own[4], True)),  # direct.child_context
                own,
                CLIENT,
                attributes,
                (),
                call.started,
                ended if call.ended is None else call.ended,
                status,
            )
        attributes = self.attributes
        if outcome is None:
            attributes["error.type"] = "cancelled"
            status = CANCELLED
        elif outcome.failure is None:
            status = UNSET
        else:
            attributes["error.type"] = outcome.failure.reason
            status = Status(StatusCode.ERROR, masker.text(outcome.failure.message)[:1000])
        finished(self.name, own, self.remote, CONSUMER, attributes, self.links, self.started, ended, status)
        if outcome is not None and kit.exemplars:  # the attempt's trace id in its outcome events
            context.event_data = {**(context.event_data or {}), "attempt_trace_id": self.trace_hex}
