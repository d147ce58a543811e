"""The `otel` plugin end to end, in this process: the SDK's in-memory exporter records every span, a real worker
runs the tasks against a loopback HTTP service that continues the incoming `traceparent` in a SERVER span of its own,
and the assertions follow one trace from the producer's span through each attempt into the service."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gopherq import AsyncClient, Settings
from gopherq.core.plugins import load_plugins
from tests.support.common import async_wait_until

EXPORTER = InMemorySpanExporter()


def _install_provider() -> None:
    """One global provider for this process (OpenTelemetry allows one): the plugin uses the application's provider
    when there is one, as it would in a web app that enqueues."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


_install_provider()
TRACER = trace.get_tracer("tests")


class TracedService:
    """A loopback HTTP service that continues the caller's trace: each request is a SERVER span whose parent is
    the request's `traceparent`. `/ok` answers 200; `/flaky/<n>` answers 503 (Retry-After: 0) to the first n
    requests of each task (by Idempotency-Key)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.counts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        parent = propagate.extract(dict(request.headers))
        with TRACER.start_as_current_span(f"{request.method} {request.path}", context=parent, kind=SpanKind.SERVER):
            key = request.headers.get("Idempotency-Key", "")
            self.counts[key] = self.counts.get(key, 0) + 1
            failures = int(request.match_info.get("failures", 0))
            if self.counts[key] <= failures:
                return web.Response(status=503, text="not yet", headers={"Retry-After": "0"})
            return web.Response(text="ok")

    def _serve(self) -> None:
        app = web.Application()
        app.add_routes([web.route("*", "/ok", self._handle), web.route("*", "/flaky/{failures}", self._handle)])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> TracedService:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def service() -> Iterator[TracedService]:
    started = TracedService().start()
    yield started
    started.stop()


@pytest.fixture
def spans() -> Iterator[Callable[[], list[ReadableSpan]]]:
    EXPORTER.clear()
    yield EXPORTER.get_finished_spans  # type: ignore[misc]
    EXPORTER.clear()


@pytest.fixture
def traced_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def build(**otel: Any) -> Settings:
        return make_settings(
            plugins={"otel": {"enabled": True, **otel}}, queue={"backoff_min": 0.01, "backoff_max": 0.05}
        )

    return build


@contextlib.contextmanager
def function_app(settings: Settings) -> Iterator[Any]:
    """tests.support.function_targets' App on `settings`, with no client or plugins left from an earlier test."""
    from tests.support import function_targets as targets

    def reset() -> None:
        targets.app.close()
        targets.app._plugins = None

    reset()
    targets.app.settings = settings
    try:
        yield targets
    finally:
        reset()


def by_kind(found: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((span for span in found if span.kind is kind), key=lambda span: span.start_time or 0)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_the_producer_through_the_attempt_into_the_service(
    traced_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    settings = traced_settings()
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        with TRACER.start_as_current_span("caller") as caller:
            task_id = await client.enqueue_http(service.url("/ok"))
        record = await client.wait(task_id, timeout=15)
    assert record is not None and record.status.value == "succeeded"
    await async_wait_until(lambda: len(by_kind(spans(), SpanKind.SERVER)) == 1, what="the service's span")
    found = spans()
    trace_id = caller.get_span_context().trace_id
    [producer] = by_kind(found, SpanKind.PRODUCER)
    [consumer] = by_kind(found, SpanKind.CONSUMER)
    [client_span] = by_kind(found, SpanKind.CLIENT)
    [server_span] = by_kind(found, SpanKind.SERVER)
    for span in (producer, consumer, client_span, server_span):
        assert span.context.trace_id == trace_id, span.name
    assert parent_id(producer) == caller.get_span_context().span_id
    assert parent_id(consumer) == producer.context.span_id
    assert parent_id(client_span) == consumer.context.span_id
    assert parent_id(server_span) == client_span.context.span_id
    assert producer.name == f"send {settings.queue.name}" and consumer.name == f"process {settings.queue.name}"
    assert producer.attributes["messaging.system"] == "gopherq"
    assert producer.attributes["messaging.operation.type"] == "send"
    assert producer.attributes["messaging.message.id"] == task_id
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["messaging.destination.name"] == settings.queue.name
    assert client_span.name == "GET"
    assert client_span.attributes["http.request.method"] == "GET"
    assert client_span.attributes["url.full"] == service.url("/ok")
    assert client_span.attributes["server.address"] == "127.0.0.1"
    assert client_span.attributes["server.port"] == service.port
    assert client_span.attributes["http.response.status_code"] == 200
    # The result record names the trace, so the dashboard and the API lead to it.
    assert record.trace_id == format(trace_id, "032x")


async def test_retries_are_linked_to_the_producer_not_children_of_it(
    traced_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    settings = traced_settings()
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(service.url("/flaky/1"), max_attempts=3)
        record = await client.wait(task_id, timeout=15)
    assert record is not None and record.status.value == "succeeded" and record.attempts == 2
    await async_wait_until(lambda: len(by_kind(spans(), SpanKind.SERVER)) == 2, what="both service spans")
    found = spans()
    [producer] = by_kind(found, SpanKind.PRODUCER)
    first, retry = by_kind(found, SpanKind.CONSUMER)
    assert parent_id(first) == producer.context.span_id and first.context.trace_id == producer.context.trace_id
    assert first.attributes["error.type"] == "http_status"
    # The retry is a trace of its own, linked to the producer span: a retry days later does not stretch the trace.
    assert retry.parent is None
    assert retry.context.trace_id != producer.context.trace_id
    assert [link.context.span_id for link in retry.links] == [producer.context.span_id]
    assert retry.attributes["gopherq.task.attempt"] == 2
    # Each attempt's HTTP call and the service's span hang under that attempt.
    client_spans = by_kind(found, SpanKind.CLIENT)
    assert [parent_id(span) for span in client_spans] == [first.context.span_id, retry.context.span_id]
    assert [span.attributes["http.response.status_code"] for span in client_spans] == [503, 200]
    server_spans = by_kind(found, SpanKind.SERVER)
    assert [parent_id(span) for span in server_spans] == [span.context.span_id for span in client_spans]


async def test_retries_can_be_children_of_the_producer(
    traced_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    settings = traced_settings(retries="child")
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(service.url("/flaky/1"), max_attempts=3)
        assert (await client.wait(task_id, timeout=15)) is not None
    await async_wait_until(lambda: len(by_kind(spans(), SpanKind.CONSUMER)) == 2, what="both attempts")
    found = spans()
    [producer] = by_kind(found, SpanKind.PRODUCER)
    assert [parent_id(span) for span in by_kind(found, SpanKind.CONSUMER)] == [producer.context.span_id] * 2


async def test_a_task_that_sets_its_own_traceparent_header_keeps_it(
    traced_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    settings = traced_settings()
    await start_worker(settings)
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(service.url("/ok"), headers={"TraceParent": own})
        assert (await client.wait(task_id, timeout=15)) is not None
    [headers] = service.headers
    assert headers["traceparent"] == own


async def test_function_tasks_run_inside_the_consumer_span(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    settings = make_settings(
        plugins={"otel": {"enabled": True}, "functions": {"modules": ["tests.support.function_targets"]}}
    )
    with function_app(settings) as targets:
        await start_worker(settings)
        await run_traced_functions(targets, spans)


async def run_traced_functions(targets: Any, spans: Callable[[], list[ReadableSpan]]) -> None:
    """Each traced function's own span is a child of its attempt's span."""
    for func in (targets.traced_sync, targets.traced_async):
        EXPORTER.clear()
        handle = await func.aenqueue("x")
        assert await handle.aresult(timeout=10) == "x"
        await async_wait_until(lambda: len(by_kind(spans(), SpanKind.CONSUMER)) == 1, what="the attempt's span")
        found = spans()
        [consumer] = by_kind(found, SpanKind.CONSUMER)
        [own] = [span for span in found if span.name == "user work"]
        assert parent_id(own) == consumer.context.span_id and own.context.trace_id == consumer.context.trace_id
        if func is targets.traced_sync:  # what the function adds to the attempt's span is kept
            assert consumer.attributes["user.note"] == "x"


def test_a_disabled_plugin_adds_nothing_that_runs_per_task(make_settings: Callable[..., Settings]) -> None:
    plugins = load_plugins(make_settings())
    assert plugins.before_enqueue is None
    assert plugins.hook_caller("gopherq_wrap_attempt") is None
    assert plugins.run_attempt.func.__name__ == "run_attempt"  # type: ignore[attr-defined]
    enabled = load_plugins(make_settings(plugins={"otel": {"enabled": True}}))
    assert enabled.before_enqueue is not None
    assert enabled.hook_caller("gopherq_wrap_attempt") is not None
    assert "gopherq_wrap_attempt" in enabled.info["otel"].hooks


async def test_an_api_request_with_traceparent_joins_the_callers_trace(
    traced_settings: Callable[..., Settings], aredis: Any, spans: Callable[[], list[ReadableSpan]]
) -> None:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from gopherq.web import create_app

    settings = traced_settings()
    server = TestServer(create_app(settings, aredis), host="127.0.0.1")
    await server.start_server()
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        async with ClientSession() as session:
            url = server.make_url(f"/v1/queues/{settings.queue.name}/tasks")
            body = {"id": "api-traced", "url": "http://127.0.0.1:9/"}
            async with session.post(url, json=body, headers={"traceparent": caller, "baggage": "k=v"}) as response:
                assert response.status == 201, await response.text()
    finally:
        await server.close()
    [producer] = by_kind(spans(), SpanKind.PRODUCER)
    assert format(producer.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id(producer) == 0x00F067AA0BA902B7
    async with AsyncClient(settings) as client:
        info = await client.inspect.task(settings.queue.name, "api-traced")
    assert info is not None and info.envelope is not None
    assert info.envelope["trace"]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert info.envelope["trace"]["baggage"] == "k=v"
    assert info.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_schedule_run_is_a_new_trace_and_a_callback_joins_its_parents(
    traced_settings: Callable[..., Settings], spans: Callable[[], list[ReadableSpan]]
) -> None:
    from gopherq.core import codec
    from gopherq.core.schedules import Schedule, Scheduler
    from gopherq.core.task import Task

    plugins = load_plugins(traced_settings())
    hook = plugins.before_enqueue
    assert hook is not None
    scheduler = Scheduler([], "q", {})
    scheduler.before_enqueue = hook
    schedule = Schedule(name="tick", every=60, task={"url": "http://127.0.0.1:9/"})
    with TRACER.start_as_current_span("unrelated") as unrelated:
        envelope = codec.loads(scheduler._envelope(schedule, 60))
    parent = envelope["trace"]["traceparent"]
    assert parent[3:35] != format(unrelated.get_span_context().trace_id, "032x")
    [producer] = by_kind(spans(), SpanKind.PRODUCER)
    assert producer.parent is None and producer.attributes["gopherq.origin"] == "schedule"
    # A callback enqueued when that task ends is in its trace.
    finished = Task(id="tick@60", trace=envelope["trace"])
    callback = codec.loads(
        hook.envelope(b'{"id":"tick@60.on_success","url":"http://127.0.0.1:9/"}', "q", "callback", finished)
    )
    assert callback["trace"]["traceparent"][3:35] == parent[3:35]


def test_a_failing_enqueue_hook_never_costs_the_task(make_settings: Callable[..., Settings]) -> None:
    from gopherq import hookimpl

    class Broken:
        @hookimpl
        def gopherq_before_enqueue(self, task: Any) -> None:
            task.trace = {"traceparent": "not one"}

    plugins = load_plugins(make_settings(), extra={"broken": Broken()})
    task = AsyncClient(make_settings(), plugins=plugins).http("http://127.0.0.1:9/")
    assert task.trace is None  # the bad trace was dropped; the task itself is fine
    assert plugins.before_enqueue is not None and plugins.before_enqueue.failures == 1


async def test_the_attempt_duration_histogram_has_the_attempts_trace_as_exemplar(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    service: TracedService,
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    from aiohttp import ClientSession

    from tests.support.common import free_port

    port = free_port()
    settings = make_settings(plugins={"otel": {"enabled": True}}, metrics={"port": port})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(service.url("/ok"))
        assert (await client.wait(task_id, timeout=15)) is not None
    [consumer] = by_kind(spans(), SpanKind.CONSUMER)
    trace_id = format(consumer.context.trace_id, "032x")
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}

    async def scraped() -> str:
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response:
                text = await response.text()
        return text if f'trace_id="{trace_id}"' in text else ""

    text = await async_wait_until(scraped, what="the exemplar")
    [line] = [line for line in text.splitlines() if f'trace_id="{trace_id}"' in line]
    assert line.startswith("gopherq_attempt_duration_seconds_bucket{")


@pytest.mark.parametrize("trace_url", ["https://tempo.example/trace/{trace_id}", None])
async def test_the_dashboards_task_page_links_to_the_trace(
    make_settings: Callable[..., Settings], aredis: Any, trace_url: str | None
) -> None:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from gopherq.web import create_app

    settings = make_settings(plugins={"otel": {"trace_url": trace_url}})  # the link needs no tracing in the web
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http("http://127.0.0.1:9/", trace={"traceparent": parent})
    server = TestServer(create_app(settings, aredis), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            async with session.get(server.make_url(f"/queues/{settings.queue.name}/tasks/{task_id}")) as response:
                assert response.status == 200
                page = await response.text()
    finally:
        await server.close()
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in page
    link = '<a href="https://tempo.example/trace/4bf92f3577b34da6a3ce929d0e0e4736" rel="noopener noreferrer"'
    assert (link in page) is (trace_url is not None)


async def test_the_sync_client_and_delay_carry_the_callers_span(
    traced_settings: Callable[..., Settings],
    spans: Callable[[], list[ReadableSpan]],
) -> None:
    from gopherq import Client

    settings = traced_settings()

    def produce() -> tuple[int, str, str]:
        with TRACER.start_as_current_span("sync caller") as caller, function_app(settings) as targets:
            with Client(settings) as client:
                task_id = client.enqueue_http("http://127.0.0.1:9/")
            handle = targets.add.delay(1, 2)  # the App's own (sync) client
        return caller.get_span_context().trace_id, task_id, handle.id

    trace_id, task_id, function_id = await asyncio.to_thread(produce)
    async with AsyncClient(settings) as client:
        for queued in (task_id, function_id):
            info = await client.inspect.task(settings.queue.name, queued)
            assert info is not None and info.trace_id == format(trace_id, "032x"), queued
    producers = by_kind(spans(), SpanKind.PRODUCER)
    assert {span.attributes["messaging.message.id"] for span in producers} == {task_id, function_id}


def test_without_opentelemetry_the_plugin_warns_once_and_adds_nothing(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    for name in [name for name in sys.modules if name == "opentelemetry" or name.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # `import opentelemetry` now fails, as when not installed
    plugins = load_plugins(make_settings(plugins={"otel": {"enabled": True}}))
    assert plugins.before_enqueue is None and plugins.hook_caller("gopherq_wrap_attempt") is None
    [warning] = [record for record in caplog.records if record.levelname == "WARNING"]
    assert "OpenTelemetry is not installed" in warning.getMessage()


def test_the_cheap_path_is_taken_only_with_the_standard_sampler_and_propagators() -> None:
    """fast.py decides and formats as the SDK would only for the samplers and propagators it knows; any other makes
    it step aside (the generic SDK path). Pins the SDK internals it reads, so an SDK upgrade that moves them fails
    here instead of silently taking the slow path."""
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    from gopherq.plugins.otel.fast import recognise

    assert recognise(TRACER) is not None  # the SDK's default sampler (parent-based, always on)
    shortcut = recognise(TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.25))).get_tracer("t"))
    assert shortcut is not None and shortcut.parent_based and shortcut.bound == round(0.25 * 2**64)
    unknown_delegate = ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)
    assert recognise(TracerProvider(sampler=unknown_delegate).get_tracer("t")) is None

    class Custom(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return context

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            return None

        @property
        def fields(self) -> set[str]:
            return set()

    standard = propagate.get_global_textmap()
    assert shortcut.current()
    propagate.set_global_textmap(CompositePropagator([*standard._propagators, Custom()]))  # type: ignore[attr-defined]
    try:
        assert not shortcut.current() and recognise(TRACER) is None
    finally:
        propagate.set_global_textmap(standard)
