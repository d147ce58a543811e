"""The executor's own small records of a request and its answer, which every transport speaks.

The executor used to build an httpx.Request per attempt and receive an httpx.Response, even over the aiohttp
transport, which then converted both to and from aiohttp's objects: httpx's URL parsing, header containers and
response machinery cost about 40 µs of worker CPU per HTTP task (a fifth of it), for nothing a task can see.
Now the executor builds an `Outgoing` (method, `Target`, headers, body bytes, time limit) and reads an `Incoming`
(status, headers, a body read with bounds); the aiohttp transport maps them straight onto aiohttp, and the httpx
transport (`transport = "httpx"`) converts to and from httpx's objects, as it must.

A `Target` is a URL parsed once: httpx's parser remains the one that decides what a URL means (its normalised
text, host and port), except for the common plain URL that httpx leaves as it is (lower-case ASCII host, explicit
non-default port or none, a path and query of unreserved and sub-delimiter characters, no dot segment, escape or
fragment), recognised by one regular expression (checks.PLAIN_URL); tests check that both agree on such URLs.
Targets are kept per URL string in a bounded cache: tasks call the same endpoints over and over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

import httpx

from gopherq.plugins.http.checks import FRAMING_HEADERS, PLAIN_URL

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: URLs up to this long are cached (`target`); the cache holds at most `_CACHED_TARGETS` of them.
_CACHED_URL_CHARS = 2048
_CACHED_TARGETS = 1024
_targets: dict[str, Target] = {}


class Target:
    """Where a request goes: the URL as sent (encoded, without userinfo), and its origin as httpx names it (the
    host IDNA-decoded, the port None when it is the scheme's default). Shared by every request to the URL: never
    modify it (a plain class with slots, not a dataclass: one is made per distinct URL, on the hot path)."""

    __slots__ = ("host", "port", "route", "scheme", "transport_url", "url")

    def __init__(self, url: str, scheme: str, host: str, port: int | None) -> None:
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        #: The transport's own parsed form of `url`, made on first use (the aiohttp transport's yarl URL).
        self.transport_url: Any = None
        #: The native transport's (native_transport.Route), made on first use; a slot of its own, as one Target
        #: is shared by every executor in the process, whatever its transport.
        self.route: Any = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and (self.url, self.origin) == (other.url, other.origin)

    def __hash__(self) -> int:
        return hash(self.url)

    def __repr__(self) -> str:
        return f"Target({self.url!r})"

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return (self.scheme, self.host, self.port)

    def join(self, location: str) -> Target:
        """The target a redirect's Location leads to (relative to this one), as httpx resolves it."""
        return target(str(httpx.URL(self.url).join(location)))


def target(url: str) -> Target:
    """The Target of an absolute URL without userinfo; raises httpx.InvalidURL (or ValueError) when httpx cannot
    parse it."""
    found = _targets.get(url)
    if found is not None:
        return found
    plain = PLAIN_URL.fullmatch(url)
    if plain is not None and "/." not in url and "xn--" not in plain.group(2):  # httpx decodes IDNA labels
        scheme, host, port_text = plain.group(1, 2, 3)
        port = int(port_text) if port_text else None
        if port is not None and (port > 65535 or port == _DEFAULT_PORTS[scheme]):
            found = _parsed(url)
        else:
            found = Target(url, scheme, host, port)
    else:
        found = _parsed(url)
    if len(url) <= _CACHED_URL_CHARS:
        if len(_targets) >= _CACHED_TARGETS:  # URLs come from tasks: never let them pile up
            _targets.clear()
        _targets[url] = found
    return found


def _parsed(url: str) -> Target:
    parsed = httpx.URL(url)
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise httpx.UnsupportedProtocol(f"request URL {url!r} is not an absolute http:// or https:// URL")
    return Target(str(parsed), parsed.scheme, parsed.host, parsed.port)


@dataclass(slots=True)
class Outgoing:
    """One request as the executor means it: its headers are the task's and the executor's, without framing
    (the transports frame it: `framed_headers`)."""

    method: str
    target: Target
    headers: dict[str, str]
    content: bytes
    #: Seconds allowed for connecting and for waiting for a pooled connection (reads are bounded by the
    #: attempt's own time limit: see the executor's `timeout_extension`).
    timeout: float | None


#: The names `framed_headers` drops, lower-case.
DROPPED = frozenset(FRAMING_HEADERS)
#: Methods that carry a Content-Length even when their body is empty (as httpx and aiohttp send them).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def sends_length(request: Outgoing) -> bool:
    """Whether the request goes out with a `Content-Length` (`framed_headers` adds it): a body, or a method that
    carries one even when empty."""
    return bool(request.content) or request.method in BODY_METHODS


def framed_headers(request: Outgoing) -> dict[str, str]:
    """The request's headers as they go on the wire: without any framing or hop-by-hop header (whatever built the
    request: validation refuses them in tasks, but a redirect or a future path must not bring them back), plus one
    `Content-Length` computed from the body (none for an empty GET, HEAD, ...). The request's own dict is returned
    when it needs no change (every request built from a validated task without a body). Raises ValueError for a
    name or value that is not ASCII, as httpx does (validation refuses them; this is for what bypassed it)."""
    headers = request.headers
    clean = True
    for name, value in headers.items():
        if not (name.isascii() and value.isascii()):
            raise ValueError(f"header {name!r} cannot be encoded as ASCII")
        if name.lower() in DROPPED:
            clean = False
    expected = sends_length(request)
    if clean and not expected:
        return headers
    framed = {name: value for name, value in headers.items() if name.lower() not in DROPPED}
    if expected:
        framed["Content-Length"] = str(len(request.content))
    return framed


def decode_headers(raw: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    """Response headers as the result record keeps them, as `dict(httpx.Headers(raw))` gives them: lower-case
    names, a repeated name's values joined by ", ", all decoded as ASCII, else UTF-8, else ISO-8859-1 (one choice
    for the whole set, as httpx makes it)."""
    try:  # the common answer: ASCII, no name repeated
        fast = {name.decode("ascii").lower(): value.decode("ascii") for name, value in raw}
    except UnicodeDecodeError:
        pass
    else:
        if len(fast) == len(raw):
            return fast
    encoding = "ascii"
    if not all(raw_name.isascii() and raw_value.isascii() for raw_name, raw_value in raw):
        encoding = "utf-8"
        try:
            for raw_name, raw_value in raw:
                raw_name.decode("utf-8")
                raw_value.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "latin-1"
    out: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        name = name_bytes.lower().decode(encoding)  # ASCII letters only, as httpx lowers names
        value = value_bytes.decode(encoding)
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class Incoming:
    """An answer's status and headers; its body is read (with bounds) or discarded through the transport's
    subclass, which also decides whether the connection may be reused."""

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = reason
        #: See `decode_headers`.
        self.headers = headers

    async def read(self, limit: int) -> tuple[bytes, bool]:
        """(the first `limit` decoded bytes of the body, whether there was more); the connection is released
        when the body was read to a clean end, closed otherwise."""
        raise NotImplementedError

    async def discard(self) -> None:
        """Drop the body unread (a redirect's): the connection is kept only when nothing of it is left."""
        raise NotImplementedError


class Transport(Protocol):
    """What the executor sends through (native_transport.NativeTransport, aiohttp_transport.AiohttpTransport,
    httpx_transport.HttpxTransport).
    Failures are raised as httpx's exceptions (httpx.ConnectError, httpx.ReadTimeout, ...), whatever the library
    underneath, so the executor maps them to outcomes in one place."""

    async def send(self, request: Outgoing) -> Incoming: ...

    async def aclose(self) -> None: ...


_T = TypeVar("_T")


class once(Generic[_T]):
    """functools.cached_property without its lock: Python 3.11's takes an RLock on every first access, and every
    attribute of an http task's payload that is computed on demand (its target, credentials, status sets) is
    read once per task, in one thread. The value is stored in the instance's __dict__ and read from there next
    time, as cached_property does."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> once[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> _T | once[_T]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value
