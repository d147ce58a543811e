"""The `otel` plugin's per-task hooks: a PRODUCER span per enqueue, a CONSUMER span per attempt (made by
`attempts.py`), and the tracer provider they use. Registered (through `gopherq_register_hooks`) only when the
plugin is enabled.

Span names and attributes follow the OpenTelemetry messaging conventions: `send <queue>` (PRODUCER) and
`process <queue>` (CONSUMER), with `messaging.system` = `gopherq`, `messaging.operation.type` (`send`,
`process`), `messaging.destination.name` (the queue) and `messaging.message.id` (the task id).

One PRODUCER span per task, even in a batch: each task's context must name a span of its own for its attempts to
hang under, and a task is the unit a trace UI (and a sampler) should show, so a batch of ten thousand tasks is ten
thousand small traces (each a child of the caller's span when there is one), not one trace nobody can open.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Mapping
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from gopherq import AttemptOutcome, AttemptRunner, ExecutionContext, Masker, Settings, Task, hookimpl, trace_field
from gopherq.plugins.otel.attempts import SYSTEM, Attempts
from gopherq.plugins.otel.calls import put
from gopherq.plugins.otel.carrier import extract
from gopherq.plugins.otel.deferred import CANCELLED, DeferredAttempt
from gopherq.plugins.otel.export import BoundedProcessor, make_exporter
from gopherq.plugins.otel.fast import LOW_64, ZEROS, AttemptIds, getrandbits
from gopherq.plugins.otel.settings import OtelSettings

log = logging.getLogger("gopherq.plugins.otel")

#: A cancelled attempt's attribute (its status: `deferred.CANCELLED`).
CANCELLED_ATTRIBUTES = {"error.type": "cancelled"}


def build_provider(config: OtelSettings) -> tuple[Any, BoundedProcessor | None]:
    """The tracer provider to use: the application's, when it installed an SDK provider of its own (a web app that
    enqueues), else one of ours, installed as the global provider so that function tasks' spans reach it too."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, None
    name = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or "gopherq"
    sampler = None if config.sample_ratio is None else ParentBased(TraceIdRatioBased(config.sample_ratio))
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), sampler=sampler, id_generator=AttemptIds()
    )
    processor = None
    exporter = make_exporter(config)
    if exporter is not None:
        processor = BoundedProcessor(exporter, config)
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider(), processor


class Tracing:
    """The hooks of an enabled `otel` plugin (one per process)."""

    def __init__(self, config: OtelSettings, settings: Settings) -> None:
        self.config = config
        self.masker = Masker.from_settings(settings)
        self.link_retries = config.retries == "link"
        self.processor: BoundedProcessor | None = None
        self._tracer: Any = None

    @property
    def tracer(self) -> Any:
        """Built on first use, in the process that uses it (after a fork, not before)."""
        if self._tracer is None:
            from gopherq import __version__

            provider, self.processor = build_provider(self.config)
            self._tracer = provider.get_tracer("gopherq", __version__)
        return self._tracer

    # -- enqueue -----------------------------------------------------------------------------------------------

    def _producer_parent(self, task: Task, origin: str, carrier: Mapping[str, str] | None, parent: Task | None) -> Any:
        if task.trace is not None:  # the producer gave its own context
            return extract(task.trace)
        if origin == "api":
            return extract(carrier or {})
        if origin == "cli":
            return extract(os.environ)
        if origin == "schedule":
            return Context()  # each run of a periodic task is a trace of its own
        if parent is not None:
            return extract(parent.trace or {})
        return otel_context.get_current()

    @hookimpl
    def gopherq_before_enqueue(
        self, task: Task, queue: str, origin: str, carrier: Mapping[str, str] | None, parent: Task | None
    ) -> None:
        ctx = self._producer_parent(task, origin, carrier, parent)
        span = self.tracer.start_span(f"send {queue}", context=ctx, kind=SpanKind.PRODUCER)
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": SYSTEM,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "send",
                    "messaging.destination.name": queue,
                    "messaging.message.id": task.id,
                    "gopherq.task.type": task.type,
                    "gopherq.origin": origin,
                }
            )
        span.end()
        out: dict[str, str] = {}
        propagate.inject(out, context=trace.set_span_in_context(span, ctx))
        task.trace = trace_field(out)

    # -- attempts ----------------------------------------------------------------------------------------------

    @hookimpl
    def gopherq_wrap_attempt(self, run: AttemptRunner) -> AttemptRunner:
        _ = self.tracer
        attempts = Attempts(self.tracer, self.masker, link_retries=self.link_retries, exemplars=self.config.exemplars)

        async def current(entry: Any, task: Task, context: ExecutionContext, token: Token[Context]) -> AttemptOutcome:
            """A sampled-out attempt whose context is current while the executor runs."""
            try:
                return await run(entry, task, context)
            finally:
                otel_context.detach(token)

        async def recorded(
            entry: Any, task: Task, context: ExecutionContext, span: Any, token: Token[Context] | None
        ) -> AttemptOutcome:
            try:
                outcome = await run(entry, task, context)
            except BaseException:  # cancelled: a time limit, a cancellation, shutdown
                put(span, CANCELLED_ATTRIBUTES)
                span.set_status(CANCELLED)
                raise
            else:
                attempts.finished(span, outcome, context)
                return outcome
            finally:
                if token is not None:
                    otel_context.detach(token)
                span.end()

        async def deferred(
            entry: Any, task: Task, context: ExecutionContext, attempt: DeferredAttempt
        ) -> AttemptOutcome:
            """A recorded attempt whose spans are made when it is over (deferred.py)."""
            try:
                outcome = await run(entry, task, context)
            except BaseException:  # cancelled: a time limit, a cancellation, shutdown
                attempt.end(None, context)
                raise
            attempt.end(outcome, context)
            return outcome

        def traced(entry: Any, task: Task, context: ExecutionContext) -> Awaitable[AttemptOutcome]:
            """A plain function (see gopherq_wrap_attempt): a sampled-out attempt of an executor that runs no
            application code has nothing to make current and nothing to end, so its own awaitable is returned
            as it is, with no frame of the plugin's around it, and its headers are `context.call_headers`: the
            executor adds them to each call with no call into the plugin.

            The commonest such attempt, a new trace's (a task without a producer's context) decided against by
            the plugin's own draw, is settled here, before any other work: 256 random bits (its trace id, its span
            id and its first call's, as `fast.draw` cuts them), the ratio sampler's decision on the trace id's low
            64, and its `traceparent` from their hex digits. (A draw with a zero id, about one in 2**60, is decided
            again by `start`.) One the draw records is made from the same bits when its spans can be made at its
            end (deferred.py: `Attempts.new_trace`)."""
            fast = attempts.fast
            if task.trace is None and fast is not None and fast.roots and not entry.runs_application_code:
                if propagate._HTTP_TEXT_FORMAT is fast.textmap if fast.module_global else fast.current():
                    drawn = getrandbits(256)
                    if (drawn >> 128) & LOW_64 >= fast.bound:
                        digits = drawn.to_bytes(32, "big").hex()
                        if ZEROS not in digits:
                            parent = f"00-{digits[:32]}-{digits[32:48]}-{fast.root_flags}"
                            context.call_headers = {"traceparent": parent}
                            return run(entry, task, context)
                    else:
                        later = attempts.new_trace(task, context, drawn)
                        if later is not None:
                            context.calls = later
                            return deferred(entry, task, context, later)
            span, token, calls, headers = attempts.start(task, context, entry.runs_application_code)
            if calls is not None:
                context.calls = calls
                if type(calls) is DeferredAttempt:  # (its own span)
                    return deferred(entry, task, context, calls)
            else:
                context.call_headers = headers
            if span is not None:
                return recorded(entry, task, context, span, token)
            if token is not None:
                return current(entry, task, context, token)
            return run(entry, task, context)

        return traced

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @hookimpl
    def gopherq_startup(self, worker: Any) -> None:
        _ = self.tracer  # the provider and its export thread, before the first task rather than during it

    @hookimpl
    def gopherq_shutdown(self, worker: Any) -> None:
        """Export what is left (within `shutdown_timeout`) and log the totals."""
        if self.processor is not None:
            self.processor.shutdown()
