"""Message framing as both HTTP transports apply it: the last word on what a request's head says about its body.

Validation refuses framing and hop-by-hop headers in a task (http_checks.FRAMING_HEADERS), but the transports do
not rely on it: whatever hands them a request (a payload built without validation, a redirect, a future code
path), `frame_request` removes every such header and frames the body with one Content-Length computed from the
bytes that are sent. No request leaves with two framings, or with a length that is not its body's, so no byte of
one request can be read by a server as the start of another on a pooled connection.

`FramedHTTPTransport` is httpx's own transport (httpcore) with that one step in front. The aiohttp transport
calls `frame_request` itself.
"""

from __future__ import annotations

import httpx

from gopherq.plugins.http_checks import FRAMING_HEADERS

#: The names `frame_request` removes, as httpx keeps them (lower-case bytes).
_REMOVED = frozenset(name.encode("ascii") for name in FRAMING_HEADERS)
#: Methods that carry a Content-Length even when their body is empty (as httpx and aiohttp send them).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def frame_request(request: httpx.Request) -> bytes:
    """Give `request` exactly one framing, `Content-Length: <len(body)>` (none for an empty GET, HEAD, ...),
    without any other framing or hop-by-hop header; return the body. The body is read in full first: the executor
    sends bodies it holds in memory, never a stream of unknown length that would need chunked framing.

    A request already framed that way (every request the executor builds from a validated task) is left as it
    is, after one pass over its header names."""
    try:
        content = request.content
    except httpx.RequestNotRead:
        content = await request.aread()
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
    """httpx's transport (httpcore), which frames every request with `frame_request` before sending it. httpcore
    already closes a connection whose response was not read to its end instead of pooling it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await frame_request(request)
        return await super().handle_async_request(request)
