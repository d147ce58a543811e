"""A raw HTTP/1.1 server on 127.0.0.1 for the wire tests: it parses requests strictly by RFC 9112, pipelined, and
records what it parsed on which connection, so a test can see exactly what went over the wire.

Unlike a framework server it keeps no opinion of its own about framing: a request with both Transfer-Encoding and
Content-Length is read by Transfer-Encoding (RFC 9112 section 6.3) and the connection is kept alive (the
RFC 7230 behaviour many servers still have; RFC 9112 asks to close it), so a request smuggled behind another one
is parsed, answered and recorded, as a vulnerable server behind a shared pool would. Every response is produced by
a route (`routes[path]`, else `default`), which writes raw bytes and may mark its connection `dirty`: a response a
client is not expected to read to its end (a bomb, a trickle, a lie about its length). A request parsed on a
connection after it turned dirty is a violation: the client pooled a connection it should have closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.1$")
MAX_HEAD = 64 * 1024


class BadRequest(Exception):
    """The bytes on a connection are not a valid request: the server records why and closes it."""


@dataclass
class ParsedRequest:
    """One request as the server read it."""

    connection: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Both Transfer-Encoding and Content-Length were present (the request was framed two ways).
    both_framings: bool = False
    #: The connection had already sent a response its client should not have read to its end.
    after_dirty: bool = False

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None


@dataclass
class Connection:
    """One client connection: the writer, whether it turned dirty, and whether the client has closed it."""

    number: int
    writer: asyncio.StreamWriter
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    dirty: bool = False

    async def send(self, data: bytes) -> bool:
        """Write and drain; False once the client has gone."""
        if self.closed.is_set():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True


Route = Callable[[ParsedRequest, Connection], Awaitable[None]]


def response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete response with a Content-Length."""
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def echo_path(request: ParsedRequest, conn: Connection) -> None:
    """The default route: 200 with a body that names the request's own target."""
    await conn.send(response(200, f"path={request.target}".encode()))


class WireServer:
    """The server, in its own thread and event loop; `start()` returns it listening on `port`."""

    def __init__(self, default: Route = echo_path) -> None:
        self.routes: dict[str, Route] = {}
        self.default = default
        self.requests: list[ParsedRequest] = []
        #: Why each connection whose bytes were not a valid request was closed.
        self.rejected: list[str] = []
        self.connections = 0
        self.port = 0
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wire-server", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> WireServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def targets(self) -> list[str]:
        with self._lock:
            return [request.target for request in self.requests]

    def seen(self) -> list[ParsedRequest]:
        with self._lock:
            return list(self.requests)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(next(self._numbers), writer)
        with self._lock:
            self.connections += 1
        queue: asyncio.Queue[ParsedRequest | None] = asyncio.Queue()
        parsing = asyncio.create_task(self._parse_all(reader, conn, queue))
        try:
            while (request := await queue.get()) is not None:
                route = self.routes.get(request.target.split("?")[0], self.default)
                await route(request, conn)
                if (request.header("connection") or "").lower() == "close":
                    break
        except asyncio.CancelledError:  # the server is stopping: end quietly (asyncio logs a cancelled handler)
            pass
        finally:
            parsing.cancel()
            with contextlib.suppress(BaseException):
                await parsing
            writer.close()

    async def _parse_all(
        self, reader: asyncio.StreamReader, conn: Connection, queue: asyncio.Queue[ParsedRequest | None]
    ) -> None:
        """Parse requests as their bytes arrive (independently of the answers, so pipelined ones are seen at once)."""
        try:
            while True:
                request = await self._parse_one(reader, conn)
                if request is None:
                    break
                with self._lock:
                    self.requests.append(request)
                queue.put_nowait(request)
        except BadRequest as exc:  # no answer: the connection is closed, and the test sees why
            with self._lock:
                self.rejected.append(str(exc))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        conn.closed.set()
        queue.put_nowait(None)

    async def _parse_one(self, reader: asyncio.StreamReader, conn: Connection) -> ParsedRequest | None:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return None
        if len(head) > MAX_HEAD:
            raise BadRequest("head too large")
        lines = head[:-4].split(b"\r\n")
        match = _REQUEST_LINE.match(lines[0])
        if match is None or b"\n" in head.replace(b"\r\n", b""):
            raise BadRequest(f"bad request line {lines[0]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):  # also refuses obs-fold and whitespace before the colon
                raise BadRequest(f"bad field line {line!r}")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        request = ParsedRequest(conn.number, match.group(1).decode(), match.group(2).decode("latin-1"), headers, b"")
        request.after_dirty = conn.dirty
        codings = request.header("transfer-encoding")
        length = request.header("content-length")
        request.both_framings = codings is not None and length is not None
        if codings is not None:  # Transfer-Encoding overrides Content-Length
            if codings.replace(" ", "").lower().split(",")[-1] != "chunked":
                raise BadRequest("a request's last transfer coding must be chunked")
            request.body = await self._read_chunked(reader)
        elif length is not None:
            values = {value.strip() for value in length.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise BadRequest(f"bad Content-Length {length!r}")
            request.body = await reader.readexactly(int(values.pop()))
        return request

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = b""
        while True:
            size_line = (await reader.readuntil(b"\r\n"))[:-2]
            size_text = size_line.split(b";")[0].strip()
            if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                raise BadRequest(f"bad chunk size {size_line!r}")
            size = int(size_text, 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields
                    pass
                return body
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest("chunk data not followed by CRLF")


# -- compression bombs, built cheaply -------------------------------------------------------------------------------

_PIECE = 1 << 20


def deflate_bomb(size: int, fill: int = 0) -> bytes:
    """A raw deflate stream of `size` bytes (a multiple of 1 MiB) all equal to `fill`: one MiB compressed after a
    full flush (which resets the compressor, so every MiB compresses to the same bytes), repeated, then an empty
    final block. 1 GiB takes about 1 MB and a few milliseconds."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(bytes([fill]) * _PIECE) + compressor.flush(zlib.Z_FULL_FLUSH)
    return piece * (size // _PIECE) + b"\x03\x00"


def _checksums(size: int, fill: int) -> tuple[int, int]:
    piece = bytes([fill]) * _PIECE
    crc, adler = 0, 1
    for _ in range(size // _PIECE):
        crc, adler = zlib.crc32(piece, crc), zlib.adler32(piece, adler)
    return crc, adler


def gzip_bomb(size: int, fill: int = 0) -> bytes:
    """A gzip stream (RFC 1952) of `size` bytes equal to `fill`."""
    crc, _ = _checksums(size, fill)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + deflate_bomb(size, fill) + struct.pack("<II", crc, size % (1 << 32))


def zlib_bomb(size: int, fill: int = 0) -> bytes:
    """A zlib stream (RFC 1950, what HTTP calls deflate) of `size` bytes equal to `fill`."""
    _, adler = _checksums(size, fill)
    return b"\x78\xda" + deflate_bomb(size, fill) + struct.pack(">I", adler)
