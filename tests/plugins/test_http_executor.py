"""The HTTP executor against a real HTTP server on loopback: requests, responses, failures and their reasons.

The first part runs single attempts through `run_attempt` (the worker's execution path); the second runs a real
worker on a real Redis and reads the result records it stores.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gopherq import AsyncClient, RetryTask, Settings, TaskRejected, TaskStatus
from gopherq.core.executor import AttemptOutcome, ExecutionContext, ExecutorEntry, run_attempt
from gopherq.core.keys import QueueKeys
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpPayload, HttpSettings
from tests.support.common import async_wait_until


@pytest.fixture
def hang(http: HTTPServer) -> Iterator[Callable[[str], None]]:
    """`hang(path)` makes requests to `path` wait until the test ends (the client gives up first)."""
    release = threading.Event()

    def handler(request: Request) -> Response:
        release.wait(10)
        return Response("late")

    def install(path: str) -> None:
        http.expect_request(path).respond_with_handler(handler)

    yield install
    release.set()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["native", "aiohttp", "httpx"])
async def executor(request: pytest.FixtureRequest) -> Any:
    """The executor on each transport: every single-attempt test must pass on both."""
    executor = HttpExecutor(HttpSettings(transport=request.param), concurrency=4)
    await executor.open()
    yield executor
    await executor.close()


def context(timeout: float = 5.0) -> ExecutionContext:
    return ExecutionContext(
        worker_id="test",
        queue="q",
        attempt=1,
        max_attempts=1,
        timeout=timeout,
        deadline=None,
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
    )


async def attempt(executor: HttpExecutor, envelope: dict[str, Any], timeout: float = 5.0) -> AttemptOutcome:
    entry = ExecutorEntry("http", executor, "http")
    task = task_from_dict({"id": "task001", **envelope})
    entry.validate(task)
    return await run_attempt(entry, task, context(timeout))


def last_request(http: HTTPServer) -> Request:
    assert http.log, "the server received no request"
    return http.log[-1][0]


# -- single attempts ------------------------------------------------------------------------------------------


async def test_seed_get_with_headers(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/hello", method="GET").respond_with_data("hi there", headers={"X-Reply": "yes"})
    outcome = await attempt(
        executor, {"method": "GET", "url": http.url_for("/hello"), "header": {"X-Custom-Header": "GoPherQTest"}}
    )
    assert outcome.failure is None
    result = outcome.result
    assert result["status_code"] == 200
    assert result["body"] == "hi there"
    assert result["headers"]["x-reply"] == "yes"
    assert result["elapsed"] >= 0
    request = last_request(http)
    assert request.headers["X-Custom-Header"] == "GoPherQTest"
    assert request.headers["Idempotency-Key"] == "task001"


async def test_post_text_body(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/post", method="POST").respond_with_data("created", status=201)
    outcome = await attempt(
        executor,
        {"method": "POST", "url": http.url_for("/post"), "headers": {"Content-Type": "text/plain"}, "body": "a=b"},
    )
    assert outcome.failure is None
    assert outcome.result["status_code"] == 201
    request = last_request(http)
    assert request.get_data() == b"a=b"
    assert request.headers["Content-Type"] == "text/plain"


async def test_json_body(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/json", method="PUT").respond_with_json({"ok": True})
    outcome = await attempt(executor, {"method": "PUT", "url": http.url_for("/json"), "body": {"n": [1, 2]}})
    assert outcome.failure is None
    assert json.loads(outcome.result["body"]) == {"ok": True}
    request = last_request(http)
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.get_data()) == {"n": [1, 2]}


async def test_empty_body_sends_no_content(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/empty", method="POST").respond_with_data("")
    outcome = await attempt(executor, {"method": "POST", "url": http.url_for("/empty"), "body": ""})
    assert outcome.failure is None
    assert last_request(http).get_data() == b""


async def test_task_idempotency_key_wins(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/idem").respond_with_data("ok")
    await attempt(executor, {"url": http.url_for("/idem"), "headers": {"idempotency-key": "mine"}})
    assert last_request(http).headers.getlist("Idempotency-Key") == ["mine"]


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_client_error_fails_without_retry(http: HTTPServer, executor: HttpExecutor, status: int) -> None:
    http.expect_request("/missing").respond_with_data("nope", status=status)
    outcome = await attempt(executor, {"url": http.url_for("/missing")})
    failure = outcome.failure
    assert failure is not None
    assert failure.reason == "http_status"
    assert not failure.retryable
    assert f"HTTP {status}" in failure.message
    assert failure.details["status_code"] == status
    assert failure.details["body"] == "nope"


async def test_server_error_is_retried_after_retry_after(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/busy").respond_with_data("later", status=503, headers={"Retry-After": "7"})
    outcome = await attempt(executor, {"url": http.url_for("/busy")})
    assert isinstance(outcome.failure, RetryTask)
    assert outcome.failure.reason == "http_status"
    assert outcome.failure.delay == 7.0


async def test_timeout(hang: Callable[[str], None], http: HTTPServer, executor: HttpExecutor) -> None:
    hang("/slow")
    outcome = await attempt(executor, {"url": http.url_for("/slow")}, timeout=0.3)
    assert outcome.failure is not None
    assert outcome.failure.reason == "timeout"
    assert outcome.failure.retryable


async def test_connection_refused(closed_port: int, executor: HttpExecutor) -> None:
    outcome = await attempt(executor, {"url": f"http://127.0.0.1:{closed_port}/"})
    assert outcome.failure is not None
    assert outcome.failure.reason == "connect_error"
    assert outcome.failure.retryable


async def test_redirects_are_not_followed_unless_asked(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/old").respond_with_data("", status=302, headers={"Location": http.url_for("/new")})
    http.expect_request("/new").respond_with_data("moved here")
    outcome = await attempt(executor, {"url": http.url_for("/old")})
    assert outcome.failure is not None and outcome.failure.details["status_code"] == 302
    assert [entry[0].path for entry in http.log] == ["/old"]
    outcome = await attempt(executor, {"url": http.url_for("/old"), "follow_redirects": True})
    assert outcome.failure is None
    assert outcome.result["body"] == "moved here"


async def test_body_is_capped_at_64_kib_by_default(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/big").respond_with_data("x" * 100_000)
    outcome = await attempt(executor, {"url": http.url_for("/big")})
    assert outcome.result["body"] == "x" * 65536
    assert outcome.result["body_truncated"] is True


async def test_body_limit_setting(http: HTTPServer) -> None:
    """A small body (read at once) and a large one (streamed; reading stops at the limit and that connection is
    dropped) are both cut at body_limit, and the next request on the same executor still works."""
    http.expect_request("/big").respond_with_data("abcdefghij" * 10)
    http.expect_request("/huge").respond_with_data("b" * 200_000)
    http.expect_request("/small").respond_with_data("abc")
    executor = HttpExecutor(HttpSettings(body_limit=10), concurrency=1)
    try:
        big = await attempt(executor, {"url": http.url_for("/big")})
        huge = await attempt(executor, {"url": http.url_for("/huge")})
        small = await attempt(executor, {"url": http.url_for("/small")})
    finally:
        await executor.close()
    assert big.result["body"] == "abcdefghij"
    assert big.result["body_truncated"] is True
    assert huge.result["body_truncated"] is True and huge.result["body"] == "b" * 10
    assert small.result["body"] == "abc"
    assert "body_truncated" not in small.result


async def test_binary_body_is_kept_as_base64(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/bin").respond_with_data(b"\xff\xfe\x00", content_type="application/octet-stream")
    outcome = await attempt(executor, {"url": http.url_for("/bin")})
    assert outcome.result["body_base64"] == "//4A"
    assert "body" not in outcome.result


async def test_one_client_is_shared_by_every_task(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/a").respond_with_data("a")
    client = executor.client
    assert client is not None
    for _ in range(3):
        await attempt(executor, {"url": http.url_for("/a")})
    assert executor.client is client


async def test_gzip_body_is_decoded(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/gz").respond_with_data(
        gzip.compress(b"squeezed" * 10), headers={"Content-Encoding": "gzip"}, content_type="text/plain"
    )
    outcome = await attempt(executor, {"url": http.url_for("/gz")})
    assert outcome.result["body"] == "squeezed" * 10
    assert outcome.result["headers"]["content-encoding"] == "gzip"


async def test_chunked_and_large_bodies_are_read_in_full(http: HTTPServer, executor: HttpExecutor) -> None:
    """Bodies without a Content-Length, and bodies past the transport's read-at-once size, are streamed."""
    http.expect_request("/chunked").respond_with_response(Response(iter([b"one,", b"two,", b"three"])))
    http.expect_request("/large").respond_with_data("y" * 60_000 + "z" * 5_000)
    chunked = await attempt(executor, {"url": http.url_for("/chunked")})
    assert chunked.result["body"] == "one,two,three"
    assert chunked.result["headers"]["transfer-encoding"] == "chunked"
    large = await attempt(executor, {"url": http.url_for("/large")})
    assert large.result["body"] == "y" * 60_000 + "z" * 5_000
    assert "body_truncated" not in large.result


async def test_repeated_response_headers_are_joined(http: HTTPServer, executor: HttpExecutor) -> None:
    reply = Response("ok")
    reply.headers.add("X-Many", "a")
    reply.headers.add("X-Many", "b")
    http.expect_request("/many").respond_with_response(reply)
    outcome = await attempt(executor, {"url": http.url_for("/many")})
    assert outcome.result["headers"]["x-many"] == "a, b"


async def test_a_dropped_connection_is_a_retried_request_error(executor: HttpExecutor) -> None:
    """A server that closes the connection without answering: retried, with the reason `request_error`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept_and_close() -> None:
        with contextlib.suppress(OSError):  # the listener is closed under it when the test ends
            for _ in range(2):  # a client may retry once on a fresh connection
                conn, _ = listener.accept()
                conn.recv(65536)
                conn.close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        outcome = await attempt(executor, {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/"})
    finally:
        listener.close()
    assert outcome.failure is not None
    assert outcome.failure.retryable
    assert outcome.failure.reason == "request_error"


# -- through a worker: results stored in Redis ---------------------------------------------------------------


async def test_worker_runs_http_tasks_and_stores_their_results(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    http: HTTPServer,
    hang: Callable[[str], None],
    closed_port: int,
    aredis: aioredis.Redis,
) -> None:
    http.expect_request("/get", method="GET").respond_with_data("got")
    http.expect_request("/post", method="POST").respond_with_data("posted", status=201)
    http.expect_request("/json", method="POST").respond_with_json({"echo": True})
    http.expect_request("/404").respond_with_data("no", status=404)
    hang("/slow")
    settings = make_settings(queue={"max_attempts": 1, "result_ttl": 300})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        tasks = {
            "get": client.http(http.url_for("/get"), headers={"X-Custom-Header": "GoPherQTest"}),
            "post": client.http(http.url_for("/post"), "POST", body="hello"),
            "json": client.http(http.url_for("/json"), "POST", body={"a": 1}),
            "404": client.http(http.url_for("/404")),
            "slow": client.http(http.url_for("/slow"), timeout=0.3),
            "refused": client.http(f"http://127.0.0.1:{closed_port}/"),
        }
        await client.enqueue_many(tasks.values())
        records = {name: await client.wait(task.id, 15) for name, task in tasks.items()}

    for name, record in records.items():
        assert record is not None and record.status.final, name
    assert records["get"].status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
    assert records["get"].result["body"] == "got"  # type: ignore[union-attr]
    assert records["post"].result["status_code"] == 201  # type: ignore[union-attr]
    assert json.loads(records["json"].result["body"]) == {"echo": True}  # type: ignore[union-attr]
    expected_failures = {"404": "http_status", "slow": "timeout", "refused": "connect_error"}
    for name, reason in expected_failures.items():
        record = records[name]
        assert record is not None and record.status is TaskStatus.FAILED, name
        assert record.error is not None and record.error.reason == reason, (name, record.error)
    assert records["404"].error.details["status_code"] == 404  # type: ignore[union-attr]

    received = {request.path: request for request, _ in http.log}
    assert received["/get"].headers["X-Custom-Header"] == "GoPherQTest"
    assert received["/get"].headers["Idempotency-Key"] == tasks["get"].id
    assert received["/post"].get_data() == b"hello"
    assert json.loads(received["/json"].get_data()) == {"a": 1}
    keys = QueueKeys(settings.queue.name)
    assert 0 < await aredis.ttl(keys.result(tasks["get"].id)) <= 300


async def test_result_records_expire_after_result_ttl(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], http: HTTPServer
) -> None:
    http.expect_request("/ttl").respond_with_data("ok")
    settings = make_settings(queue={"result_ttl": 1})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue_http(http.url_for("/ttl"))
        record = await client.wait(task_id, 10)
        assert record is not None and record.status is TaskStatus.SUCCEEDED

        async def expired() -> bool:
            return await client.result(task_id) is None

        await async_wait_until(expired, timeout=5, interval=0.1, what="the result record to expire")


# -- requests that cannot be built (issue 13) ------------------------------------------------------------------


async def test_url_userinfo_is_sent_as_basic_auth_on_both_transports(http: HTTPServer, executor: HttpExecutor) -> None:
    http.expect_request("/private").respond_with_data("in")
    url = http.url_for("/private").replace("://", "://user:p%40ss@", 1)
    outcome = await attempt(executor, {"url": url, "headers": {"Cookie": "sid=c"}})
    assert outcome.failure is None, outcome.failure
    request = last_request(http)
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert request.headers["Cookie"] == "sid=c"


async def test_a_redirect_to_an_unsupported_scheme_fails_at_once_as_invalid_request(
    http: HTTPServer, executor: HttpExecutor
) -> None:
    http.expect_request("/away").respond_with_data("", status=302, headers={"Location": "ftp://127.0.0.1/file"})
    outcome = await attempt(executor, {"url": http.url_for("/away"), "follow_redirects": True})
    failure = outcome.failure
    assert failure is not None and failure.reason == "invalid_request", failure
    assert not failure.retryable
    assert "\n" not in failure.message and "the request cannot be sent" in failure.message
    assert "traceback" not in failure.details


async def test_a_request_validation_did_not_foresee_fails_at_once_as_invalid_request(
    http: HTTPServer, executor: HttpExecutor
) -> None:
    """Whatever slips past validation (here a payload built without it) and makes the request unbuildable is a
    permanent failure naming the problem, never a retried `exception`; nothing is sent."""
    entry = ExecutorEntry("http", executor, "http")
    task = task_from_dict({"id": "task002"})
    url = http.url_for("/never")
    for headers in ({"X-A": "v\r\nX-Injected: 1"}, {"X-A": "caf\u00e9"}):
        task.payload = HttpPayload.model_construct(method="GET", url=url, headers=headers, body=None)
        outcome = await run_attempt(entry, task, context())
        failure = outcome.failure
        assert failure is not None and failure.reason == "invalid_request", (headers, failure)
        assert not failure.retryable and "\n" not in failure.message
    assert not http.log, "nothing reached the server"


async def test_credentials_in_the_url_and_an_authorization_header_are_refused_at_enqueue_and_by_the_worker(
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    http: HTTPServer,
    aredis: aioredis.Redis,
) -> None:
    http.expect_request("/x").respond_with_data("ok")
    url = http.url_for("/x").replace("://", "://user:pw@", 1) + "?token=t"
    headers = {"Authorization": "Bearer abc", "Cookie": "sid=c"}
    settings = make_settings()
    async with AsyncClient(settings) as client:
        with pytest.raises(TaskRejected) as refused:
            await client.enqueue_http(url, headers=headers)
        assert refused.value.reason == "schema_invalid"
        assert "has credentials (user:password@) and the task also sets an Authorization header" in str(refused.value)
        await start_worker(settings)
        raw = json.dumps({"id": "both", "url": url, "headers": headers})
        await aredis.rpush(settings.queue.name, raw)
        record = await client.wait("both", 15)
    assert record is not None and record.status is TaskStatus.FAILED
    assert record.error is not None and (record.error.reason, record.dead_reason) == ("schema_invalid",) * 2
    assert not http.log, "nothing was sent"


async def test_a_redirect_to_an_unsupported_scheme_is_dead_lettered_after_one_attempt(
    make_settings: Callable[..., Settings], start_worker: Callable[..., Any], http: HTTPServer
) -> None:
    http.expect_request("/away").respond_with_data("", status=302, headers={"Location": "ftp://127.0.0.1/file"})
    settings = make_settings(queue={"max_attempts": 5})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        task_id = await client.enqueue("http", url=http.url_for("/away"), follow_redirects=True)
        record = await client.wait(task_id, 15)
        entries = await client.dead_letters.list()
    assert record is not None and record.status is TaskStatus.FAILED and record.attempts == 1
    assert record.error is not None and record.error.reason == "invalid_request"
    assert record.dead_reason == "non_retryable"
    [entry] = entries
    assert entry["reason"] == "non_retryable" and "traceback" not in entry["error"].get("details", {})
