"""The webhook sink against a real loopback HTTP server: Standard Webhooks signatures (checked with the
independent `standardwebhooks` package), retries with backoff and Retry-After, 410 Gone, refused batches,
a bounded buffer that drops the oldest events, endpoints that cannot delay each other, and its settings."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from gopherq import AsyncClient, ConfigError, Settings
from gopherq.core.events import EventBus
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import load_settings
from gopherq.plugins.webhook_sink import WebhookEndpoint, WebhookEndpointSink, sign
from gopherq.testing import PluginHarness, make_event
from tests.support.plugins import ExecutorPlugin, NoopExecutor

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["data"]["events"])


class Receiver:
    """A loopback HTTP server that records every request and answers from a script of (status, headers);
    while `hold` is clear, requests wait (an endpoint that is up but never answers)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        self.default = (200, {})
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        Received(time.time(), {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status, headers = receiver.script.popleft() if receiver.script else receiver.default
                receiver.hold.wait(30)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def respond(self, *responses: int | tuple[int, dict[str, str]]) -> None:
        for response in responses:
            self.script.append(response if isinstance(response, tuple) else (response, {}))

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def receiver2() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def harness(*endpoints: dict[str, Any]) -> PluginHarness:
    return PluginHarness(settings={"plugins": {"webhook": {"endpoints": list(endpoints)}}})


def task_ids(requests: list[Received]) -> list[str]:
    return [event["task_id"] for request in requests for event in request.events]


# -- signatures ------------------------------------------------------------------------------------------------


async def test_requests_are_signed_per_standard_webhooks(receiver: Receiver) -> None:
    await harness({"url": receiver.url, "secret": SECRET, "batch_size": 2}).deliver(
        *(make_event("task.succeeded", task_id=f"t{i}") for i in range(3))
    )
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert payload["type"] == "gopherq.events"
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["content-type"] == "application/json"
    assert task_ids(receiver.requests) == ["t0", "t1", "t2"]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 2


async def test_a_tampered_body_a_stale_timestamp_and_a_wrong_secret_fail_verification(receiver: Receiver) -> None:
    await harness({"url": receiver.url, "secret": SECRET}).deliver(make_event("task.failed", task_id="t1"))
    request = receiver.requests[0]
    Webhook(SECRET).verify(request.body, request.headers)  # the genuine request verifies
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b'"t1"', b'"t2"'), request.headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.body, request.headers)
    # A correctly signed message with a timestamp ten minutes old is refused as a replay...
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    old = int(time.time()) - 600
    stale = {**request.headers, "webhook-timestamp": str(old)}
    stale["webhook-signature"] = sign(key, stale["webhook-id"], old, request.body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(request.body, stale)
    # ...and the timestamp is covered by the signature: moving it invalidates the request.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body, {**request.headers, "webhook-timestamp": str(int(time.time()) + 1)})


async def test_without_a_secret_requests_carry_id_and_timestamp_but_no_signature(receiver: Receiver) -> None:
    await harness({"url": receiver.url, "headers": {"Authorization": "Bearer abc"}}).deliver("task.started")
    headers = receiver.requests[0].headers
    assert "webhook-signature" not in headers and headers["webhook-id"] and headers["webhook-timestamp"]
    assert headers["authorization"] == "Bearer abc"


# -- delivery --------------------------------------------------------------------------------------------------


async def test_failures_are_retried_with_the_same_id_and_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.respond(500, (503, {"Retry-After": "1"}), 200)
    h = harness({"url": receiver.url, "secret": SECRET, "retry_min": 0.01, "retry_max": 0.05})
    stats = await h.deliver(make_event("task.failed", task_id="t1"))
    _, second, third = receiver.requests
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:  # every attempt is signed afresh
        Webhook(SECRET).verify(request.body, request.headers)
    assert third.at - second.at >= 0.95  # Retry-After: 1, although the backoff alone would be at most 0.05s
    assert stats["webhook:1"]["sent"] == 1 and stats["webhook:1"]["retries"] == 2
    assert stats["webhook:1"]["requests"] == 3


async def test_a_batch_is_dropped_and_counted_after_max_attempts(receiver: Receiver) -> None:
    receiver.default = (502, {})
    h = harness({"url": receiver.url, "max_attempts": 3, "retry_min": 0.01, "retry_max": 0.02})
    stats = await h.deliver("task.started", "task.succeeded")
    assert len(receiver.requests) == 3
    assert stats["webhook:1"]["gave_up"] == 2 and stats["webhook:1"]["sent"] == 0


async def test_a_refused_batch_is_not_retried_and_the_next_one_is_sent(receiver: Receiver) -> None:
    receiver.respond(400)
    h = harness({"url": receiver.url, "batch_size": 1, "retry_min": 0.01})
    stats = await h.deliver(make_event("task.started", task_id="a"), make_event("task.started", task_id="b"))
    assert task_ids(receiver.requests) == ["a", "b"]
    assert stats["webhook:1"]["rejected"] == 1 and stats["webhook:1"]["sent"] == 1


async def test_410_gone_switches_the_endpoint_off_with_an_error_log(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.respond(410)
    h = harness({"url": receiver.url, "batch_size": 1})
    with caplog.at_level(logging.ERROR, logger="gopherq.plugins.webhook_sink"):
        stats = await h.deliver(*(make_event("task.started", task_id=f"t{i}") for i in range(5)))
        await h.deliver("task.succeeded")
    assert len(receiver.requests) == 1
    assert stats["webhook:1"]["gone"] is True and stats["webhook:1"]["discarded"] == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "answered 410 Gone: no more events will be sent" in errors[0].getMessage()


async def test_a_full_buffer_drops_the_oldest_events_and_never_blocks(receiver: Receiver) -> None:
    receiver.hold.clear()
    config = WebhookEndpoint(url=receiver.url, buffer_size=5, batch_size=1)
    bus = EventBus()
    channel = bus.add_sink("webhook:slow", WebhookEndpointSink("webhook:slow", config), ["*"], 5, 1)
    bus.start()
    for i in range(100):  # synchronous: the emitter cannot wait on the sink
        bus.emit("task.succeeded", task_id=f"t{i:02d}")
    assert channel.dropped == 95 and len(channel.buffer) == 5
    await asyncio.sleep(0.2)  # the sink takes its first batch and hangs on the held endpoint
    for i in range(100, 110):
        bus.emit("task.succeeded", task_id=f"t{i:03d}")
    assert channel.dropped == 95 + 10 - 1  # one slot was freed by the batch in flight
    receiver.hold.set()
    await bus.close(10)
    assert task_ids(receiver.requests) == ["t95", "t105", "t106", "t107", "t108", "t109"]
    assert bus.stats()["webhook:slow"]["dropped"] == 104


async def test_a_hanging_endpoint_does_not_delay_another(receiver: Receiver, receiver2: Receiver) -> None:
    receiver.hold.clear()
    h = harness({"url": receiver.url, "name": "stuck", "timeout": 30}, {"url": receiver2.url, "name": "fine"})
    bus = EventBus()
    h.plugins.attach_sinks(bus)
    bus.start()
    for i in range(3):
        bus.emit("task.succeeded", task_id=f"t{i}")
    deadline = time.monotonic() + 10
    while len(task_ids(receiver2.requests)) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert task_ids(receiver2.requests) == ["t0", "t1", "t2"]
    assert len(receiver.requests) == 1 and not receiver.hold.is_set()  # still hanging meanwhile
    receiver.hold.set()
    await bus.close(10)
    assert task_ids(receiver.requests) == ["t0", "t1", "t2"]


async def test_each_endpoint_has_its_own_event_filter(receiver: Receiver, receiver2: Receiver) -> None:
    h = harness(
        {"url": receiver.url, "events": ["task.failed", "task.dead_lettered"]},
        {"url": receiver2.url, "events": ["task.*", "!task.started"]},
    )
    await h.deliver("task.started", "task.failed", "task.succeeded", "worker.started")
    assert [e["event"] for r in receiver.requests for e in r.events] == ["task.failed"]
    assert [e["event"] for r in receiver2.requests for e in r.events] == ["task.failed", "task.succeeded"]


# -- settings --------------------------------------------------------------------------------------------------


def webhook_settings(environ: dict[str, str] | None = None, **table: Any) -> Settings:
    settings = load_settings(None, {"plugins": {"webhook": table}} if table else {}, environ=environ or {})
    load_plugins(settings, sinks=True)
    return settings


def test_no_endpoints_or_a_disabled_one_registers_no_sink() -> None:
    assert not [name for name in load_plugins(webhook_settings(), sinks=True).sinks if name.startswith("webhook")]
    settings = load_settings(
        None, {"plugins": {"webhook": {"endpoints": [{"url": "http://127.0.0.1:9/x", "enabled": False}]}}}, environ={}
    )
    assert "webhook:1" not in load_plugins(settings, sinks=True).sinks


def test_a_bad_secret_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        webhook_settings(endpoints=[{"url": "http://127.0.0.1:9/x", "secret": "whsec_not base64!"}])
    assert str(caught.value) == (
        "settings: plugins.webhook.endpoints.0.secret: Value error, must be 'whsec_' followed by a base64 key "
        "(e.g. whsec_MfKQ9r8...)"
    )


def test_endpoint_names_must_be_unique_and_urls_absolute() -> None:
    with pytest.raises(ConfigError, match="two endpoints are named 'a'"):
        webhook_settings(endpoints=[{"url": "http://127.0.0.1:9/x", "name": "a"}, {"url": "http://h/", "name": "a"}])
    with pytest.raises(ConfigError, match=r"endpoints.0.url: Value error, must be an absolute http"):
        webhook_settings(endpoints=[{"url": "/relative"}])


def test_secrets_are_masked_and_endpoints_can_come_from_the_environment() -> None:
    endpoints = [{"url": "http://127.0.0.1:9/x", "secret": SECRET, "headers": {"Authorization": "Bearer xyz"}}]
    settings = webhook_settings({"GOPHERQ_PLUGINS__WEBHOOK__ENDPOINTS": json.dumps(endpoints)})
    shown = settings.redacted()["plugins"]["webhook"]["endpoints"][0]
    assert shown["secret"] == "**********" and shown["headers"] == {"Authorization": "**********"}
    assert SECRET not in json.dumps(settings.redacted()) and "xyz" not in json.dumps(settings.redacted())
    assert settings.plugin("webhook").endpoints[0].url == "http://127.0.0.1:9/x"


# -- on a real worker ------------------------------------------------------------------------------------------


def noop_plugin() -> dict[str, Any]:
    return {"noop": ExecutorPlugin("noop", NoopExecutor())}


async def test_a_worker_posts_signed_task_events(receiver: Receiver, make_settings: Any, start_worker: Any) -> None:
    endpoint = {"url": receiver.url, "secret": SECRET, "events": ["task.succeeded"]}
    settings: Settings = make_settings(plugins={"webhook": {"endpoints": [endpoint]}})
    await start_worker(settings, extra_plugins=noop_plugin())
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=noop_plugin())) as client:
        task_id = await client.enqueue("noop")
        assert (await client.wait(task_id, timeout=15)) is not None
    deadline = time.monotonic() + 10
    while task_id not in task_ids(receiver.requests) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    request = next(r for r in receiver.requests if task_id in task_ids([r]))
    event = Webhook(SECRET).verify(request.body, request.headers)["data"]["events"][0]
    assert (event["event"], event["task_type"], event["queue"]) == ("task.succeeded", "noop", settings.queue.name)


async def test_a_worker_whose_endpoint_never_answers_still_runs_every_task(
    receiver: Receiver, make_settings: Any, start_worker: Any
) -> None:
    receiver.hold.clear()
    endpoint = {"url": receiver.url, "timeout": 30, "buffer_size": 10, "batch_size": 1}
    settings: Settings = make_settings(plugins={"webhook": {"endpoints": [endpoint]}})
    running = await start_worker(settings, extra_plugins=noop_plugin())
    async with AsyncClient(settings, plugins=load_plugins(settings, extra=noop_plugin())) as client:
        ids = await client.enqueue_many([client.task("noop") for _ in range(200)])
        for task_id in ids:
            record = await client.wait(task_id, timeout=20)
            assert record is not None and record.status.value == "succeeded"
    assert len(receiver.requests) == 1  # the one request in flight is still hanging
    stats = running.worker.bus.stats()["webhook:1"]
    assert stats["dropped"] >= 200 * 3 - 10 - 1 - 10  # task.dequeued/started/succeeded per task; bounded buffer
    receiver.hold.set()


def test_the_table_of_a_disabled_plugin_is_not_printed() -> None:
    endpoints = [{"url": "http://127.0.0.1:9/x", "secret": SECRET}]
    settings = load_settings(
        None, {"plugins": {"disable": ["webhook"], "webhook": {"endpoints": endpoints}}}, environ={}
    )
    manager = load_plugins(settings, sinks=True)
    assert "webhook" not in manager.info
    assert SECRET not in json.dumps(settings.redacted())
    assert settings.redacted()["plugins"]["webhook"] == "(ignored: the plugin is not loaded)"
