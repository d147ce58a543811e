"""CLIENT spans for the calls an executor makes (`context.calls`, see gopherq/core/calls.py), with the OpenTelemetry
HTTP client conventions for `http` calls: span name = the method; `http.request.method`, `url.full` (masked: no
credentials, no secret query parameters), `server.address`, `server.port`, `http.response.status_code`, and
`error.type` (the status code from 400 up, or the failure's reason). The span's context goes out in the request's
`traceparent` (and `tracestate`, `baggage`) unless the task sets its own, so the called service continues the trace.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gopherq import Masker, TaskFailure


class SpanCall:
    """One observed call: a CLIENT span from `__enter__` to `__exit__`."""

    __slots__ = ("kind", "masker", "operation", "span", "target", "tracer")

    def __init__(self, tracer: Any, masker: Masker, kind: str, operation: str, target: str) -> None:
        self.tracer = tracer
        self.masker = masker
        self.kind = kind
        self.operation = operation
        self.target = target
        self.span: Any = None

    def __enter__(self) -> SpanCall:
        span = self.span = self.tracer.start_span(self.operation, kind=SpanKind.CLIENT)
        if span.is_recording():
            if self.kind == "http":
                parts = urlsplit(self.target)
                attributes: dict[str, Any] = {
                    "http.request.method": self.operation,
                    "url.full": self.masker.url(self.target),
                    "server.address": parts.hostname or "",
                }
                try:
                    port = parts.port
                except ValueError:
                    port = None
                port = port or (443 if parts.scheme == "https" else 80)
                attributes["server.port"] = port
            else:
                attributes = {"gopherq.call.kind": self.kind, "gopherq.call.target": self.masker.text(self.target)}
            span.set_attributes(attributes)
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        out: dict[str, str] = {}
        propagate.inject(out, context=trace.set_span_in_context(self.span))
        _merge(headers, out)

    def answered(self, status: int) -> None:
        span = self.span
        if span.is_recording():
            span.set_attribute("http.response.status_code" if self.kind == "http" else "gopherq.call.status", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        span = self.span
        if error is not None and span.is_recording():
            if isinstance(error, TaskFailure):
                if error.reason != "http_status":  # the status said it already
                    span.set_attribute("error.type", error.reason)
                    span.set_status(Status(StatusCode.ERROR, self.masker.text(error.message)[:1000]))
            else:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class ContextCall:
    """A call of an attempt whose span is not recorded (sampled out): no CLIENT span, which no standard sampler would
    record either (they follow the parent, or decide on the same trace id), but the attempt's context still goes out
    (with the sampled flag off), so the called service follows the decision."""

    __slots__ = ()

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        out: dict[str, str] = {}
        propagate.inject(out)  # the current context: the attempt's span
        _merge(headers, out)

    def answered(self, status: int) -> None:
        return None

    def __enter__(self) -> ContextCall:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        return None


def _merge(headers: MutableMapping[str, str], out: dict[str, str]) -> None:
    """Add the propagation headers `out` to `headers`, except those the request has (a task's own traceparent wins,
    with its own tracestate)."""
    present = {name.lower() for name in headers}
    if "traceparent" in present:
        out.pop("traceparent", None)
        out.pop("tracestate", None)
    for name, value in out.items():
        if name.lower() not in present:
            headers[name] = value


UNRECORDED = ContextCall()


class UnrecordedCalls:
    """`context.calls` of an attempt whose span is not recorded."""

    def begin(self, kind: str, operation: str, target: str) -> ContextCall:
        return UNRECORDED


class SpanCalls:
    """`context.calls` of a traced attempt: each `begin` is a CLIENT span, a child of the attempt's span."""

    def __init__(self, tracer: Any, masker: Masker) -> None:
        self.tracer = tracer
        self.masker = masker

    def begin(self, kind: str, operation: str, target: str) -> SpanCall:
        return SpanCall(self.tracer, self.masker, kind, operation, target)
