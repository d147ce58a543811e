"""httpx's own transport (httpcore) for `transport = "httpx"`, pinned to the addresses the egress guard checked.

httpcore resolves a host itself when it opens a connection, so between the guard's check and the connection a DNS
server could answer with another address (DNS rebinding), and within `dns_cache_seconds` the guard would not look
again. `PinnedBackend` is an httpcore network backend that never resolves: it asks the guard for the host's
checked addresses (`EgressGuard.addresses`, the same source aiohttp's `PinnedResolver` uses) and connects to one
of them. httpcore still takes the Host header and the TLS server name from the URL, so certificates are checked
against the host name, not the address.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from gopherq.plugins.http.body import read_body
from gopherq.plugins.http.egress import EgressGuard
from gopherq.plugins.http.framing import FramedHTTPTransport
from gopherq.plugins.http.wire import Incoming, Outgoing, decode_headers


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses the egress guard allowed for a host, in the resolver's order, never elsewhere."""

    def __init__(self, guard: EgressGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.guard.addresses(host)  # raises PermanentFailure when the host is refused
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        options = list(socket_options or ())
        for address in addresses[:-1]:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, options)
            except httpcore.ConnectError:  # refused or unreachable: the next address may answer
                continue
        return await self.inner.connect_tcp(str(addresses[-1]), port, timeout, local_address, options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the http executor")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedHTTPTransport(FramedHTTPTransport):
    """The executor's httpx transport (framed: see framing) whose connection pool connects through
    `PinnedBackend`.

    httpx builds its pool without a way to pass a network backend, so the pool is built again here with the same
    settings httpx gives it and the backend added; the class refuses to start when a later httpx stores its pool
    differently, rather than connect unpinned."""

    def __init__(self, guard: EgressGuard, max_connections: int) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        super().__init__(limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("this httpx version keeps its connection pool elsewhere: cannot pin its connections")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(guard),
        )


@functools.lru_cache(maxsize=256)  # one per distinct time limit, not one per request
def timeout_extension(seconds: float | None) -> dict[str, float | None]:
    """httpx's timeout extension for an attempt time limit (shared: never modify it).

    Only connecting and waiting for a pooled connection are limited here: reads and writes are bounded by the
    attempt's own time limit, which every execution path enforces (the worker's watchdog, run_attempt's timeout),
    and a per-read timeout would be re-armed by the transport on every chunk received."""
    return httpx.Timeout(connect=seconds, read=None, write=None, pool=seconds).as_dict()


class HttpxTransport:
    """The executor's transport over httpx's own (`PinnedHTTPTransport`): converts the executor's `Outgoing` to
    an httpx.Request and the httpx.Response to an `Incoming` (see wire.py)."""

    def __init__(self, guard: EgressGuard, max_connections: int) -> None:
        self.transport = PinnedHTTPTransport(guard, max_connections)

    async def send(self, request: Outgoing) -> Incoming:
        outgoing = httpx.Request(
            request.method,
            request.target.url,
            headers=request.headers,  # framed by FramedHTTPTransport
            content=request.content or None,
            extensions={"timeout": timeout_extension(request.timeout)},
        )
        return HttpxIncoming(await self.transport.handle_async_request(outgoing))

    async def aclose(self) -> None:
        await self.transport.aclose()


class HttpxIncoming(Incoming):
    """An httpx response as the executor reads it."""

    __slots__ = ("response",)

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code, response.reason_phrase, decode_headers(response.headers.raw))
        self.response = response

    async def read(self, limit: int) -> tuple[bytes, bool]:
        try:
            return await read_body(self.response, limit)
        finally:
            await self.response.aclose()

    async def discard(self) -> None:
        await self.response.aclose()
