"""CLIENT spans for the calls an executor makes (`context.calls`, see gopherq/core/calls.py), with the OpenTelemetry
HTTP client conventions for `http` calls: span name = the method; `http.request.method`, `url.full` (masked: no
credentials, no secret query parameters), `server.address`, `server.port`, `http.response.status_code`, and
`error.type` (the status code from 400 up, or the failure's reason). The span's context goes out in the request's
`traceparent` (and `tracestate`, `baggage`) unless the task sets its own, so the called service continues the trace.

Per call, on the hot path: one span started with all its request attributes at once (those of a target's origin,
its host and port, are worked out once per origin; only the masked URL is per call), one more attribute for the
answer, and the `traceparent` formatted directly when the propagators are the standard ones (`fast.py`). Under a
recorded attempt whose span the plugin made itself (`direct.py`), so is each call's: `DirectCalls`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind, Status, StatusCode

from gopherq import Masker, TaskFailure, merge_headers
from gopherq.plugins.otel.direct import DirectSpan, DirectSpans, child_context
from gopherq.plugins.otel.fast import traceparent

#: Distinct call targets whose attributes are remembered; past it the cache starts again.
TARGETS_CACHED = 1024


#: A URL with nothing to mask, as `masking.plain_url` has it (a plain scheme, one `://`, no userinfo, query or
#: percent sign), its origin (up to where `urlsplit` ends its netloc) the first group: what most calls' URLs are,
#: matched in one pass instead of `origin` and `Masker.url`'s several (about 12,000 instructions less per call).
PLAIN_URL = re.compile(r"([A-Za-z][A-Za-z0-9]*://[^/?#@%]*)(?:[/#](?:(?!://)[^?@%])*)?\Z")


def origin(target: str) -> str:
    """The scheme, userinfo, host and port of a URL: up to where `urlsplit` ends its netloc."""
    at = target.find("://")
    if at < 0:
        return target
    end = len(target)
    for delimiter in "/?#":
        found = target.find(delimiter, at + 3)
        if 0 <= found < end:
            end = found
    return target[:end]


def put(span: Any, attributes: Mapping[str, Any]) -> None:
    """Attributes of the plugin's own on a recorded span, whichever made it. (A direct span's class is a subclass
    `DirectSpans` makes of `DirectSpan`: checked by its base, since `isinstance` against the SDK's abstract `Span`
    runs a Python-level `__instancecheck__`.)"""
    if type(span).__base__ is DirectSpan:
        span.record(attributes)
    else:
        span.set_attributes(attributes)


class Targets:
    """The request attributes of each call (masked URL, host, port), the parts that depend on the target's origin
    worked out once per distinct origin (parsing a URL costs more than the span), the masked URL per call."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        #: Never changed once made, and copied for each call (a dict, not a read-only proxy: `{**proxy}` goes
        #: through the generic mapping protocol, three times slower than a dict's copy).
        self._known: dict[tuple[str, str, str], dict[str, Any]] = {}
        #: The last plain HTTP call's method, its origin followed by "/", and its origin's attributes: the next
        #: call to the same origin (most calls, one after another) is recognised by a prefix and a few one-pass
        #: checks instead of `PLAIN_URL` (whose per-character look-ahead cost most of a call's attributes).
        self._last: tuple[str, str, dict[str, Any]] = ("", "\0", {})

    def attributes(self, kind: str, operation: str, target: str) -> dict[str, Any]:
        """A new dict (the span it is given to owns it)."""
        last_operation, prefix, found = self._last
        if (
            operation == last_operation
            and target.startswith(prefix)
            and kind == "http"
            # what `masking.plain_url` checks besides the scheme (the prefix's, checked when it was remembered)
            and target.find("://", len(prefix)) < 0
            and "@" not in target
            and "?" not in target
            and "%" not in target
        ):
            attributes = found.copy()  # (a copy and a store: half the instructions of `{**found, ...}`)
            attributes["url.full"] = target
            return attributes
        return self._attributes(kind, operation, target)

    def _attributes(self, kind: str, operation: str, target: str) -> dict[str, Any]:
        http = kind == "http"
        full = target
        if not http:
            key = (kind, operation, target)
        else:
            plain = PLAIN_URL.match(target)  # one C-level pass: the origin, and nothing to mask
            if plain is not None:
                key = (kind, operation, plain[1])
                if target[len(plain[1]) : len(plain[1]) + 1] == "/":
                    self._last = (operation, plain[1] + "/", self._origin(key))
                    attributes = self._last[2].copy()
                    attributes["url.full"] = full
                    return attributes
            else:
                key = (kind, operation, origin(target))
                full = self.masker.url(target)
        found = self._origin(key)
        attributes = found.copy()
        if http:
            attributes["url.full"] = full
        return attributes

    def _origin(self, key: tuple[str, str, str]) -> dict[str, Any]:
        """The attributes of a call's (kind, operation, origin), remembered."""
        found = self._known.get(key)
        if found is None:
            if len(self._known) >= TARGETS_CACHED:
                self._known.clear()
            found = self._known[key] = self._describe(*key)
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
        merge_headers(headers, out)

    def answered(self, status: int) -> None:
        span = self.span
        if not span.is_recording():
            return
        if self.kind != "http":
            put(span, {"gopherq.call.status": status})
        elif status >= 400:
            put(span, {"http.response.status_code": status, "error.type": str(status)})
            span.set_status(Status(StatusCode.ERROR))
        else:
            put(span, {"http.response.status_code": status})

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        span = self.span
        if error is not None and span.is_recording():
            if isinstance(error, TaskFailure):
                if error.reason != "http_status":  # the status said it already
                    put(span, {"error.type": error.reason})
                    span.set_status(Status(StatusCode.ERROR, self.attempt.targets.masker.text(error.message)[:1000]))
            else:
                put(span, {"error.type": type(error).__name__})
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


class DirectCall(SpanCall):
    """A call's CLIENT span made by the plugin itself (direct.py): a child of the attempt's span, sampled as it is
    (the SDK's parent-based and ratio samplers decide a child of a recorded span the same way)."""

    __slots__ = ("digits",)

    def __init__(self, attempt: DirectCalls, kind: str, operation: str, target: str) -> None:
        self.attempt = attempt  # type: ignore[assignment]
        self.kind = kind
        parent = attempt.parent
        first = attempt.first
        self.digits: str | None = None
        if first is not None:  # the attempt's first call: its span id drawn with the attempt's (fast.draw)
            attempt.first = None
            span_id, self.digits = first
        else:
            span_id = attempt.ids.generate_span_id()
        own = child_context(parent, span_id)
        self.span = attempt.spans.start(
            operation,
            own,
            parent,
            SpanKind.CLIENT,
            attempt.targets.attributes(kind, operation, target),
            (),
            attempt.parent_context,
        )

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        """`SpanCall.propagate` for the standard propagators (a DirectCall's case), without its look-ups: the span
        context's fields by index (its properties are Python calls), and no tracestate unless the producer had one
        (an empty TraceState's truth is a Python-level `__len__`)."""
        own = self.span._context
        attempt: DirectCalls = self.attempt  # type: ignore[assignment]
        digits = self.digits
        if digits is not None and attempt.trace_hex is not None:  # from hex digits made with the ids: no formatting
            parent = f"00-{attempt.trace_hex}-{digits}-{attempt.flags_hex}"
        else:
            parent = "00-%032x-%016x-%02x" % (own[0], own[1], own[3])  # noqa: UP031 (see fast.traceparent)
        state = own[4]
        out = {"traceparent": parent, **attempt.headers}
        if state is not DEFAULT_TRACE_STATE and state:
            out["tracestate"] = state.to_header()
        merge_headers(headers, out)

    def answered(self, status: int) -> None:
        """`SpanCall.answered` on a direct span: its attributes recorded directly."""
        span: DirectSpan = self.span
        if self.kind != "http":
            span.record({"gopherq.call.status": status})
        elif status >= 400:
            span.record({"http.response.status_code": status, "error.type": str(status)})
            span.set_status(Status(StatusCode.ERROR))
        else:
            span.record({"http.response.status_code": status})


class DirectCalls:
    """`context.calls` of a recorded attempt whose span the plugin made itself: each `begin` is a `DirectCall`."""

    __slots__ = (
        "_context",
        "base",
        "first",
        "flags_hex",
        "headers",
        "ids",
        "parent",
        "span",
        "spans",
        "targets",
        "trace_hex",
    )

    def __init__(
        self,
        spans: DirectSpans,
        ids: IdGenerator,
        targets: Targets,
        base: Context,
        span: DirectSpan,
        headers: dict[str, str],
    ) -> None:
        self.spans = spans
        self.ids = ids
        self.targets = targets
        #: The context the attempt's span is put in (the producer's baggage), the span, and its span context: the
        #: calls' parent.
        self.base = base
        self.span = span
        self.parent: SpanContext = span._context  # type: ignore[assignment]  # (its get_span_context(): a frame more)
        #: The `tracestate`-less constant headers of a call (`baggage`).
        self.headers = headers
        self._context: Context | None = None
        #: With ids drawn at once (`fast.draw`, set by `Attempts.start`): the trace id's hex digits, the calls'
        #: flags' two, and the first call's span id and its hex digits (taken by that call); else None.
        self.trace_hex: str | None = None
        self.flags_hex = ""
        self.first: tuple[int, str] | None = None

    @property
    def context(self) -> Context:
        """The attempt's context (its span, the producer's baggage), made when first asked for: by the wrapper,
        to make it current for an executor that runs application code, or for a processor's `on_start`."""
        if self._context is None:
            self._context = trace.set_span_in_context(self.span, self.base)
        return self._context

    def parent_context(self) -> Context:
        return self.context

    def begin(self, kind: str, operation: str, target: str) -> DirectCall:
        return DirectCall(self, kind, operation, target)
