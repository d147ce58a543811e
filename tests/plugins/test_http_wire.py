"""The executor's own request and answer records (plugins/http/wire.py) agree with httpx, which they replace on
the hot path: a URL means what httpx says it means, response headers read as httpx reads them, and no framing
or hop-by-hop header reaches the wire; a plugin still adds its outgoing headers (the tracing seam) on both
transports."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

import httpx
import pytest
from pytest_httpserver import HTTPServer

from gopherq.core.executor import ExecutionContext, ExecutorEntry, run_attempt
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpSettings
from gopherq.plugins.http.checks import PLAIN_URL, _url_problem, check_url
from gopherq.plugins.http.wire import Outgoing, decode_headers, framed_headers, target

PLAIN = [
    "http://127.0.0.1:8080/t/1",
    "https://api.example.com/v1/items?limit=10&cursor=abc",
    "http://example.com/a/b;c=d/e:f@g!$'()*+,~",
    "http://h_1.example.com:9999/?x=/y?z",
    "http://localhost/",
]
URLS = [
    *PLAIN,
    # Not plain: httpx changes them, or says more about them than the text (each is parsed by httpx).
    "http://example.com",
    "http://example.com:80/x",
    "https://example.com:443/x",
    "http://Example.COM/x",
    "http://example.com:0080/x",
    "http://bücher.de/x",
    "http://xn--bcher-kva.de/x",
    "http://[::1]:8080/x",
    "http://example.com/a b?q=é",
    "http://example.com/%41%zz",
    "http://example.com/a/../b/./c",
    "http://example.com/.well-known/x",
    "http://example.com/x#fragment",
    "http://example.com./x",
    "http://a--b.example.com/x",
    "http://a..b/x",
    "http://-a.b./x",
    "http://1.2.3/x",
    "http://0x7f.1/x",
    "http://a.xn--bcher-kva.de/x",
    "http://example.com/x?",
    "http://example.com/x?a=[1]",
]


@pytest.mark.parametrize("url", URLS)
def test_a_target_is_what_httpx_makes_of_the_url(url: str) -> None:
    parsed = httpx.URL(url)
    found = target(url)
    assert (found.url, found.scheme, found.host, found.port) == (str(parsed), parsed.scheme, parsed.host, parsed.port)
    assert target(url) is found, "parsed once per URL string"


def test_plain_urls_skip_httpx() -> None:
    assert all(PLAIN_URL.fullmatch(url) for url in PLAIN)


@pytest.mark.parametrize(
    "url",
    [*URLS, "http://1.2.3/x", "http://01.2.3.4/x", "http://example.com:99999/x", "http://xn--a.example/x", "ftp://h/x"],
)
def test_validation_of_a_plain_url_agrees_with_the_full_check(url: str) -> None:
    problem = _url_problem(url)
    if problem is None:
        check_url(url)
    else:
        with pytest.raises(ValueError) as refused:
            check_url(url)
        assert str(refused.value) == problem


def test_a_redirect_location_is_resolved_as_httpx_resolves_it() -> None:
    base = target("http://example.com/a/b?x=1")
    for location in ("/c", "d", "../e?y=2", "https://other.example:8443/f", "//third.example/g"):
        assert target(str(httpx.URL(base.url).join(location))) == base.join(location)


def test_a_url_httpx_cannot_send_is_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        target("ftp://example.com/file")


@pytest.mark.parametrize(
    "raw",
    [
        [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")],
        [(b"X-Name", b"caf\xc3\xa9"), (b"X-Other", b"plain")],
        [(b"X-Name", b"caf\xe9"), (b"X-Other", b"caf\xc3\xa9")],
        [],
    ],
)
def test_response_headers_read_as_httpx_reads_them(raw: list[tuple[bytes, bytes]]) -> None:
    assert decode_headers(raw) == dict(httpx.Headers(raw))


def test_framing_and_hop_by_hop_headers_never_reach_the_wire() -> None:
    smuggled = {"X-Ok": "1", "Transfer-Encoding": "chunked", "content-length": "0", "Connection": "close"}
    get = Outgoing("GET", target("http://example.com/x"), dict(smuggled), b"", 5.0)
    assert framed_headers(get) == {"X-Ok": "1"}
    post = Outgoing("POST", target("http://example.com/x"), dict(smuggled), b"hello", 5.0)
    assert framed_headers(post) == {"X-Ok": "1", "Content-Length": "5"}
    empty_post = Outgoing("POST", target("http://example.com/x"), {"X-Ok": "1"}, b"", 5.0)
    assert framed_headers(empty_post) == {"X-Ok": "1", "Content-Length": "0"}
    clean = Outgoing("GET", target("http://example.com/x"), {"X-Ok": "1"}, b"", 5.0)
    assert framed_headers(clean) is clean.headers, "a clean request's headers are not copied"
    with pytest.raises(ValueError, match="ASCII"):
        framed_headers(Outgoing("GET", target("http://example.com/x"), {"X-A": "café"}, b"", 5.0))


class _Observer:
    """An `OutboundCalls` as a tracing plugin provides one (core/calls.py): adds its header, records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, int | None]] = []

    def begin(self, kind: str, operation: str, target: str) -> _Observer:
        self.seen.append((kind, operation, target, None))
        return self

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        if not any(name.lower() == "traceparent" for name in headers):
            headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def answered(self, status: int) -> None:
        self.seen[-1] = (*self.seen[-1][:3], status)

    def __enter__(self) -> _Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
async def test_a_plugin_adds_its_outgoing_header_through_context_calls(http: HTTPServer, transport: str) -> None:
    """The seam the `otel` plugin uses: `context.calls.begin(...).propagate(headers)` adds a header to the request
    on either transport (unless the task sets its own), and `answered` gets the status."""
    http.expect_request("/traced").respond_with_data("ok", status=202)
    executor = HttpExecutor(HttpSettings(transport=transport), concurrency=2)
    await executor.open()
    try:
        entry = ExecutorEntry("http", executor, "http")
        observer = _Observer()
        url = http.url_for("/traced")
        for own in ({}, {"TraceParent": "00-11111111111111111111111111111111-2222222222222222-00"}):
            task = task_from_dict({"id": "traced", "url": url, "headers": own})
            entry.validate(task)
            context = ExecutionContext("w", "q", 1, 1, 5.0, None, logging.LoggerAdapter(logging.getLogger("t"), {}))
            context.calls = observer
            outcome = await run_attempt(entry, task, context)
            assert outcome.failure is None, outcome.failure
        sent = [request.headers["traceparent"] for request, _ in http.log]
        assert sent == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", own["TraceParent"]]
        assert observer.seen == [("http", "GET", url, 202)] * 2
    finally:
        await executor.close()


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
async def test_a_plugins_call_headers_go_out_on_every_call_unless_the_task_sets_its_own(
    http: HTTPServer, transport: str
) -> None:
    """The cheaper seam (`context.call_headers`, a sampled-out trace's): the headers go out on either transport
    with no observer; a task's own `traceparent` (any case) wins, and takes the plugin's `tracestate` with it."""
    http.expect_request("/plain").respond_with_data("ok")
    executor = HttpExecutor(HttpSettings(transport=transport), concurrency=2)
    await executor.open()
    try:
        entry = ExecutorEntry("http", executor, "http")
        extra = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "tracestate": "a=1"}
        own = {"TraceParent": "00-11111111111111111111111111111111-2222222222222222-00"}
        for headers in ({}, {"X-Other": "1"}, own):
            task = task_from_dict({"id": "plain", "url": http.url_for("/plain"), "headers": headers})
            entry.validate(task)
            context = ExecutionContext("w", "q", 1, 1, 5.0, None, logging.LoggerAdapter(logging.getLogger("t"), {}))
            context.call_headers = extra
            outcome = await run_attempt(entry, task, context)
            assert outcome.failure is None, outcome.failure
        sent = [(request.headers["traceparent"], request.headers.get("tracestate")) for request, _ in http.log]
        assert sent == [(extra["traceparent"], "a=1")] * 2 + [(own["TraceParent"], None)]
        assert extra == {"traceparent": extra["traceparent"], "tracestate": "a=1"}  # shared: never changed
    finally:
        await executor.close()
