"""The http task's optional parts against real loopback servers: header values from the environment, response
rules, egress pinning against a resolver the test controls, signed requests, and callbacks through a real worker."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gopherq.client import AsyncClient
from gopherq.core.errors import TaskRejected
from gopherq.core.executor import ExecutorEntry, run_attempt
from gopherq.core.settings import Settings
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpSettings
from gopherq.plugins.http.egress import EgressGuard, EgressSettings
from gopherq.plugins.signing import secret_key, sign
from tests.plugins.test_http_executor import context, last_request
from tests.support.common import async_wait_until
from tests.support.plugins import CaptureSink, SinkPlugin

SECRET = "whsec_" + base64.b64encode(b"callback-signing-key-0123456789").decode()


async def attempt(executor: HttpExecutor, envelope: dict[str, Any]) -> Any:
    entry = ExecutorEntry("http", executor, "http")
    task = task_from_dict({"id": "x1", **envelope})
    entry.validate(task)
    return await run_attempt(entry, task, context())


@pytest.fixture
async def executor() -> Any:
    executor = HttpExecutor(HttpSettings(signing_secret=SECRET), concurrency=4)
    yield executor
    await executor.close()


async def test_a_header_value_from_the_environment_is_read_at_send_time(
    http: HTTPServer, executor: HttpExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    http.expect_request("/env").respond_with_data("ok")
    envelope = {"url": http.url_for("/env"), "headers": {"Authorization": {"env": "GOPHERQ_TEST_PARTNER_TOKEN"}}}
    monkeypatch.delenv("GOPHERQ_TEST_PARTNER_TOKEN", raising=False)
    missing = await attempt(executor, envelope)
    assert missing.failure is not None and not missing.failure.retryable
    assert missing.failure.reason == "invalid_request"
    assert "GOPHERQ_TEST_PARTNER_TOKEN is not set" in missing.failure.message
    assert http.log == []  # nothing was sent
    monkeypatch.setenv("GOPHERQ_TEST_PARTNER_TOKEN", "Bearer s3cr3t")
    outcome = await attempt(executor, envelope)
    assert outcome.failure is None
    assert last_request(http).headers["Authorization"] == "Bearer s3cr3t"


async def test_response_rules_override_which_statuses_succeed_and_which_are_retried(
    http: HTTPServer, executor: HttpExecutor
) -> None:
    http.expect_request("/created").respond_with_data("", status=201)
    http.expect_request("/gone").respond_with_data("", status=404)
    http.expect_request("/conflict").respond_with_data("", status=409)
    only_200 = await attempt(executor, {"url": http.url_for("/created"), "success_status": [200]})
    assert only_200.failure is not None and only_200.failure.reason == "http_status"
    not_found_ok = await attempt(executor, {"url": http.url_for("/gone"), "success_status": ["200-299", 404]})
    assert not_found_ok.failure is None and not_found_ok.result["status_code"] == 404
    retried = await attempt(executor, {"url": http.url_for("/conflict"), "retry_status": ["409-409"]})
    assert retried.failure is not None and retried.failure.retryable
    settings = Settings()
    async with AsyncClient(settings) as client:
        with pytest.raises(Exception, match="success_status"):
            client.http("http://127.0.0.1/", success_status=["600-700"])


async def test_the_connection_goes_to_the_address_the_guard_checked_not_a_rebound_one(http: HTTPServer) -> None:
    http.expect_request("/pinned").respond_with_data("pinned")
    answers = [["127.0.0.1"], ["169.254.169.254"]]  # a rebinding DNS: the second answer points elsewhere
    lookups: list[str] = []

    async def lookup(host: str) -> list[str] | None:
        lookups.append(host)
        return answers[min(len(lookups), len(answers)) - 1]

    executor = HttpExecutor(HttpSettings(egress=EgressSettings(dns_cache_seconds=0)), concurrency=2)
    executor.guard = EgressGuard(EgressSettings(dns_cache_seconds=0), lookup=lookup)
    try:
        url = f"http://rebind.test:{http.port}/pinned"
        outcome = await attempt(executor, {"url": url})
        assert outcome.failure is None and outcome.result["body"] == "pinned"
        assert lookups == ["rebind.test"]  # resolved once: the connection used the checked address
        assert last_request(http).headers["Host"] == f"rebind.test:{http.port}"
        executor.guard.pinned.clear()  # a new connection later: the guard checks (and resolves) again first
        await executor.close()
        second = await attempt(executor, {"url": url})
        assert second.failure is not None and second.failure.reason == "egress_denied"
        assert len(http.log) == 1
    finally:
        await executor.close()


async def test_a_signed_request_carries_standard_webhooks_headers(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/signed").respond_with_data("ok")
    outcome = await attempt(
        executor, {"method": "POST", "url": http.url_for("/signed"), "body": {"a": 1}, "sign": True}
    )
    assert outcome.failure is None
    request = last_request(http)
    msg_id, stamp = request.headers["webhook-id"], int(request.headers["webhook-timestamp"])
    assert msg_id == "x1"
    assert request.headers["webhook-signature"] == sign(secret_key(SECRET), msg_id, stamp, request.get_data())
    unsigned = HttpExecutor(HttpSettings(), concurrency=1)
    with pytest.raises(TaskRejected, match=r"field 'sign' needs \[plugins.http\] signing_secret"):
        await attempt(unsigned, {"url": http.url_for("/signed"), "sign": True})  # refused: it could never be sent


async def test_callbacks_fire_once_per_task_end_and_are_signed(
    http: HTTPServer, make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    http.expect_request("/work").respond_with_data("done", headers={"Set-Cookie": "session=topsecret"})
    http.expect_request("/broken").respond_with_data("no", status=400)
    http.expect_request("/hook").respond_with_data("thanks")
    settings = make_settings(plugins={"http": {"signing_secret": SECRET}})
    sink = CaptureSink()
    await start_worker(settings, extra_plugins={"capture": SinkPlugin(sink)})
    hook = http.url_for("/hook")
    async with AsyncClient(settings) as client:
        ok = await client.enqueue_http(http.url_for("/work"), on_success=hook, on_failure=hook)
        bad = await client.enqueue_http(http.url_for("/broken"), on_success=hook, on_failure=hook)
        plain = await client.enqueue_http(http.url_for("/work"))
        late = {"id": "late", "url": http.url_for("/work"), "deadline": time.time() - 1, "on_failure": hook}
        await client.redis.rpush(settings.queue.name, json.dumps(late))  # raw: dead before it is validated
        for task_id in (f"{ok}.on_success", f"{bad}.on_failure", plain, "late.on_failure"):
            await client.wait(task_id, timeout=15)
    calls = [entry[0] for entry in http.log if entry[0].path == "/hook"]
    await async_wait_until(lambda: len(sink.named("task.succeeded")) >= 5, what="callbacks settled")
    assert len(calls) == 3  # one per task end; none for the task without callbacks
    bodies = {json.loads(call.get_data())["data"]["id"]: call for call in calls}
    assert json.loads(bodies["late"].get_data())["data"]["dead_reason"] == "deadline"
    bodies = {json.loads(call.get_data())["type"]: call for call in calls if b'"late"' not in call.get_data()}
    success, failure = bodies["task.succeeded"], bodies["task.failed"]
    assert json.loads(success.get_data())["data"]["id"] == ok
    assert json.loads(failure.get_data())["data"]["dead_reason"] == "non_retryable"
    assert b"topsecret" not in success.get_data()  # the result record is masked (Set-Cookie)
    for call in calls:
        msg_id, stamp = call.headers["webhook-id"], int(call.headers["webhook-timestamp"])
        assert call.headers["webhook-signature"] == sign(secret_key(SECRET), msg_id, stamp, call.get_data())
    assert {call.headers["webhook-id"] for call in calls} == {
        f"{ok}.on_success",
        f"{bad}.on_failure",
        "late.on_failure",
    }
