"""The native transport's own rules (gopherq/plugins/http/native_transport.py), against real loopback servers:
when a connection is pooled and when it is closed, how many there are, the bounds on an answer's head, reading
paused while a large body waits unread, and how requests are framed. (Every transport test of the executor also
runs on it: the TRANSPORTS lists and the executor fixture.)

Connections are told apart by the server (tests/support/wire_server.WireServer numbers each one it accepts), so
"reused" and "closed" are read off the wire, not off the transport's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gopherq.plugins.http.egress import EgressGuard, EgressSettings
from gopherq.plugins.http.native_transport import (
    MAX_BUFFERED,
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    NativeIncoming,
    NativeTransport,
    request_head,
    route,
)
from gopherq.plugins.http.wire import Outgoing, Target, target
from tests.support.common import async_wait_until
from tests.support.wire_server import Connection, ParsedRequest, Route, WireServer


@pytest.fixture
def wire() -> Iterator[WireServer]:
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture
async def transport() -> AsyncIterator[NativeTransport]:
    native = NativeTransport(EgressGuard(EgressSettings()), max_connections=4)
    yield native
    await native.aclose()


def get(url: str, method: str = "GET", timeout: float | None = 5.0, **headers: str) -> Outgoing:
    return Outgoing(method, target(url), {"User-Agent": "test", **headers}, b"", timeout)


def answer(data: bytes, close: bool = False) -> Route:
    """A route that writes `data` as it is (and then closes the connection, with `close`)."""

    async def route(request: ParsedRequest, conn: Connection) -> None:
        await conn.send(data)
        if close:
            conn.writer.close()

    return route


async def fetch(transport: NativeTransport, request: Outgoing, limit: int = 1 << 20) -> tuple[int, bytes]:
    incoming = await transport.send(request)
    body, _ = await incoming.read(limit)
    return incoming.status, body


async def reused_by_next(wire: WireServer, transport: NativeTransport) -> bool:
    """Whether the next request (to /after, answered in full) goes on the connection of the one request before it:
    read off the wire (the server numbers the connections it accepts)."""
    assert await fetch(transport, get(wire.url("/after"))) == (200, b"path=/after")
    [before, after] = wire.seen()
    return before.connection == after.connection


# -- pooling: reused only after a clean end that allows keep-alive ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "body", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\n\r\n", b"ok!", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"", True),  # the length of what is not sent
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", b"x", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),  # HTTP/1.0: close unless asked
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", b"ok", False),  # bytes after the end
    ],
)
async def test_a_connection_is_reused_only_after_a_clean_end_that_allows_keep_alive(
    wire: WireServer, transport: NativeTransport, raw: bytes, body: bytes, reused: bool
) -> None:
    wire.routes["/first"] = answer(raw)
    first = await fetch(transport, get(wire.url("/first")))
    second = await fetch(transport, get(wire.url("/second")))
    assert first == (int(raw.split(b" ")[1]) if b" 103 " not in raw else 200, body)
    assert second == (200, b"path=/second")
    connections = [request.connection for request in wire.seen()]
    assert (connections[0] == connections[1]) is reused, connections


async def test_a_head_answer_has_no_body_and_its_connection_is_not_pooled(
    wire: WireServer, transport: NativeTransport
) -> None:
    """llhttp cannot be told that an answer to HEAD has no body: the transport stops reading at its head, and
    closes the connection rather than guess where the next answer would start."""
    wire.routes["/head"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert await fetch(transport, get(wire.url("/head"), method="HEAD")) == (200, b"")
    assert not await reused_by_next(wire, transport)


async def test_a_body_that_ends_with_the_connection_is_whole_and_the_connection_is_not_reused(
    wire: WireServer, transport: NativeTransport
) -> None:
    wire.routes["/until-close"] = answer(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True)
    assert await fetch(transport, get(wire.url("/until-close"))) == (200, b"all of it")
    assert not await reused_by_next(wire, transport)


async def test_a_body_left_unread_closes_the_connection(wire: WireServer, transport: NativeTransport) -> None:
    """Reading stops at the body limit; the rest of a body larger than what is ever buffered (MAX_BUFFERED) is
    still on its way, and the connection is closed. (A body that had arrived whole is pooled: it was read.)"""
    body = b"0123456789" * (MAX_BUFFERED // 2)
    wire.routes["/long"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    incoming = await transport.send(get(wire.url("/long")))
    assert await incoming.read(4) == (b"0123", True)
    assert not await reused_by_next(wire, transport)


# -- the pool's size -------------------------------------------------------------------------------------------


async def test_at_most_max_connections_are_open_and_a_request_waits_for_one_within_its_time_limit(
    wire: WireServer,
) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def held(request: ParsedRequest, conn: Connection) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(release.wait(), loop))
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld")

    wire.routes["/held"] = held
    transport = NativeTransport(EgressGuard(EgressSettings()), max_connections=2)
    try:
        calls = [asyncio.ensure_future(fetch(transport, get(wire.url("/held")))) for _ in range(6)]
        await async_wait_until(lambda: len(wire.seen()) == 2, what="two requests to arrive")
        with pytest.raises(httpx.PoolTimeout):  # both connections are busy: no third one is opened
            await transport.send(get(wire.url("/held"), timeout=0.2))
        release.set()
        assert await asyncio.gather(*calls) == [(200, b"held")] * 6
    finally:
        await transport.aclose()
    assert wire.connections == 2 and len({request.connection for request in wire.seen()}) == 2


async def test_a_full_pool_closes_an_idle_connection_to_another_origin_rather_than_wait(wire: WireServer) -> None:
    other = WireServer().start()
    transport = NativeTransport(EgressGuard(EgressSettings()), max_connections=1)
    try:
        assert await fetch(transport, get(wire.url("/a"))) == (200, b"path=/a")
        assert await fetch(transport, get(other.url("/b"), timeout=2.0)) == (200, b"path=/b")
        assert transport.opened == 1
        assert await fetch(transport, get(wire.url("/a2"))) == (200, b"path=/a2")
    finally:
        await transport.aclose()
        other.stop()
    first, again = wire.seen()
    assert first.connection != again.connection  # its idle connection had been closed to make room


# -- the answer's head is bounded --------------------------------------------------------------------------------


def head_with(fields: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return f"HTTP/1.1 200 OK\r\n{lines}Content-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ([(f"X-{i}", "v") for i in range(MAX_FIELDS - 1)], True),  # with Content-Length: exactly MAX_FIELDS
        ([(f"X-{i}", "v") for i in range(MAX_FIELDS)], False),
        ([("X-Long", "v" * MAX_FIELD_BYTES)], True),
        ([("X-Long", "v" * (MAX_FIELD_BYTES + 1))], False),
        ([("X" * (MAX_FIELD_BYTES + 1), "v")], False),
        ([(f"X-{i}", "v" * 8000) for i in range(MAX_HEAD_BYTES // 8000 + 1)], False),
    ],
)
async def test_an_answer_head_past_its_bounds_is_a_protocol_error_and_closes_the_connection(
    wire: WireServer, transport: NativeTransport, fields: list[tuple[str, str]], accepted: bool
) -> None:
    wire.routes["/head"] = answer(head_with(fields))
    if accepted:
        incoming = await transport.send(get(wire.url("/head")))
        assert len(incoming.headers) == len(fields) + 1
        await incoming.read(10)
    else:
        with pytest.raises(httpx.RemoteProtocolError):
            await transport.send(get(wire.url("/head")))
    assert await reused_by_next(wire, transport) is accepted


def endless(start: bytes, repeated: bytes) -> Route:
    """A route that sends `start`, then `repeated` over and over (16 MiB at most) while the client reads."""

    async def route(request: ParsedRequest, conn: Connection) -> None:
        if not await conn.send(start):
            return
        for _ in range((16 << 20) // len(repeated)):
            if not await conn.send(repeated):
                return

    return route


@pytest.mark.parametrize(
    "start, repeated",
    [
        # a trailer field that never ends (httptools gathers a field's value in memory until its end)
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-Trailer: ", b"a" * 65536),
        # a chunk extension that never ends, and chunk after chunk of framing for one byte each
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=", b"e" * 65536),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1;" + b"e" * 200 + b"\r\nx\r\n"),
    ],
)
async def test_an_answer_that_sends_endless_framing_or_trailers_is_refused_not_read_on(
    wire: WireServer, transport: NativeTransport, start: bytes, repeated: bytes
) -> None:
    """What an answer sends beyond its body is bounded after its head too: a hostile endpoint cannot hold a worker's
    memory (or its CPU, until the attempt's time limit) with trailers or chunk framing that never end."""
    wire.routes["/endless"] = endless(start, repeated)
    incoming = await transport.send(get(wire.url("/endless")))
    assert isinstance(incoming, NativeIncoming)
    connection = incoming.connection
    with pytest.raises(httpx.RemoteProtocolError, match="more than its body and framing allow"):
        await asyncio.wait_for(incoming.read(1 << 30), 30)
    assert connection.closed and connection.fed < (1 << 20)
    assert await fetch(transport, get(wire.url("/after"))) == (200, b"path=/after")


# -- a large body: reading pauses while it waits unread ----------------------------------------------------------


async def test_reading_pauses_while_a_large_body_waits_unread_and_resumes_as_it_is_read(
    wire: WireServer, transport: NativeTransport
) -> None:
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB
    wire.routes["/large"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    incoming = await transport.send(get(wire.url("/large")))
    assert isinstance(incoming, NativeIncoming)
    connection = incoming.connection
    await async_wait_until(lambda: connection.paused, what="reading to pause")
    held = connection.buffered
    for _ in range(20):  # the server keeps sending: nothing more is read while paused
        await asyncio.sleep(0)
    assert connection.buffered == held and held <= MAX_BUFFERED + 256 * 1024
    assert await incoming.read(len(body)) == (body, False)
    assert not connection.paused
    assert await reused_by_next(wire, transport)  # read to its end: pooled


# -- failures ----------------------------------------------------------------------------------------------------


async def test_failures_are_httpx_errors_of_the_right_kind(wire: WireServer, transport: NativeTransport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await transport.send(get(f"http://127.0.0.1:{closed_port}/"))
    wire.routes["/garbage"] = answer(b"HTTP/1.1 2xx nonsense\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        await transport.send(get(wire.url("/garbage")))
    wire.routes["/silent"] = answer(b"", close=True)
    with pytest.raises(httpx.RemoteProtocolError, match="without an answer"):
        await transport.send(get(wire.url("/silent")))
    wire.routes["/cut"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True)
    incoming = await transport.send(get(wire.url("/cut")))
    with pytest.raises(httpx.ReadError):
        await incoming.read(1000)
    wire.routes["/bad-chunk"] = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        incoming = await transport.send(get(wire.url("/bad-chunk")))
        await incoming.read(1000)


# -- requests: framing, Host, refused headers --------------------------------------------------------------------


def test_the_request_target_and_host_of_a_url() -> None:
    ipv6 = route(target("http://[::1]:8080/a/b?c=d"))
    assert (ipv6.host_header, ipv6.path, ipv6.server_name, ipv6.port) == ("[::1]:8080", "/a/b?c=d", "::1", 8080)
    idna = route(target("https://bücher.example/x#fragment"))
    assert (idna.host_header, idna.path, idna.host, idna.port, idna.tls) == (
        "xn--bcher-kva.example",
        "/x",
        "bücher.example",
        443,
        True,
    )
    bare = route(target("http://example.com?q=1"))
    assert (bare.host_header, bare.path) == ("example.com", "/?q=1")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nX-Injected: 1"},
        {"X-A": "v\nX-Injected: 1"},
        {"X-A": "v\rX"},
        {"X-A": "nul\0"},
        {"X A": "v"},
        {"X-A:": "v"},
        {"": "v"},
        {"X\r\nInjected": "v"},
    ],
)
def test_a_header_that_would_break_the_framing_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        request_head(
            Outgoing("GET", target("http://127.0.0.1/"), headers, b"", None), route(target("http://127.0.0.1/"))
        )


def test_header_names_checked_once_are_not_confused_with_others() -> None:
    """Sets of header names already found valid are remembered as tuples of names: a name holding ":" is not
    taken for the two names it joins, and what was refused is refused again."""
    url = "http://127.0.0.1/"

    def head(headers: dict[str, str]) -> bytes:
        return request_head(Outgoing("GET", target(url), headers, b"", None), route(target(url)))

    assert b"\r\nX-A: 1\r\nX-B: 2\r\n" in head({"X-A": "1", "X-B": "2"})
    assert b"\r\nX-A: 1\r\nX-B: 2\r\n" in head({"X-A": "1", "X-B": "2"})  # (remembered)
    for refused in ({"X-A:X-B": "1"}, {"X-A": "1", "X-B ": "2"}, {"X-A": "1", "X-B ": "2"}, {"X-A": "1\n"}):
        with pytest.raises(httpx.LocalProtocolError):
            head(refused)


def test_known_header_names_let_no_bad_value_through_and_give_the_same_head() -> None:
    """request_head keeps what a tuple of header names needs (native_transport._KNOWN_NAMES), keyed on the names
    exactly as spelt: a value a known tuple carries is checked all the same (CR, LF, NUL, non-ASCII), a value or
    name holding `%` goes out as it is, another case or an added Host / Accept / Content-Type gives the head the
    general path gives, a framing name is never kept (it is dropped), and the cache stays within its bounds."""
    from gopherq.plugins.http import native_transport

    url = "http://127.0.0.1:8080/p"
    where = route(target(url))

    def head(headers: dict[str, str], method: str = "GET", content: bytes = b"") -> bytes:
        return request_head(Outgoing(method, target(url), headers, content, None), where)

    def general(headers: dict[str, str], method: str = "GET", content: bytes = b"") -> bytes:
        return native_transport._checked_head(Outgoing(method, target(url), headers, content, None), where)

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    usual = {"User-Agent": "gopherq", "Idempotency-Key": "1", "traceparent": parent}
    expected = (
        b"GET /p HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: gopherq\r\nIdempotency-Key: 1\r\n"
        b"traceparent: " + parent.encode() + b"\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
    )
    assert head(dict(usual)) == expected
    assert tuple(usual) in native_transport._KNOWN_NAMES
    assert head(dict(usual)) == expected  # (known)
    for bad in ("v\r\nX-Injected: 1", "v\nX: 1", "v\rX", "nul\0", "\r\n"):
        with pytest.raises(httpx.LocalProtocolError):
            head({**usual, "traceparent": bad})
        with pytest.raises(httpx.LocalProtocolError):
            head({**usual, "User-Agent": bad, "Idempotency-Key": "\r\n"})  # two fields' CR/LF: not one each
    with pytest.raises(ValueError, match="'Idempotency-Key' cannot be encoded as ASCII"):
        head({**usual, "Idempotency-Key": "café"})
    percent = {**usual, "User-Agent": "100% %s %%", "Idempotency-Key": "%d"}
    assert b"\r\nUser-Agent: 100% %s %%\r\nIdempotency-Key: %d\r\n" in head(percent)
    cases = [
        ({"X-%s": "%s", "X-%%": "%"}, "GET", b""),
        ({"host": "h", "User-Agent": "u"}, "GET", b""),
        ({"HOST": "h", "User-Agent": "u"}, "GET", b""),
        ({"User-Agent": "u", "Host": "h"}, "GET", b""),
        ({"User-Agent": "u", "accept": "a"}, "GET", b""),
        ({"User-Agent": "u", "ACCEPT-ENCODING": "br"}, "GET", b""),
        ({"User-Agent": "u", "Accept": "a", "accept-encoding": "br"}, "GET", b""),
        ({"User-Agent": "u"}, "POST", b"abc"),
        ({"User-Agent": "u"}, "POST", b""),
        ({"User-Agent": "u"}, "DELETE", b"abc"),
        ({"User-Agent": "u", "content-type": "text/plain"}, "PUT", b"abc"),
        ({"User-Agent": "u", "Connection": "close"}, "GET", b""),
        ({"User-Agent": "u", "transfer-encoding": "chunked"}, "POST", b"abc"),
        ({"User-Agent": "u", "Content-Length": "99"}, "POST", b"abc"),
        ({}, "HEAD", b""),
    ]
    for headers, method, content in cases:
        first = head(dict(headers), method, content)
        assert first == general(dict(headers), method, content) == head(dict(headers), method, content), headers
    assert b"Host: 127.0.0.1" not in head({"HOST": "h", "User-Agent": "u"})
    assert b"\r\nUser-Agent: u\r\nContent-Length: 3\r\nAccept: */*\r\n" in head({"User-Agent": "u"}, "POST", b"abc")
    framed = head({"User-Agent": "u", "transfer-encoding": "chunked"}, "POST", b"abc")
    assert b"chunked" not in framed and b"Content-Length: 3\r\n" in framed
    assert ("User-Agent", "transfer-encoding") not in native_transport._KNOWN_NAMES
    assert ("User-Agent", "Connection") not in native_transport._KNOWN_NAMES
    for n in range(3 * native_transport.NAMES_KEPT):
        head({f"X-{n}": "v"})
        assert len(native_transport._KNOWN_NAMES) <= native_transport.NAMES_KEPT
    long_names = {f"X-{n}-" + "a" * 100: "v" for n in range(6)}
    head(long_names)
    assert tuple(long_names) not in native_transport._KNOWN_NAMES


def test_a_request_is_framed_with_the_defaults_the_aiohttp_transport_sends() -> None:
    where = route(target("http://127.0.0.1:8080/p?q"))
    post = Outgoing("POST", target("http://127.0.0.1:8080/p?q"), {"User-Agent": "u"}, b"abc", None)
    assert request_head(post, where) == (
        b"POST /p?q HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: u\r\nContent-Length: 3\r\nAccept: */*\r\n"
        b"Accept-Encoding: gzip, deflate\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    own = Outgoing("GET", target("http://127.0.0.1:8080/"), {"Host": "h", "Accept-Encoding": "br"}, b"", None)
    assert request_head(own, where) == b"GET /p?q HTTP/1.1\r\nHost: h\r\nAccept-Encoding: br\r\nAccept: */*\r\n\r\n"


async def test_an_ipv6_server_is_reached_with_a_bracketed_host(transport: NativeTransport) -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6")
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(serve, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await fetch(transport, get(f"http://[::1]:{port}/six")) == (200, b"v6")
    finally:
        server.close()
    assert seen[0].startswith(f"GET /six HTTP/1.1\r\nHost: [::1]:{port}\r\n".encode())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_tls_checks_the_certificate_against_the_host_name_sent_as_sni(tmp_path: Path) -> None:
    from tests.core.test_tls_acl import make_certificates  # the CA and server certificate of the Redis TLS tests

    paths = make_certificates(tmp_path)
    names: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(paths["server"], paths["server-key"])
    server_context.sni_callback = lambda _sock, name, _context: names.append(name)  # type: ignore[assignment,return-value]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls")
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = NativeTransport(
        EgressGuard(EgressSettings()), 2, verify=ssl.create_default_context(cafile=str(paths["ca"]))
    )
    untrusting = NativeTransport(EgressGuard(EgressSettings()), 2)  # the system's CAs: not the test CA
    try:
        assert await fetch(trusting, get(f"https://localhost:{port}/a")) == (200, b"tls")
        assert await fetch(trusting, get(f"https://localhost:{port}/b")) == (200, b"tls")  # pooled
        assert await fetch(trusting, get(f"https://127.0.0.1:{port}/c")) == (200, b"tls")  # IP SAN, no SNI
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.send(get(f"https://localhost:{port}/d"))
    finally:
        await trusting.aclose()
        await untrusting.aclose()
        server.close()
    assert names[:2] == ["localhost", None]


async def test_a_pooled_connection_the_server_closes_leaves_the_pool(
    wire: WireServer, transport: NativeTransport
) -> None:
    wire.routes["/bye"] = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye", close=True)
    assert await fetch(transport, get(wire.url("/bye"))) == (200, b"bye")
    await async_wait_until(lambda: transport.opened == 0 and not transport.idle, what="the connection to leave")
    assert not await reused_by_next(wire, transport)


async def test_header_values_are_read_without_the_whitespace_around_them(
    wire: WireServer, transport: NativeTransport
) -> None:
    wire.routes["/spaces"] = answer(b"HTTP/1.1 200 OK\r\nX-A:  a b \t\r\nX-B:\t\r\nContent-Length: 0\r\n\r\n")
    incoming = await transport.send(get(wire.url("/spaces")))
    await incoming.read(10)
    assert incoming.headers == {"x-a": "a b", "x-b": "", "content-length": "0"}


def test_a_method_or_target_that_would_break_the_request_line_is_refused() -> None:
    url = "http://127.0.0.1/"
    for method in ("GET / HTTP/1.1\r\nX:", "GE T", ""):
        with pytest.raises(httpx.LocalProtocolError):
            request_head(Outgoing(method, target(url), {}, b"", None), route(target(url)))
    assert request_head(Outgoing("PROPFIND", target(url), {}, b"", None), route(target(url))).startswith(b"PROPFIND / ")
    broken = Target("http://127.0.0.1/a b\r\nX: y", "http", "127.0.0.1", None)  # what wire.target never makes
    with pytest.raises(httpx.InvalidURL):
        route(broken)


async def test_a_connection_that_is_not_accepted_in_time_is_a_connect_timeout(transport: NativeTransport) -> None:
    """A listening socket whose accept queue is full: Linux drops the SYN, and connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (its size is the backlog, plus one)
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        with pytest.raises(httpx.ConnectTimeout):
            await transport.send(get(f"http://127.0.0.1:{port}/", timeout=0.3))
        assert transport.opened == 0  # the attempt left nothing behind
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
