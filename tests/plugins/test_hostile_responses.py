"""What an endpoint sends back (issue 18, part 2): every hostile answer fails or truncates its own task within the
documented bounds (docs/guarantees.md, "Response bodies"), decompression is bounded as it runs, and a connection
whose answer was not read to a clean end never carries another task's request.

The server is tests/wire_server.WireServer: it marks a connection dirty when it sends an answer its client should
stop reading (a bomb, a trickle, a length lie), and records any request parsed on a dirty connection.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gopherq.core.executor import ExecutorEntry, run_attempt
from gopherq.core.task import task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpSettings
from gopherq.plugins.http.body import BodyDecoder, wire_limit
from tests.plugins.test_http_executor import context
from tests.support.common import async_wait_until
from tests.support.wire_server import (
    Connection,
    ParsedRequest,
    Route,
    WireServer,
    deflate_bomb,
    gzip_bomb,
    response,
    zlib_bomb,
)

TRANSPORTS = ["native", "aiohttp", "httpx"]


@pytest.fixture
def wire() -> Iterator[WireServer]:
    server = WireServer().start()
    yield server
    server.stop()


# -- what an endpoint sends back: bounded, and a connection not read to a clean end is never reused ---------------

LIMIT = 64 * 1024
BOMB = gzip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MB
NESTED = gzip.compress(gzip.compress(BOMB))  # "gzip, gzip, gzip": 1 GiB in a few hundred bytes


def fixed(body: bytes, headers: dict[str, str], status: int = 200, dirty: bool = True) -> Route:
    """A route answering one response; `dirty` when the client is expected to stop reading it before its end."""
    return raw(response(status, body, headers), dirty)


def raw(data: bytes, dirty: bool = True) -> Route:
    """A route that sends `data` as it is."""

    async def route(request: ParsedRequest, conn: Connection) -> None:
        conn.dirty = conn.dirty or dirty  # before the first byte: the client may be done before send() returns
        await conn.send(data)

    return route


def endless(head: str, piece: bytes, interval: float = 0.0, chunked: bool = False, start: bytes = b"") -> Route:
    """A route that sends `head`, `start`, and then `piece` over and over until the client goes away."""

    async def route(request: ParsedRequest, conn: Connection) -> None:
        conn.dirty = True
        data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        if await conn.send(f"HTTP/1.1 200 X\r\n{head}\r\n\r\n".encode() + start):
            while await conn.send(data) and not conn.closed.is_set():
                await asyncio.sleep(interval)

    return route


def nul_body(result: dict[str, Any]) -> bool:
    return result.get("body") == "\0" * LIMIT and result.get("body_truncated") is True


def raw_body(sent: bytes) -> Callable[[dict[str, Any]], bool]:
    return lambda result: base64.b64decode(result["body_base64"]) == sent[:LIMIT] and result["body_truncated"]


ENDLESS_NAME = b"\x1f\x8b\x08\x08\0\0\0\0\0\xff"  # a gzip header whose file name runs on until a NUL
NOISE = bytes(range(256)) * 4096  # 1 MiB that is not UTF-8
FORGED = response(200, b"path=/forged")
#: name -> (route, follow redirects, attempt time limit, expected: a check of the result or a failure reason)
CORPUS: dict[str, tuple[Route, bool, float, Callable[[dict[str, Any]], bool] | str]] = {
    "gzip-bomb": (fixed(BOMB, {"Content-Encoding": "gzip"}), False, 5, nul_body),
    "x-gzip-bomb": (fixed(BOMB, {"Content-Encoding": "x-gzip"}), False, 5, nul_body),
    "deflate-bomb": (fixed(zlib_bomb(256 << 20), {"Content-Encoding": "deflate"}), False, 5, nul_body),
    "raw-deflate-bomb": (fixed(deflate_bomb(256 << 20), {"Content-Encoding": "Deflate"}), False, 5, nul_body),
    "nested-bomb": (fixed(NESTED, {"Content-Encoding": "gzip,gzip, gzip"}, dirty=False), False, 5, nul_body),
    "chunked-bomb": (
        endless("Transfer-Encoding: chunked\r\nContent-Encoding: gzip", BOMB, chunked=True),
        False,
        5,
        nul_body,
    ),
    "too-many-codings": (fixed(NOISE, {"Content-Encoding": "gzip, gzip, gzip, gzip"}), False, 5, raw_body(NOISE)),
    "unknown-coding": (fixed(NOISE, {"Content-Encoding": "br"}), False, 5, raw_body(NOISE)),
    "empty-deflate-blocks": (
        endless("Transfer-Encoding: chunked\r\nContent-Encoding: deflate", b"\0\0\0\xff\xff" * 4096, chunked=True),
        False,
        5,
        lambda result: result["body"] == "" and result["body_truncated"],
    ),
    "endless-gzip-name": (
        endless("Content-Encoding: gzip", b"n" * 65536, start=ENDLESS_NAME),
        False,
        5,
        lambda result: result["body"] == "" and result["body_truncated"],
    ),
    "nested-endless-name": (  # the outer gzip inflates to a gzip header that never ends: the inner step stops it
        fixed(gzip.compress(ENDLESS_NAME + b"n" * (8 << 20)), {"Content-Encoding": "gzip, gzip"}, dirty=False),
        False,
        5,
        lambda result: result["body"] == "" and result["body_truncated"],
    ),
    "corrupt-gzip": (fixed(b"not gzip at all", {"Content-Encoding": "gzip"}, dirty=False), False, 5, "request_error"),
    "too-many-headers": (fixed(b"", {f"X-Pad-{i}": "p" * 1000 for i in range(200)}), False, 5, "request_error"),
    "header-line-too-long": (fixed(b"", {"X-Pad": "p" * 200_000}), False, 5, "request_error"),
    "trickle": (endless("Content-Length: 1000000", b"t", interval=0.02), False, 1, "timeout"),
    "length-lie-short-then-silent": (endless("Content-Length: 100", b"", interval=0.05), False, 1, "timeout"),
    "length-lie-long": (
        raw(b"HTTP/1.1 200 X\r\nContent-Length: 5\r\n\r\nhello" + FORGED),  # a forged answer right behind it
        False,
        5,
        lambda result: result["body"] == "hello",
    ),
    "redirect-loop": (
        fixed(NOISE, {"Location": "/redirect-loop"}, status=302),
        True,
        5,
        "request_error",
    ),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hostile_responses_are_bounded_and_never_leave_a_pooled_connection_behind(
    wire: WireServer, transport: str
) -> None:
    """Each hostile answer fails or truncates its own task as documented (docs/guarantees.md, "Response bodies");
    the task after it, on the same one-connection pool, gets its own answer; and no request ever arrives on a
    connection after a response its client should have stopped reading (the server marks it dirty)."""
    for path, (route, _, _, _) in CORPUS.items():
        wire.routes[f"/{path}"] = route
    executor = HttpExecutor(HttpSettings(transport=transport), concurrency=1)
    entry = ExecutorEntry("http", executor, "http")
    try:
        for path, (_, follow, limit, expected) in CORPUS.items():
            task = task_from_dict({"id": path, "url": wire.url(f"/{path}"), "follow_redirects": follow})
            entry.validate(task)
            outcome = await run_attempt(entry, task, context(limit))
            if isinstance(expected, str):
                assert outcome.failure is not None and outcome.failure.reason == expected, (path, outcome)
            else:
                assert outcome.failure is None and expected(outcome.result), (path, outcome.failure)
            victim = task_from_dict({"id": f"after-{path}", "url": wire.url(f"/victim/{path}")})
            entry.validate(victim)
            outcome = await run_attempt(entry, victim, context())
            assert outcome.failure is None and outcome.result["body"] == f"path=/victim/{path}", (path, outcome)
    finally:
        await executor.close()
    requests = wire.seen()
    assert [r.target for r in requests if r.after_dirty] == []
    assert "/forged" not in {r.target for r in requests}
    assert [r.target for r in requests].count("/redirect-loop") == 21  # the first request and 20 redirects


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bytes_a_server_sends_to_an_idle_pooled_connection_never_answer_the_next_request(
    wire: WireServer, transport: str
) -> None:
    """A clean answer, then (once the client has it) a second answer nobody asked for, on the connection that now
    waits in the pool: the next request to that server must not take it for its own."""
    done = asyncio.Event()
    forged = threading.Event()

    async def answer_then_forge(request: ParsedRequest, conn: Connection) -> None:
        conn.dirty = True  # nothing may be sent on this connection after the forged answer
        await conn.send(response(200, b"hello"))
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(done.wait(), loop))
        await conn.send(FORGED)
        forged.set()

    loop = asyncio.get_running_loop()
    wire.routes["/forge"] = answer_then_forge
    executor = HttpExecutor(HttpSettings(transport=transport), concurrency=1)
    entry = ExecutorEntry("http", executor, "http")
    bodies = []
    try:
        for path in ("/forge", "/victim"):
            task = task_from_dict({"id": path[1:], "url": wire.url(path)})
            entry.validate(task)
            outcome = await run_attempt(entry, task, context())
            assert outcome.result is not None, outcome.failure
            bodies.append(outcome.result["body"])
            done.set()
            await async_wait_until(forged.is_set, what="the forged answer to be sent")
            await asyncio.sleep(0)  # one turn of the loop: the client reads what has arrived (it is in its socket)
    finally:
        await executor.close()
    assert bodies == ["hello", "path=/victim"]
    assert [request.target for request in wire.seen() if request.after_dirty] == []


# -- the decoder alone: exact limits and byte-by-byte input ------------------------------------------------------

TEXT = b"the quick brown fox jumps over the lazy dog. " * 40


def decode(encoding: str | None, data: bytes, limit: int, step: int) -> BodyDecoder:
    decoder = BodyDecoder(encoding, limit)
    for start in range(0, len(data), step):
        decoder.feed(data[start : start + step])
        if decoder.full:
            break
    return decoder


@pytest.mark.parametrize("step", [1, 7, 65536])
@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        (None, TEXT),
        ("gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),  # zlib-wrapped, as RFC 9110 says
        ("deflate", zlib.compress(TEXT)[2:-4]),  # raw, as some servers send it
        ("gzip, deflate", zlib.compress(gzip.compress(TEXT))),
    ],
)
def test_a_body_of_exactly_the_limit_is_whole_and_one_byte_more_is_truncated(
    encoding: str | None, data: bytes, step: int
) -> None:
    whole = decode(encoding, data, len(TEXT), step)
    assert (whole.body(), whole.full) == (TEXT, False)
    cut = decode(encoding, data, len(TEXT) - 1, step)
    assert (cut.body(), cut.full) == (TEXT[:-1], True)


def test_input_that_decodes_to_nothing_stops_at_the_wire_limit() -> None:
    blocks = b"\0\0\0\xff\xff" * 100_000  # empty stored deflate blocks: 500 kB that decode to nothing
    decoder = decode("deflate", blocks, 1000, 4096)
    assert (decoder.body(), decoder.full, decoder.read) == (b"", True, wire_limit(1000))


def test_a_body_that_is_not_what_its_encoding_says_is_a_decoding_error() -> None:
    with pytest.raises(httpx.DecodingError, match="not valid gzip"):
        decode("gzip", b"plain text, not gzip", 1000, 1000)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_both_transports_ask_for_the_codings_the_executor_decodes(wire: WireServer, transport: str) -> None:
    executor = HttpExecutor(HttpSettings(transport=transport), concurrency=1)
    entry = ExecutorEntry("http", executor, "http")
    try:
        for headers in ({}, {"accept-encoding": "br"}):
            task = task_from_dict({"id": "t", "url": wire.url("/"), "headers": headers})
            entry.validate(task)
            assert (await run_attempt(entry, task, context())).failure is None
    finally:
        await executor.close()
    assert [request.header("accept-encoding") for request in wire.seen()] == ["gzip, deflate", "br"]
