"""Message framing as both HTTP transports apply it: the last word on what a request's head says about its body.

Validation refuses framing and hop-by-hop headers in a task (checks.FRAMING_HEADERS), but the transports do
not rely on it: whatever hands them a request (a payload built without validation, a redirect, a future code
path), `frame_request` removes every such header and frames the body with one Content-Length computed from the
bytes that are sent. No request leaves with two framings, or with a length that is not its body's, so no byte of
one request can be read by a server as the start of another on a pooled connection.

`FramedHTTPTransport` is httpx's own transport (httpcore) with that step in front, and one more check behind
(a connection on which the server sent more than the response is closed). The aiohttp transport, which never sees
an httpx.Request, applies the same rule to the executor's own request record (wire.framed_headers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from gopherq.plugins.http.body import ACCEPT_ENCODING
from gopherq.plugins.http.checks import FRAMING_HEADERS

#: The names `frame_request` removes, as httpx keeps them (lower-case bytes).
_REMOVED = frozenset(name.encode("ascii") for name in FRAMING_HEADERS)
#: Methods that carry a Content-Length even when their body is empty (as httpx and aiohttp send them).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def frame_request(request: httpx.Request) -> bytes:
    """Give `request` exactly one framing, `Content-Length: <len(body)>` (none for an empty GET, HEAD, ...),
    without any other framing or hop-by-hop header; return the body. The body must have been read (raises
    httpx.RequestNotRead otherwise): the executor sends bodies it holds in memory, never a stream of unknown length
    that would need chunked framing.

    A request already framed that way (every request the executor builds from a validated task) is left as it
    is, after one pass over its header names."""
    content = request.content
    length = str(len(content)).encode("ascii")
    expected = bool(content) or request.method in _BODY_METHODS
    lengths = 0
    clean = True
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"content-length":
            lengths += 1
            clean = clean and value == length
        elif lower in _REMOVED:
            clean = False
    if clean and lengths == (1 if expected else 0):
        return content
    headers = [(name, value) for name, value in request.headers.raw if name.lower() not in _REMOVED]
    if expected:
        headers.append((b"Content-Length", length))
    request.headers = httpx.Headers(headers)
    return content


class FramedHTTPTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (httpcore), which frames every request with `frame_request` before sending it, asks for
    the codings the executor decodes unless the request names its own (as the aiohttp transport does), and does
    not pool a connection on which the server sent more than the response (see `_CleanEnd`). httpcore itself
    closes a connection whose response was not read to its end."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        frame_request(request)
        if "accept-encoding" not in request.headers:
            request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        response = await super().handle_async_request(request)
        network = response.extensions.get("network_stream")
        if network is not None:
            response.stream = _CleanEnd(response.stream, network)
        return response


class _CleanEnd(httpx.AsyncByteStream):
    """A response stream that, when it is closed, closes the connection too if h11 holds bytes the server sent
    past the end of the response (a Content-Length lie, a body on a HEAD answer, an unasked-for second answer):
    pooled, the connection would hand them to the next request as its answer. (Bytes that arrive later wait in
    the socket, where httpcore's check of an idle connection finds them and drops it.)"""

    def __init__(self, stream: Any, network: Any) -> None:
        self.stream = stream
        self.network = network

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.stream.__aiter__()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if _past_the_end(self.stream):
            # Closed before the pool sees the connection again: a closed socket counts as expired there.
            await self.network.aclose()
        await self.stream.aclose()


def _past_the_end(stream: Any) -> bool:
    """Whether h11 has bytes beyond the response it parsed. httpcore offers no public way to ask, so this reads
    its private attributes; when they are not there (another httpcore release) it answers True, so a connection
    is closed rather than trusted."""
    try:
        data, _ = stream._httpcore_stream._stream._connection._h11_state.trailing_data
    except AttributeError:
        return True
    return bool(data)
