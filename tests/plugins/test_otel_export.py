"""The `otel` plugin in real worker processes: spans exported over OTLP/HTTP to a loopback receiver that decodes
the protobuf (opentelemetry-proto), and a collector that is not there, which must not stop or slow a worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from gopherq import is_traceparent
from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from gopherq.plugins.otel.export import BoundedProcessor
from gopherq.plugins.otel.settings import OtelSettings
from tests.support.common import free_port, wait_until, write_config
from tests.support.loopback import LoopbackServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class Receiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1: decodes each ExportTraceServiceRequest and keeps its spans with
    their resource attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.paths.append(self.path)
                    for resource_spans in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans += [(resource, span) for span in scope_spans.spans]
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def found(self) -> list[tuple[dict[str, Any], Span]]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    started.thread.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        out[item.key] = value.int_value if value.HasField("int_value") else value.string_value
    return out


def traced_config(tmp_path: Path, redis_url: str, queue: str, otel: str) -> Path:
    return write_config(
        tmp_path,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue}"\n'
        "[worker]\nlease_timeout = 2.0\nheartbeat_interval = 0.5\nreaper_interval = 0.5\n"
        f'[logging]\nlevel = "INFO"\n[plugins.logging]\nevents = ["worker.*"]\n[plugins.otel]\n{otel}\n',
    )


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


@pytest.fixture
def traced_worker(
    tmp_path: Path, redis_url: str, queue_name: str, worker_process: Callable[..., Any]
) -> Callable[[str], Any]:
    """Starts a worker process on the test's queue with the given `[plugins.otel]` lines, once it has started."""

    def start(otel: str) -> Any:
        proc = worker_process(["run", "-c", str(traced_config(tmp_path, redis_url, queue_name, otel))])
        wait_until(lambda: "started: queue" in proc.output, what="worker start")
        return proc

    return start


def wait_finished(sync_redis: redis.Redis, queue: str, ids: list[str]) -> None:
    """Until every task of `ids` has its result record."""
    keys = QueueKeys(queue)
    wait_until(lambda: all(sync_redis.exists(keys.result(task_id)) for task_id in ids), what="every task to finish")


def stop_cleanly(proc: Any) -> None:
    """SIGTERM the worker; it exports what is left of its spans, then exits 0."""
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_worker_exports_its_spans_over_otlp_http(
    queue_name: str,
    sync_redis: redis.Redis,
    traced_worker: Callable[[str], Any],
    receiver: Receiver,
    loopback: LoopbackServer,
) -> None:
    otel = f'enabled = true\nendpoint = "{receiver.url}"\nservice_name = "otel-test"\nexport_interval = 0.2'
    proc = traced_worker(otel)
    url = loopback.url("/ok").replace("http://", "http://user:hunter2@") + "?token=s3cret&page=2"
    # A raw push that carries its producer's context, as any producer in any language may.
    sync_redis.rpush(queue_name, codec.dumps({"id": "exported", "url": url, "trace": {"traceparent": TRACEPARENT}}))
    wait_finished(sync_redis, queue_name, ["exported"])
    wait_until(lambda: len(receiver.found()) >= 2, what="the spans to arrive")
    stop_cleanly(proc)
    assert set(receiver.paths) == {"/v1/traces"}
    found = receiver.found()
    assert {resource["service.name"] for resource, _ in found} == {"otel-test"}
    [consumer] = [span for _, span in found if span.kind == Span.SPAN_KIND_CONSUMER]
    [client] = [span for _, span in found if span.kind == Span.SPAN_KIND_CLIENT]
    assert consumer.trace_id.hex() == TRACE_ID and consumer.parent_span_id.hex() == PARENT_ID
    assert consumer.name == f"process {queue_name}"
    assert attributes(consumer)["messaging.system"] == "gopherq"
    assert attributes(consumer)["messaging.message.id"] == "exported"
    assert client.trace_id.hex() == TRACE_ID and client.parent_span_id == consumer.span_id
    client_attributes = attributes(client)
    assert client_attributes["http.response.status_code"] == 200
    assert "hunter2" not in client_attributes["url.full"] and "s3cret" not in client_attributes["url.full"]
    assert client_attributes["url.full"].endswith("page=2")
    # The result record names the trace.
    record = json.loads(sync_redis.get(QueueKeys(queue_name).result("exported")) or b"{}")
    assert record["trace_id"] == TRACE_ID


def test_an_attempt_cut_by_its_time_limit_still_exports_its_spans_as_cancelled(
    queue_name: str,
    sync_redis: redis.Redis,
    traced_worker: Callable[[str], Any],
    receiver: Receiver,
    loopback: LoopbackServer,
) -> None:
    """A recorded `http` attempt's spans are made when it ends (deferred.py), also when the worker's time limit
    cancels it mid-call: a new trace's (the wrapper's own draw) and a producer's child alike. Each CONSUMER span
    says it was cancelled; its CLIENT span, ended with it, has no status code; the producer's stays the parent."""
    otel = f'enabled = true\nendpoint = "{receiver.url}"\nexport_interval = 0.2'
    proc = traced_worker(otel)
    slow = loopback.url("/slow?seconds=30")
    tasks: list[dict[str, Any]] = [
        {"id": "cut-new", "url": slow, "timeout": 0.5, "max_attempts": 1},
        {"id": "cut-child", "url": slow, "timeout": 0.5, "max_attempts": 1, "trace": {"traceparent": TRACEPARENT}},
    ]
    sync_redis.rpush(queue_name, *(codec.dumps(task) for task in tasks))
    wait_finished(sync_redis, queue_name, [task["id"] for task in tasks])
    wait_until(lambda: len(receiver.found()) >= 4, what="the spans to arrive")
    stop_cleanly(proc)
    spans = [span for _, span in receiver.found()]
    assert len(spans) == 4
    consumers = {
        attributes(span)["messaging.message.id"]: span for span in spans if span.kind == Span.SPAN_KIND_CONSUMER
    }
    assert set(consumers) == {"cut-new", "cut-child"}
    for consumer in consumers.values():
        assert attributes(consumer)["error.type"] == "cancelled"
        assert consumer.status.code == consumer.status.STATUS_CODE_ERROR and "cancelled" in consumer.status.message
        [client] = [
            span for span in spans if span.kind == Span.SPAN_KIND_CLIENT and span.parent_span_id == consumer.span_id
        ]
        assert client.trace_id == consumer.trace_id and "http.response.status_code" not in attributes(client)
        assert client.start_time_unix_nano >= consumer.start_time_unix_nano
        assert consumer.start_time_unix_nano < client.end_time_unix_nano <= consumer.end_time_unix_nano
        assert consumer.end_time_unix_nano - consumer.start_time_unix_nano >= 400_000_000  # its time limit, 0.5 s
    assert (
        consumers["cut-child"].trace_id.hex() == TRACE_ID and consumers["cut-child"].parent_span_id.hex() == PARENT_ID
    )
    assert not consumers["cut-new"].parent_span_id and consumers["cut-new"].trace_id.hex() != TRACE_ID


@pytest.mark.parametrize(
    ("otel", "why"),
    [
        ("enabled = true\nendpoint = 'http://127.0.0.1:{port}/v1/traces'\nexport_timeout = 1.0", "exporter reported"),
        ("enabled = true\nexporter = 'no-such-exporter'", "unknown exporter 'no-such-exporter'"),
    ],
    ids=["unreachable-collector", "unknown-exporter"],
)
def test_bad_tracing_settings_never_stop_a_worker(
    queue_name: str,
    sync_redis: redis.Redis,
    traced_worker: Callable[[str], Any],
    loopback: LoopbackServer,
    otel: str,
    why: str,
) -> None:
    closed = free_port()  # nothing listens there
    proc = traced_worker(otel.replace("{port}", str(closed)) + "\nbatch_size = 8")
    ids = [f"t{n}" for n in range(200)]
    sync_redis.rpush(queue_name, *(codec.dumps({"id": task_id, "url": loopback.url("/ok")}) for task_id in ids))
    wait_finished(sync_redis, queue_name, ids)
    stop_cleanly(proc)
    output = proc.output
    warnings = [line for line in output.splitlines() if "otel" in line and "WARNING" in line]
    assert len(warnings) == 1, output
    assert "spans" in warnings[0] and why in warnings[0], warnings[0]
    [totals] = [line for line in output.splitlines() if "otel: spans exported" in line]
    exported, failed, dropped = (int(part.split()[-1]) for part in totals.split("otel: spans ")[1].split(", "))
    assert exported == 0 and failed + dropped > 0, totals


def test_the_command_line_continues_the_trace_in_traceparent(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    run_gopherq: Callable[..., Any],
    receiver: Receiver,
) -> None:
    config = traced_config(tmp_path, redis_url, queue_name, f'enabled = true\nendpoint = "{receiver.url}"')
    done = run_gopherq(
        ["enqueue", "-c", str(config), "--url", "http://127.0.0.1:9/", "--id", "from-cli"],
        env={"TRACEPARENT": TRACEPARENT, "BAGGAGE": "tenant=acme"},
    )
    assert done.returncode == 0, done.stderr
    [raw] = sync_redis.lrange(queue_name, 0, -1)
    trace = json.loads(raw)["trace"]
    assert trace["traceparent"].startswith(f"00-{TRACE_ID}-") and trace["baggage"] == "tenant=acme"
    # The enqueue's PRODUCER span reached the collector before the command exited: a child of the caller's span.
    [(_, producer)] = receiver.found()
    assert producer.kind == Span.SPAN_KIND_PRODUCER and producer.parent_span_id.hex() == PARENT_ID
    assert trace["traceparent"] == f"00-{TRACE_ID}-{producer.span_id.hex()}-01"


class HeaderService:
    """A loopback HTTP service that answers 200 and keeps each request's headers (lower-case names) by task id."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                service.headers[headers.get("idempotency-key", "")] = headers
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def header_service() -> Iterator[HeaderService]:
    started = HeaderService()
    started.thread.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


def test_sampling_in_the_worker_follows_the_producer_and_the_trace_id_ratio(
    queue_name: str,
    sync_redis: redis.Redis,
    traced_worker: Callable[[str], Any],
    receiver: Receiver,
    header_service: HeaderService,
) -> None:
    """The worker's own provider at sample_ratio = 0.5 (the plugin's cheap path, fast.py): a new trace is recorded
    exactly when the ratio sampler's rule says so on its trace id, a producer's decision is followed, and a
    sampled-out attempt still sends its context, with the producer's tracestate and baggage, and records nothing."""
    otel = f'enabled = true\nendpoint = "{receiver.url}"\nsample_ratio = 0.5\nexport_interval = 0.2'
    proc = traced_worker(otel)
    sampled_in = "0af7651916cd43dd8448eb211c80319c"
    carried = {"tracestate": "vendor=x,other=y", "baggage": "tenant=acme"}
    tasks: list[dict[str, Any]] = [{"id": f"root-{n}", "url": header_service.url} for n in range(40)]
    tasks.append({"id": "out", "url": header_service.url, "trace": {"traceparent": TRACEPARENT[:-2] + "00", **carried}})
    tasks.append(
        {"id": "in", "url": header_service.url, "trace": {"traceparent": f"00-{sampled_in}-{PARENT_ID}-01", **carried}}
    )
    own = {"TraceParent": f"00-{'1' * 32}-{'2' * 16}-00"}  # a task's own context wins, sampled out or not
    tasks.append({"id": "own-root", "url": header_service.url, "headers": own})
    tasks.append({"id": "own-out", "url": header_service.url, "headers": own, "trace": tasks[40]["trace"]})
    sync_redis.rpush(queue_name, *(codec.dumps(task) for task in tasks))
    wait_finished(sync_redis, queue_name, [task["id"] for task in tasks])
    stop_cleanly(proc)
    spans = [span for _, span in receiver.found()]
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id.hex(), []).append(span)
    bound = round(0.5 * 2**64)
    recorded_roots = 0
    for task in tasks[:40]:
        sent_parent = header_service.headers[task["id"]]["traceparent"]
        assert is_traceparent(sent_parent), sent_parent  # sampled out or not: a W3C traceparent, ids of their size
        _, trace_id, span_id, flags = sent_parent.split("-")
        assert "tracestate" not in header_service.headers[task["id"]]
        sampled = int(trace_id, 16) & (2**64 - 1) < bound
        assert flags == ("03" if sampled else "02")  # sampled or not, and a random trace id (W3C level 2)
        if sampled:
            recorded_roots += 1
            [consumer, client] = sorted(by_trace[trace_id], key=lambda span: span.kind != Span.SPAN_KIND_CONSUMER)
            assert consumer.kind == Span.SPAN_KIND_CONSUMER and not consumer.parent_span_id
            assert client.span_id.hex() == span_id and client.parent_span_id == consumer.span_id
        else:
            assert trace_id not in by_trace
    assert 0 < recorded_roots < 40
    out = header_service.headers["out"]
    assert out["traceparent"].startswith(f"00-{TRACE_ID}-") and out["traceparent"].endswith("-00")
    assert out["traceparent"][36:52] != PARENT_ID  # the attempt's own span id
    assert out["tracestate"] == carried["tracestate"] and out["baggage"] == carried["baggage"]
    assert TRACE_ID not in by_trace
    inside = header_service.headers["in"]
    [consumer, client] = sorted(by_trace[sampled_in], key=lambda span: span.kind != Span.SPAN_KIND_CONSUMER)
    assert consumer.parent_span_id.hex() == PARENT_ID and client.parent_span_id == consumer.span_id
    assert inside["traceparent"] == f"00-{sampled_in}-{client.span_id.hex()}-01"
    assert inside["tracestate"] == carried["tracestate"] and inside["baggage"] == carried["baggage"]
    for name in ("own-root", "own-out"):
        sent = header_service.headers[name]
        assert sent["traceparent"] == own["TraceParent"] and "tracestate" not in sent
    assert header_service.headers["own-out"]["baggage"] == carried["baggage"]
    own_root = [span for span in spans if any(a.value.string_value == "own-root" for a in span.attributes)]
    assert len(spans) == 2 * (recorded_roots + 1 + len(own_root))  # (own-root: recorded or not, by its draw)


class LineExporter(SpanExporter):
    """Appends each exported span's name and the exporting process's id to a file, a line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            out.writelines(f"{span.name} {os.getpid()}\n" for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def ended_span(name: str) -> ReadableSpan:
    context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    return ReadableSpan(name=name, context=context)


def test_a_forked_child_exports_its_spans_from_a_thread_of_its_own(tmp_path: Path) -> None:
    """The export thread does not survive a fork: a child's first span starts the child's own (the processor is
    told by the fork, not by a process id compared per span), and what the child ends is exported without a flush."""
    lines = tmp_path / "exported"
    processor = BoundedProcessor(LineExporter(lines), OtelSettings(enabled=True, export_interval=0.05))
    processor.on_end(ended_span("in the parent"))
    wait_until(lambda: lines.exists() and "in the parent" in lines.read_text(), timeout=10)
    child = os.fork()
    if child == 0:  # the child: exit 0 once its span is exported by its own thread
        code = 1
        try:
            processor.on_end(ended_span("in the child"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "in the child" not in lines.read_text():
                time.sleep(0.02)
            code = 0 if f"in the child {os.getpid()}\n" in lines.read_text() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, lines.read_text()
    assert lines.read_text().count("in the parent") == 1
    processor.shutdown()
