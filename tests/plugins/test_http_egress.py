"""The HTTP executor's egress guard and per-host limit, against real loopback servers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gopherq import ConfigError, load_settings
from gopherq.core.executor import ExecutorEntry, run_attempt
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpSettings
from gopherq.plugins.http.egress import EgressGuard, EgressSettings
from tests.plugins.test_http_executor import context


async def attempt(settings: HttpSettings, url: str, **fields: Any) -> Any:
    executor = HttpExecutor(settings, concurrency=20)
    await executor.open()
    try:
        entry = ExecutorEntry("http", executor, "http")
        task = task_from_dict({"id": "egress-1", "url": url, **fields})
        entry.validate(task)
        return await run_attempt(entry, task, context())
    finally:
        await executor.close()


async def test_default_guard_allows_loopback_and_denies_link_local(http: HTTPServer) -> None:
    http.expect_request("/ok").respond_with_data("fine")
    outcome = await attempt(HttpSettings(), http.url_for("/ok"))
    assert outcome.failure is None and outcome.result["status_code"] == 200

    denied = await attempt(HttpSettings(), "http://169.254.169.254/latest/meta-data/")
    assert denied.failure is not None
    assert denied.failure.reason == "egress_denied" and not denied.failure.retryable
    assert "169.254.0.0/16" in denied.failure.message


async def test_denied_network_is_never_called(http: HTTPServer) -> None:
    http.expect_request("/secret").respond_with_data("should not be reached")
    settings = HttpSettings(egress=EgressSettings(deny_private=True))
    outcome = await attempt(settings, http.url_for("/secret"))
    assert outcome.failure is not None and outcome.failure.reason == "egress_denied"
    assert "127.0.0.1 is not a public address: 127.0.0.0/8 is loopback" in outcome.failure.message
    assert http.log == []


async def test_allow_list_and_redirect_hops_are_checked(http: HTTPServer) -> None:
    http.expect_request("/hop").respond_with_data("", status=302, headers={"Location": "http://127.0.0.2:9/x"})
    settings = HttpSettings(egress=EgressSettings(allow=["127.0.0.1/32"]))
    outcome = await attempt(settings, http.url_for("/hop"), follow_redirects=True)
    assert outcome.failure is not None and outcome.failure.reason == "egress_denied"
    assert "127.0.0.2 is outside the allowed networks" in outcome.failure.message
    assert len(http.log) == 1  # the first hop was allowed and made


async def test_names_are_resolved_before_the_check() -> None:
    guard = EgressGuard(EgressSettings(deny=["127.0.0.0/8", "::1/128"]))
    with pytest.raises(Exception, match="egress denied for host localhost"):
        await guard.check("localhost")
    assert guard.refusal(__import__("ipaddress").ip_address("::ffff:127.0.0.1")) is not None


def test_bad_network_in_settings_is_a_one_line_error(tmp_path: Any) -> None:
    config = tmp_path / "gopherq.toml"
    config.write_text('[plugins.http.egress]\ndeny = ["10.0.0.0/8", "not-a-net"]\n')
    settings = load_settings(config, environ={})
    from gopherq.core.plugins import load_plugins

    with pytest.raises(ConfigError, match=r"plugins\.http\.egress\.deny.*'not-a-net' is not an IP network"):
        load_plugins(settings)


async def test_per_host_limit_caps_requests_in_flight(http: HTTPServer) -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    release = threading.Event()

    def handler(request: Request) -> Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        release.wait(0.2)
        with lock:
            state["now"] -= 1
        return Response("ok")

    http.expect_request("/slow").respond_with_handler(handler)
    executor = HttpExecutor(HttpSettings(per_host_limit=2), concurrency=20)
    await executor.open()
    try:
        entry = ExecutorEntry("http", executor, "http")
        tasks = []
        for n in range(8):
            task = task_from_dict({"id": f"t{n}", "url": http.url_for("/slow")})
            entry.validate(task)
            tasks.append(run_attempt(entry, task, context()))
        outcomes = await asyncio.gather(*tasks)
    finally:
        await executor.close()
    assert all(o.failure is None for o in outcomes)
    assert state["peak"] == 2


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
async def test_both_transports_classify_outcomes_alike(http: HTTPServer, transport: str) -> None:
    """Every transport gives the same results and failure reasons."""
    import socket

    http.expect_request("/ok").respond_with_data("fine", headers={"X-Reply": "1"})
    http.expect_request("/gone").respond_with_data("no", status=404)
    http.expect_request("/moved").respond_with_data("", status=303, headers={"Location": "/ok"})
    settings = HttpSettings(transport=transport)
    ok = await attempt(settings, http.url_for("/ok"), headers={"X-A": "b"})
    assert ok.failure is None and ok.result["status_code"] == 200 and ok.result["body"] == "fine"
    assert ok.result["headers"]["x-reply"] == "1"
    moved = await attempt(settings, http.url_for("/moved"), method="POST", body="x", follow_redirects=True)
    assert moved.failure is None and moved.result["body"] == "fine"
    assert http.log[-1][0].method == "GET"  # 303 turns the POST into a GET
    gone = await attempt(settings, http.url_for("/gone"))
    assert gone.failure is not None and gone.failure.reason == "http_status" and not gone.failure.retryable
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = await attempt(settings, f"http://127.0.0.1:{port}/")
    assert refused.failure is not None and refused.failure.reason == "connect_error"
