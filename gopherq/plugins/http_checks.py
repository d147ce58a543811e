"""Checks that make an `http` task's request buildable, run wherever the task is validated (client and worker).

A request that cannot be built fails the same way on every attempt, so it must never reach the retry loop: what
can be known from the task alone is refused here, at enqueue time (and dead-lettered as `schema_invalid` when a
task arrives raw), with a message that names the header or the part of the URL at fault. Both transports then
get requests they can send, and behave alike. The checks are cheap string tests: they run on every task a
client enqueues and every task a worker admits.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from urllib.parse import SplitResult, unquote, urlsplit

#: RFC 9110 `token`: the characters a header name may have.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Visible ASCII, space and tab: what httpx (and so both transports) can encode in a header value, without the
#: control characters (CR, LF, NUL, ...) that would split or corrupt the request.
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
#: An ASCII host name as resolvers accept it (letters, digits, hyphens, underscores, dots).
_HOST_NAME = re.compile(r"^[A-Za-z0-9_\-.]+$")
#: The last label of a host that a URL parser reads as a number (WHATWG "ends in a number").
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")


def check_headers(headers: dict[str, str]) -> None:
    """Raise ValueError naming the first header whose name or value cannot be sent as is."""
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~)")
        if not _FIELD_VALUE.match(value):
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} has a CR or LF in its value (refused: it would inject headers)")
            raise ValueError(f"header {name!r} has a control or non-ASCII character in its value")


#: URLs up to this long have their verdict cached: tasks call the same few endpoints over and over, and a URL's
#: check costs more than the rest of an `http` task's validation. Longer ones are checked each time, so the cache's
#: memory stays small whatever producers send.
_CACHED_URL_CHARS = 2048


def check_url(url: str) -> None:
    """Raise ValueError when `url` is not an absolute http:// or https:// URL with a host a request can be sent
    to (a valid port, a host name or canonical address): a request to it would fail on every attempt."""
    problem = _cached_url_problem(url) if len(url) <= _CACHED_URL_CHARS else _url_problem(url)
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=1024)
def _cached_url_problem(url: str) -> str | None:
    return _url_problem(url)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return _host_problem(parts.hostname)


@functools.lru_cache(maxsize=4096)  # tasks call a few hosts, over and over: one verdict each
def _host_problem(host: str) -> str | None:
    try:
        _check_host_name(host)
    except ValueError as exc:
        return str(exc)
    return None


def _check_host_name(host: str) -> None:
    if ":" in host:  # an IPv6 literal: urlsplit has already checked it
        return
    if host.isascii():
        if not _HOST_NAME.match(host):
            raise ValueError(f"has a host {host!r} with characters a host name cannot have")
        last = host.rstrip(".").rpartition(".")[2]
        if _NUMERIC_LABEL.match(last):
            try:
                canonical = str(ipaddress.IPv4Address(host))
            except ValueError:
                canonical = None
            if canonical != host:
                raise ValueError(f"has a host {host!r} that is not a canonical IPv4 address (write it as a.b.c.d)")
        elif any(label.lower().startswith("xn--") for label in host.split(".")):
            _idna(host)
        return
    _idna(host)


def _idna(host: str) -> None:
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ValueError(f"has a host {host!r} that is not a valid internationalised domain name ({exc})") from None


def check_credentials(parts: SplitResult, headers: dict[str, str]) -> None:
    """URL userinfo becomes Basic auth; with an Authorization header too, which one to send would be a guess."""
    if "@" in parts.netloc and any(name.lower() == "authorization" for name in headers):
        raise ValueError(
            "has credentials (user:password@) and the task also sets an Authorization header: give only one"
        )


def basic_auth(parts: SplitResult) -> tuple[str, str] | None:
    """(URL without userinfo, `Authorization` value) for a URL with userinfo, as httpx's client would send it."""
    if "@" not in parts.netloc:
        return None
    creds, _, host = parts.netloc.rpartition("@")
    user, _, password = creds.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return parts._replace(netloc=host).geturl(), f"Basic {token}"
