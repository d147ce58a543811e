"""The HTTP executor's aiohttp transport (`transport = "aiohttp"`, the default before native_transport.py): one
aiohttp ClientSession, cut down to what the executor needs.

The executor sends its own small request record and reads its own answer record (wire.py: `Outgoing` in,
`Incoming` out, httpx's exceptions for failures, whatever the library underneath); this transport maps them
straight onto aiohttp, with no httpx object in between (httpx's own transport, httpcore, manages only a few hundred
requests/s at a concurrency of 100 on these machines, and httpx's objects over aiohttp cost a fifth of a worker's
CPU per HTTP task). What it does per request is what it must:

- the URL is handed to aiohttp as an already-encoded yarl URL, made once per distinct URL (wire.Target);
- aiohttp timeouts are built once per distinct time limit, not once per request;
- errors are mapped by one `except` per kind, and a refused connection is reported as httpx.ConnectError;
- a small body with a Content-Length and no Content-Encoding (the common API answer) is read at once; any other
  body is read chunk by chunk as aiohttp reads it, undecoded, and decoded with bounded output (body.py), reading
  stopping at the body limit;
- the response headers are decoded once, as httpx would decode them (wire.decode_headers).

It owns the framing of what it sends (wire.framed_headers: one Content-Length, no task-supplied framing or
hop-by-hop header), and returns a connection to the pool only when its response was read to a clean end: a body
left unread (limit reached, timeout, cancellation) or broken (protocol error), or followed by more bytes (at once,
or while the connection waits in the pool: CheckedConnector), closes the connection.

It never follows redirects, keeps no cookies and reads no proxy settings from the environment: the executor
follows redirects itself (checking each hop against the egress guard) and tasks must not share cookies.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gopherq.plugins.http.body import ACCEPT_ENCODING, read_chunks, read_whole
from gopherq.plugins.http.egress import EgressGuard
from gopherq.plugins.http.wire import Incoming, Outgoing, decode_headers, framed_headers

#: Largest body read at once (see the module docstring); larger ones are streamed.
EAGER_BODY_LIMIT = 64 * 1024


class AiohttpTransport:
    """The executor's transport over aiohttp, with a pool of `max_connections` keep-alive connections: an
    `Outgoing` in, an `Incoming` out (see wire.py), httpx's exceptions for failures."""

    def __init__(
        self, max_connections: int, *, verify: ssl.SSLContext | bool = True, resolver: Any | None = None
    ) -> None:
        self.max_connections = max_connections
        self.resolver = resolver
        self.ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        self.session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self.resolver is None:
            connector = CheckedConnector(limit=self.max_connections, ssl=self.ssl_context)
        else:  # pinned: every connection asks the resolver (no second DNS cache in between)
            connector = CheckedConnector(
                limit=self.max_connections, ssl=self.ssl_context, resolver=self.resolver, use_dns_cache=False
            )
        self.session = aiohttp.ClientSession(
            connector=connector,
            request_class=DecodableRequest,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self.session

    async def send(self, request: Outgoing) -> Incoming:
        """Send `request` (framed here: wire.framed_headers) and read the answer's head."""
        session = self.session or self._open()
        target = request.target
        url = target.transport_url
        if url is None:  # already encoded (wire.target): aiohttp need not parse and encode it again
            url = target.transport_url = URL(target.url, encoded=True)
        try:
            response = await session.request(
                request.method,
                url,
                headers=framed_headers(request),
                data=request.content or None,
                allow_redirects=False,
                timeout=_client_timeout(request.timeout),
            )
        except Exception as exc:
            raise _httpx_error(exc) from exc
        return AiohttpIncoming(response)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class AiohttpIncoming(Incoming):
    """An aiohttp response as the executor reads it."""

    __slots__ = ("response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(response.status, response.reason or "", decode_headers(response.raw_headers))
        self.response = response

    def _small(self) -> bool:
        """A small body with a Content-Length and no Content-Encoding (the common API answer): read at once."""
        length = self.response.content_length
        return length is not None and length <= EAGER_BODY_LIMIT and "content-encoding" not in self.headers

    async def read(self, limit: int) -> tuple[bytes, bool]:
        response = self.response
        try:
            if self._small():
                return read_whole(await response.read(), None, limit)
            return await read_chunks(_chunks(response.content), self.headers.get("content-encoding"), limit)
        except Exception as exc:
            response.close()
            raise _httpx_error(exc) from exc
        finally:
            _release_or_close(response)

    async def discard(self) -> None:
        response = self.response
        if self._small():
            try:
                await response.read()
            except Exception:
                response.close()
        _release_or_close(response)


def _release_or_close(response: aiohttp.ClientResponse) -> None:
    """release() returns a fully read connection to the pool; close() drops one whose body was left unread."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


async def _chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The undecoded body as aiohttp reads it, chunk by chunk."""
    while True:
        chunk = await content.readany()
        if not chunk:
            return
        yield chunk


class DecodableRequest(aiohttp.ClientRequest):
    """aiohttp's request, asking by default for the codings the executor decodes (body.ACCEPT_ENCODING), not
    aiohttp's own list (which grows with `br` or `zstd` when their libraries are installed)."""

    DEFAULT_HEADERS = {**aiohttp.ClientRequest.DEFAULT_HEADERS, aiohttp.hdrs.ACCEPT_ENCODING: ACCEPT_ENCODING}


class CheckedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, which does not hand out a pooled connection on which something arrived while it was
    idle. aiohttp pools a connection only when its response ended cleanly (nothing more buffered), but it keeps
    reading an idle connection and, when it hands it out again, checks only that it is still open: bytes a server
    sent in between (a second answer nobody asked for, a late 408) would be read as the answer to the next
    request. Such a connection is closed instead, and another one taken. (Bytes still in the socket, not yet read
    by the event loop, are not looked for: a system call on every request, for an answer only that same server
    could have sent.)"""

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[aiohttp.tracing.Trace], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.connector.Connection:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol is None or not protocol.should_close:
                return connection
            connection.close()


@functools.lru_cache(maxsize=1024)  # tasks use a handful of time limits: one ClientTimeout each, not one a request
def _client_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for an attempt: `seconds` for connecting and for waiting for a pooled connection, no
    read timeout (see wire.Outgoing.timeout)."""
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_connect=seconds, sock_read=None)


def _httpx_error(exc: Exception) -> Exception:
    """The httpx exception that means what an aiohttp (or asyncio) error means; other exceptions unchanged."""
    message = str(exc) or type(exc).__name__
    kind: type[httpx.RequestError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        kind = httpx.ReadTimeout
    elif isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        kind = httpx.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = httpx.ReadError
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, (aiohttp.ClientError, OSError)):
        kind = httpx.NetworkError
    else:
        return exc
    return kind(message)


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that answers with the addresses the egress guard checked for a host (checking it
    first when it has not), so the connection goes where the check looked. It never asks DNS on its own."""

    def __init__(self, guard: EgressGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self.guard.addresses(host)  # the one source both transports connect through
        if not addresses:
            raise OSError(f"cannot resolve {host}")
        version = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        wanted = [address for address in addresses if version is None or address.version == version]
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in (wanted or addresses)
        ]

    async def close(self) -> None:
        return None
