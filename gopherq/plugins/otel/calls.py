"""CLIENT spans for the calls an executor makes (`context.calls`, see gopherq/core/calls.py), with the OpenTelemetry
HTTP client conventions for `http` calls: span name = the method; `http.request.method`, `url.full` (masked: no
credentials, no secret query parameters), `server.address`, `server.port`, `http.response.status_code`, and
`error.type` (the status code from 400 up, or the failure's reason). The span's context goes out in the request's
`traceparent` (and `tracestate`, `baggage`) unless the task sets its own, so the called service continues the trace.

Per call, on the hot path: one SDK span started with all its request attributes at once (those of a target are
worked out once: masking and parsing a URL cost more than the span), one `set_attributes` for the answer, and the
`traceparent` formatted directly when the propagators are the standard ones (`fast.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from gopherq import Masker, TaskFailure
from gopherq.plugins.otel.fast import traceparent

#: Distinct call targets whose attributes are remembered; past it the cache starts again.
TARGETS_CACHED = 1024


class Targets:
    """The request attributes of each call target (masked URL, host, port), worked out once per distinct target."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self._known: dict[tuple[str, str, str], Mapping[str, Any]] = {}

    def attributes(self, kind: str, operation: str, target: str) -> Mapping[str, Any]:
        key = (kind, operation, target)
        found = self._known.get(key)
        if found is None:
            if len(self._known) >= TARGETS_CACHED:
                self._known.clear()
            found = self._known[key] = MappingProxyType(self._describe(kind, operation, target))
        return found

    def _describe(self, kind: str, operation: str, target: str) -> dict[str, Any]:
        if kind != "http":
            return {"gopherq.call.kind": kind, "gopherq.call.target": self.masker.text(target)}
        parts = urlsplit(target)
        try:
            port = parts.port
        except ValueError:
            port = None
        return {
            "http.request.method": operation,
            "url.full": self.masker.url(target),
            "server.address": parts.hostname or "",
            "server.port": port or (443 if parts.scheme == "https" else 80),
        }


class SpanCall:
    """One observed call: a CLIENT span from `begin` to `__exit__`."""

    __slots__ = ("attempt", "kind", "span")

    def __init__(self, attempt: SpanCalls, kind: str, operation: str, target: str) -> None:
        self.attempt = attempt
        self.kind = kind
        attributes = attempt.targets.attributes(kind, operation, target)
        self.span = attempt.tracer.start_span(
            operation, context=attempt.context, kind=SpanKind.CLIENT, attributes=attributes
        )

    def __enter__(self) -> SpanCall:
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        attempt = self.attempt
        if attempt.headers is None:  # propagators of the application's own: through them
            out: dict[str, str] = {}
            propagate.inject(out, context=trace.set_span_in_context(self.span, attempt.context))
        else:
            span_context = self.span.get_span_context()
            out = {"traceparent": traceparent(span_context), **attempt.headers}
            if span_context.trace_state:
                out["tracestate"] = span_context.trace_state.to_header()
        merge(headers, out)

    def answered(self, status: int) -> None:
        span = self.span
        if not span.is_recording():
            return
        if self.kind != "http":
            span.set_attribute("gopherq.call.status", status)
        elif status >= 400:
            span.set_attributes({"http.response.status_code": status, "error.type": str(status)})
            span.set_status(Status(StatusCode.ERROR))
        else:
            span.set_attribute("http.response.status_code", status)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        span = self.span
        if error is not None and span.is_recording():
            if isinstance(error, TaskFailure):
                if error.reason != "http_status":  # the status said it already
                    span.set_attribute("error.type", error.reason)
                    span.set_status(Status(StatusCode.ERROR, self.attempt.targets.masker.text(error.message)[:1000]))
            else:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class SpanCalls:
    """`context.calls` of a recorded attempt: each `begin` is a CLIENT span, a child of the attempt's span."""

    __slots__ = ("context", "headers", "targets", "tracer")

    def __init__(self, tracer: Any, targets: Targets, context: Context, headers: dict[str, str] | None) -> None:
        self.tracer = tracer
        self.targets = targets
        #: The attempt's context (its span, the producer's baggage).
        self.context = context
        #: The `tracestate`-less constant headers of a call (`baggage`) with the standard propagators; None without.
        self.headers = headers

    def begin(self, kind: str, operation: str, target: str) -> SpanCall:
        return SpanCall(self, kind, operation, target)


class UnrecordedCalls:
    """`context.calls` of an attempt whose span is not recorded (sampled out), and its calls: no CLIENT span, which
    no standard sampler would record either (they follow the parent, or decide on the same trace id), but the
    attempt's context still goes out (with the sampled flag off), so the called service follows the decision."""

    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        #: The propagation headers of the attempt's span context, made once for all its calls.
        self.headers = headers

    def begin(self, kind: str, operation: str, target: str) -> UnrecordedCalls:
        return self

    def __enter__(self) -> UnrecordedCalls:
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        merge(headers, self.headers)

    def answered(self, status: int) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        return None


#: The headers a call's observer may add (lower case).
PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})


def merge(headers: MutableMapping[str, str], out: Mapping[str, str]) -> None:
    """Add the propagation headers `out` to `headers`, except those the request has (a task's own traceparent wins,
    with its own tracestate)."""
    for name in headers:
        if name.lower() in PROPAGATION_HEADERS:  # rare: the task sets one of them itself
            break
    else:
        headers.update(out)
        return
    present = {name.lower() for name in headers}
    own_context = "traceparent" in present
    for name, value in out.items():
        if name not in present and not (own_context and name == "tracestate"):
            headers[name] = value
