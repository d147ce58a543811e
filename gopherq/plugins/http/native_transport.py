"""The HTTP executor's own HTTP/1.1 transport (`transport = "native"`): an asyncio Protocol over llhttp (httptools).

The aiohttp transport spends about half of a worker's HTTP CPU in aiohttp's per-request machinery (a
ClientRequest and a ClientResponse, CIMultiDicts merged and copied, timers, trace hooks, a StreamReader), none of
which the executor needs: it sends one framed request and reads a status, a few headers and a bounded body. This
transport does only that, on keep-alive connections it pools itself, and parses answers with llhttp (the C parser
of Node.js, through httptools: uvicorn's parser), so the bytes are never looked at in Python.

What it guarantees, as the aiohttp transport does (and the tests check on all three transports):

- Pooling: at most `max_connections` connections in all (pooled or in use), a request waiting for one within its
  connect time limit (then httpx.PoolTimeout). A connection goes back to the pool only after its answer ended
  cleanly: the whole body read, no byte after it, and the answer allowing keep-alive (HTTP/1.1 without
  `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`: llhttp's rules). Bytes arriving on a pooled
  connection close it (they would be read as the next request's answer); so does anything left unread (body limit,
  timeout, cancellation). An answer to HEAD (which llhttp cannot be told carries no body) is never pooled.
- Connecting: only to the addresses the egress guard checked for the host (`EgressGuard.addresses`: no DNS lookup
  of its own), in its order, IPv4 or IPv6, through the loop's sock_connect; TLS with the executor's ssl context,
  the host name as SNI and for the certificate check. A refused connection is httpx.ConnectError, one that takes
  longer than the time limit httpx.ConnectTimeout.
- Requests: framed here (wire.framed_headers: one Content-Length, no task-supplied framing), a Host header with
  the port when it is not the scheme's default (IPv6 in brackets), and aiohttp's default headers (Accept,
  Accept-Encoding = body.ACCEPT_ENCODING, a Content-Type for a body without one), so switching transports changes
  no byte an endpoint sees but the order of a few headers. A header name that is not a token, or a value holding
  CR, LF or NUL, is refused (httpx.LocalProtocolError: header injection) before anything is sent.
- Answers: headers decoded as httpx decodes them (wire.decode_headers); 1xx interim answers skipped; bodies by
  Content-Length, chunked or until the server closes, handed to the executor undecoded (it decodes with bounds:
  body.py); HEAD, 1xx, 204 and 304 carry none. Memory is bounded: at most MAX_FIELDS header fields of at most
  MAX_FIELD_BYTES a name or value and MAX_HEAD_BYTES in all, and reading pauses (transport.pause_reading) while
  more than MAX_BUFFERED body bytes wait unread. A malformed answer is httpx.RemoteProtocolError, a disconnect
  in the middle of a body httpx.ReadError.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

from gopherq import time_limit
from gopherq.plugins.http.body import ACCEPT_ENCODING, read_chunks, read_whole
from gopherq.plugins.http.checks import METHODS
from gopherq.plugins.http.egress import EgressGuard
from gopherq.plugins.http.wire import (
    DROPPED,
    Incoming,
    Outgoing,
    Target,
    decode_headers,
    framed_headers,
    sends_length,
)

#: Most header fields an answer may have (aiohttp's limit).
MAX_FIELDS = 128
#: Longest header name or value (aiohttp's line limit).
MAX_FIELD_BYTES = 8190
#: Most bytes of an answer's head (status line, header fields, interim 1xx answers) read before it is refused.
MAX_HEAD_BYTES = 128 * 1024
#: Unread body bytes held before the connection stops reading (it reads again once half of them are taken).
MAX_BUFFERED = 256 * 1024
#: Bytes of framing allowed per body chunk (its size line and line ends) beyond MAX_HEAD_BYTES, after the head.
#: Everything an answer sends that is not body (the head, chunk framing, chunk extensions, trailer fields) must fit
#: in MAX_HEAD_BYTES plus this per chunk: httptools gathers a trailer field in memory until its end, with no bound
#: of its own, and llhttp would read extensions for as long as they came.
CHUNK_FRAMING_BYTES = 64

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: A header name is an RFC 9110 token, and so is a method (the executor's are known; one built without validation
#: is checked).
_NAME = _METHOD = re.compile(_TOKEN)
#: What a request-target may not hold (it would end the request line early).
_TARGET_BREAK = re.compile("[ \t\r\n\0]")
#: What is known of a tuple of header names (in order) once a request carrying them has gone through every check
#: (`_Names`): a worker's requests carry the same few sets of names (its defaults, the tasks' own, a `traceparent`),
#: so each set is lowered and matched once, not at every request. Only sets whose names fit in NAMES_KEPT_CHARS are
#: kept, at most NAMES_KEPT sets (then it starts again).
_KNOWN_NAMES: dict[tuple[str, ...], _Names] = {}
NAMES_KEPT = 256
NAMES_KEPT_CHARS = 512
#: Space and tab, as the last byte of a header value (RFC 9110 5.5: not part of the value).
_WHITESPACE = frozenset(b" \t")
#: Request bodies up to this size are sent in one write with the head.
_JOINED_BODY = 16 * 1024
#: The default headers the aiohttp transport sends (the wire stays the same whichever transport is chosen).
_DEFAULTS = f"Accept: */*\r\nAccept-Encoding: {ACCEPT_ENCODING}\r\n"


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the answer ended, or broke a bound)."""


class Route:
    """How to reach a Target: where to connect, what to send as Host and request-target. Made once per Target
    and kept in its `route` slot."""

    __slots__ = ("host", "host_header", "host_line", "key", "path", "port", "server_name", "tls")

    def __init__(self, target: Target) -> None:
        rest = target.url.split("://", 1)[1].split("#", 1)[0]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, path = rest[:cut], rest[cut:]
        if authority.startswith("["):
            name = authority[1 : authority.index("]")]
        else:
            name = authority.rsplit(":", 1)[0] if ":" in authority else authority
        default = _DEFAULT_PORTS[target.scheme]
        bracketed = f"[{name}]" if ":" in name else name
        #: The host as the egress guard judged it (IDNA-decoded: the key of its pinned addresses).
        self.host = target.host
        self.port = target.port or default
        self.tls = target.scheme == "https"
        #: The host's ASCII form (IDNA-encoded), for SNI and the certificate check.
        self.server_name = name
        self.host_header = bracketed if self.port == default else f"{bracketed}:{self.port}"
        #: The Host field sent when the request has none of its own.
        self.host_line = f"Host: {self.host_header}\r\n"
        self.path = path if path.startswith("/") else f"/{path}"
        if _TARGET_BREAK.search(self.path) is not None:  # wire.target encodes them: this is for what bypassed it
            raise httpx.InvalidURL(f"the request target {self.path!r} holds whitespace or a control character")
        self.key = (self.tls, name, self.port)


def route(target: Target) -> Route:
    found: Route | None = target.route
    if found is None:
        found = target.route = Route(target)
    return found


class _Names:
    """What the head of a request needs of its tuple of header names, found once for the tuple (`_KNOWN_NAMES`).
    Kept only for a tuple whose every name is ASCII, a token, and not a framing or hop-by-hop name (nothing that
    framing drops): a request with such names is framed by adding a Content-Length alone, and only its values are
    left to check."""

    __slots__ = ("defaults", "fields", "has_host", "typed")

    def __init__(self, names: tuple[str, ...]) -> None:
        lowered = {name.lower() for name in names}
        #: The header fields with `%s` for each value (a `%` in a name doubled): one formatting per request.
        self.fields = "".join([f"{name.replace('%', '%%')}: %s\r\n" for name in names])
        self.has_host = "host" in lowered
        #: Whether a Content-Type is among them (else a body gets the default one).
        self.typed = "content-type" in lowered
        #: aiohttp's default Accept and Accept-Encoding, those of them the names do not set.
        self.defaults = _defaults(lowered)


def _defaults(lowered: set[str]) -> str:
    """The default Accept and Accept-Encoding fields for a request whose (lower-case) header names are `lowered`."""
    if "accept" not in lowered and "accept-encoding" not in lowered:
        return _DEFAULTS
    defaults = "" if "accept" in lowered else "Accept: */*\r\n"
    if "accept-encoding" not in lowered:
        defaults += f"Accept-Encoding: {ACCEPT_ENCODING}\r\n"
    return defaults


def _remember(names: tuple[str, ...]) -> None:
    """Keep what the head needs of `names` (`_Names`) when they qualify: each ASCII, a token and not a name framing
    drops, and all within NAMES_KEPT_CHARS."""
    if sum(map(len, names)) > NAMES_KEPT_CHARS:
        return
    for name in names:
        if not name.isascii() or _NAME.fullmatch(name) is None or name.lower() in DROPPED:
            return
    if len(_KNOWN_NAMES) >= NAMES_KEPT:
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES[names] = _Names(names)


def request_head(request: Outgoing, where: Route) -> bytes:
    """The request line and header section, framed (wire.framed_headers); raises httpx.LocalProtocolError for a
    header that could not go on the wire as it is, ValueError for one that is not ASCII.

    A request whose tuple of header names was seen before (`_KNOWN_NAMES`) costs one tuple and one look-up for its
    names, and one formatting and four C-level scans for its values: the checks a value needs (ASCII; no CR, LF or
    NUL) are made on the formatted fields, whose names and separators hold no such character but one CR and one LF
    per field. Any doubt (names not seen, a value failing a check) takes the general path (`_checked_head`), which
    refuses exactly as it always has."""
    method = request.method
    if method not in METHODS and _METHOD.fullmatch(method) is None:
        raise httpx.LocalProtocolError(f"the method {method!r} is not a token")
    headers = request.headers
    known = _KNOWN_NAMES.get(tuple(headers))
    if known is None:
        return _checked_head(request, where)
    count = len(headers)
    fields = known.fields % tuple(headers.values())
    if not fields.isascii() or fields.count("\r") != count or fields.count("\n") != count or "\0" in fields:
        return _checked_head(request, where)  # (raises)
    content = request.content
    defaults = known.defaults
    if sends_length(request):  # the Content-Length framed_headers would add, after the others
        fields += f"Content-Length: {len(content)}\r\n"
        if content and not known.typed:
            defaults += "Content-Type: application/octet-stream\r\n"
    host = "" if known.has_host else where.host_line
    return f"{method} {where.path} HTTP/1.1\r\n{host}{fields}{defaults}\r\n".encode("ascii")


def _checked_head(request: Outgoing, where: Route) -> bytes:
    """`request_head` for a request whose names are not known yet, or one with a value to refuse: every name and
    value checked (and the names remembered, `_remember`, once the head is made)."""
    headers = framed_headers(request)
    if not all(_NAME.fullmatch(name) for name in headers):
        raise httpx.LocalProtocolError(f"a header name is not a token: {list(headers)!r}")
    # What no header value may hold (RFC 9110 5.5): it would end the field, or the section, early. (Three scans
    # for one character each, at C speed: a regular expression's character class costs about ten times as much.)
    values = "".join(headers.values())
    if "\r" in values or "\n" in values or "\0" in values:
        raise httpx.LocalProtocolError("a header value holds CR, LF or NUL")
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    names = {name.lower() for name in headers}
    host = "" if "host" in names else where.host_line
    defaults = _defaults(names)
    if request.content and "content-type" not in names:
        defaults += "Content-Type: application/octet-stream\r\n"
    head = f"{request.method} {where.path} HTTP/1.1\r\n{host}{fields}{defaults}\r\n".encode("ascii")
    _remember(tuple(request.headers))
    return head


class Connection(asyncio.Protocol):
    """One keep-alive connection and the answer being read on it. Idle (no parser) between requests: any byte
    arriving then closes it."""

    def __init__(self, pool: NativeTransport, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Counted in the pool's `opened` (until it is closed).
        self.counted = True
        self.parser: httptools.HttpResponseParser | None = None
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.reason = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        #: Every byte fed to the parser for this answer, the body's bytes among them, and its chunks so far.
        self.fed = 0
        self.body_bytes = 0
        self.chunk_count = 0
        self.head_done = False
        self.interim = False
        self.begun = False
        self.complete = False
        self.keep_alive = False
        #: Bytes came after the end of the answer: the connection may not be reused.
        self.extra = False
        self.error: Exception | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.head_waiter: asyncio.Future[None] | None = None
        self.body_waiter: asyncio.Future[None] | None = None

    # -- the exchange, as the transport drives it ------------------------------------------------------------

    def start(self, head: bytes, content: bytes, head_only: bool) -> asyncio.Future[None]:
        """Send a request; the returned future is done when the answer's head has been read."""
        self._reset(head_only)
        self.parser = httptools.HttpResponseParser(self)
        waiter = self.head_waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        if len(content) < _JOINED_BODY:
            self.transport.write(head + content)  # one system call for the common small request
        else:
            self.transport.writelines((head, content))
        return waiter

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not (self.extra or self.closed or self.chunks)

    def take_body(self) -> bytes:
        """The whole body, once the answer is complete."""
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return body

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises the connection's error (httpx's) if it breaks before its end."""
        chunks = self.chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= MAX_BUFFERED // 2 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                yield chunk
            elif self.error is not None:
                raise self.error
            elif self.complete:
                return
            else:
                waiter = self.body_waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                finally:
                    self.body_waiter = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool._forget(self)

    def _fail(self, error: Exception) -> None:
        """End the exchange with `error` (an httpx exception) and close the connection."""
        if self.error is None and not self.complete:
            self.error = error
        self._wake()
        self.close()

    def _wake(self) -> None:
        error = self.error
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            if error is not None:
                waiter.set_exception(error)
            elif self.head_done:
                waiter.set_result(None)
        waiter = self.body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # on an idle connection: it would be read as the next request's answer
            self.extra = True
            self.close()
            return
        if not self.head_done:
            room = MAX_HEAD_BYTES - self.head_bytes
            self.head_bytes += len(data)
            if len(data) > room:  # the head may end within the room left; if it does not, it is too long
                self._feed(data[:room])
                if not self.head_done and self.error is None:
                    self._fail(httpx.RemoteProtocolError(f"the answer's head is longer than {MAX_HEAD_BYTES} bytes"))
                    return
                data = data[room:]
        self._feed(data)
        if self.error is None and not self.complete and self.head_done and self._over_framing():
            self._fail(httpx.RemoteProtocolError("the answer sends more than its body and framing allow"))
            return
        self._wake()

    def _over_framing(self) -> bool:
        """Whether what the answer sent beyond its body (head, chunk framing and extensions, trailer fields)
        passed MAX_HEAD_BYTES plus CHUNK_FRAMING_BYTES per chunk."""
        return self.fed - self.body_bytes > MAX_HEAD_BYTES + CHUNK_FRAMING_BYTES * self.chunk_count

    def _feed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete or self.error is not None:  # after the answer's end: no other answer
            self.extra = self.extra or bool(data)
            return
        self.fed += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 answer (see on_headers_complete): what follows is not HTTP
            self.extra = True
        except httptools.HttpParserError as exc:
            if self.complete:  # the answer ended; what followed it stopped the parser
                self.extra = True
            else:
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc.__context__ or exc}"))

    def eof_received(self) -> bool | None:
        if self.parser is None:  # an idle connection the server closed: out of the pool now, not when the loop
            self.close()  # gets round to connection_lost (a request sent on it in between would be lost)
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.parser is not None and not self.complete and self.error is None:
            if self.head_done and self._until_close():
                self.complete = True  # the body ended with the connection, as its framing said it would
                self.keep_alive = False
            elif self.head_done:
                self.error = httpx.ReadError("the server closed the connection in the middle of the body")
            else:
                self.error = httpx.RemoteProtocolError("the server closed the connection without an answer")
        self._wake()
        self.close()

    def _until_close(self) -> bool:
        """Whether the answer's body is delimited by the end of the connection (no length, not chunked)."""
        for name, value in self.raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    # -- llhttp's callbacks (httptools) ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.begun:  # a second answer, which nothing asked for
            raise _Stop
        self.begun = True

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.raw_headers) >= MAX_FIELDS:
            raise _Stop(f"more than {MAX_FIELDS} header fields")
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise _Stop(f"a header field longer than {MAX_FIELD_BYTES} bytes")
        if value and value[-1] in _WHITESPACE:  # llhttp strips the whitespace before a value, not after it
            value = value.rstrip(b" \t")
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim answer: the real one follows
            self.interim = True
            self.reason = b""
            self.raw_headers = []
            return
        self.status = status
        self.head_done = True
        if self.head_only or status == 101:  # no body follows (HEAD), or no more HTTP (101): never pooled
            self.complete = True
            raise _Stop

    def on_chunk_header(self) -> None:
        self.chunk_count += 1

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self.body_bytes += len(body)
        if self.buffered > MAX_BUFFERED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = self.begun = False
            return
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        # Bytes after the end stop llhttp (a second answer: on_message_begin; any after `Connection: close`:
        # llhttp's own error) or arrive later (data_received): either way the connection is not pooled.


class NativeTransport:
    """The executor's own HTTP/1.1 transport (see the module docstring): an `Outgoing` in, an `Incoming` out,
    httpx's exceptions for failures."""

    def __init__(self, guard: EgressGuard, max_connections: int, *, verify: ssl.SSLContext | bool = True) -> None:
        self.guard = guard
        self.max_connections = max_connections
        self.ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        #: Pooled connections by (tls, host, port), the most recently used last.
        self.idle: dict[tuple[bool, str, int], list[Connection]] = {}
        #: Connections open or being opened, pooled or in use (at most max_connections).
        self.opened = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def send(self, request: Outgoing) -> Incoming:
        """Send `request` and read the answer's head."""
        where = route(request.target)
        head = request_head(request, where)  # refused before a connection is taken
        connection = self._pooled(where.key) or await self._acquire(where, request.timeout)
        try:
            await connection.start(head, request.content, request.method == "HEAD")
        except BaseException:
            connection.close()
            raise
        return NativeIncoming(connection)

    async def aclose(self) -> None:
        """Close the pooled connections; those in use close when their answer has been read."""
        self.closed = True
        for connections in list(self.idle.values()):
            for connection in list(connections):
                connection.close()
        self.idle.clear()

    # -- the pool -----------------------------------------------------------------------------------------------

    def _pooled(self, key: tuple[bool, str, int]) -> Connection | None:
        connections = self.idle.get(key)
        if connections is None:
            return None
        connection = connections.pop()
        if not connections:  # origins come from tasks: keep no empty list behind
            del self.idle[key]
        return connection  # open: a connection that closes leaves the pool at once (`_forget`)

    def release(self, connection: Connection) -> None:
        """Pool a connection whose answer ended cleanly; close any other."""
        if self.closed or not connection.reusable():
            connection.close()
            return
        connection.parser = None
        self.idle.setdefault(connection.key, []).append(connection)
        self._wake_one()

    def _forget(self, connection: Connection) -> None:
        """A connection closed: it no longer counts, and a waiting request may open another."""
        if connection.counted:
            connection.counted = False
            self.opened -= 1
            connections = self.idle.get(connection.key)
            if connections and connection in connections:
                connections.remove(connection)
                if not connections:
                    del self.idle[connection.key]
            self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _evict_idle(self) -> bool:
        """Close the least recently pooled connection to another origin, to make room; False when there is none."""
        for connections in self.idle.values():
            connections[0].close()  # lists in `idle` are never empty
            return True
        return False

    async def _acquire(self, where: Route, timeout: float | None) -> Connection:
        """A pooled connection to `where`, or a new one, within `timeout` seconds (waiting for room in the pool
        when it is full): httpx.PoolTimeout or httpx.ConnectTimeout after it."""
        phase: list[type[httpx.TimeoutException]] = [httpx.PoolTimeout]  # the last: what a timeout means now
        try:
            async with contextlib.nullcontext() if timeout is None else time_limit(timeout):
                return await self._room_or_connection(where, phase)
        except asyncio.TimeoutError:
            raise phase[-1](f"no connection to {where.host_header} within {timeout} s") from None

    async def _room_or_connection(self, where: Route, phase: list[type[httpx.TimeoutException]]) -> Connection:
        while True:
            connection = self._pooled(where.key)
            if connection is not None:
                return connection
            if self.opened < self.max_connections or self._evict_idle():
                break
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # the room it was woken for goes to the next in line
                raise
        phase.append(httpx.ConnectTimeout)
        return await self._connect(where)

    async def _connect(self, where: Route) -> Connection:
        self.opened += 1
        connection = Connection(self, where.key)
        try:
            addresses = await self.guard.addresses(where.host)  # PermanentFailure when the host is refused
            if not addresses:
                raise httpx.ConnectError(f"cannot resolve {where.host}")
            loop = asyncio.get_running_loop()
            failure: OSError | None = None
            for address in addresses:
                family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await loop.sock_connect(sock, (str(address), where.port))
                except OSError as exc:  # refused or unreachable: the next address may answer
                    sock.close()
                    failure = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                try:
                    await loop.create_connection(
                        lambda: connection,
                        sock=sock,
                        ssl=self.ssl_context if where.tls else None,
                        server_hostname=where.server_name if where.tls else None,
                    )
                except BaseException:
                    sock.close()
                    raise
                return connection
            raise httpx.ConnectError(f"cannot connect to {where.host_header}: {failure}")
        except OSError as exc:
            connection.close()
            raise httpx.ConnectError(f"cannot connect to {where.host_header}: {exc}") from exc
        except BaseException:
            connection.close()
            raise


class NativeIncoming(Incoming):
    """An answer read by `Connection`: the body is taken whole when it came with the head (the common small API
    answer), else chunk by chunk as it arrives."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection.status, connection.reason.decode("latin-1"), decode_headers(connection.raw_headers))
        self.connection = connection

    async def read(self, limit: int) -> tuple[bytes, bool]:
        connection = self.connection
        encoding = self.headers.get("content-encoding")
        try:
            if connection.complete:
                return read_whole(connection.take_body(), encoding, limit)
            return await read_chunks(connection.body_chunks(), encoding, limit)
        except BaseException:
            connection.close()
            raise
        finally:
            connection.pool.release(connection)

    async def discard(self) -> None:
        connection = self.connection
        if connection.complete:
            connection.take_body()
        connection.pool.release(connection)
