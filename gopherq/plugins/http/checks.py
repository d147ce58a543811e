"""Checks that make an `http` task's request buildable, run wherever the task is validated (client and worker).

A request that cannot be built fails the same way on every attempt, so it must never reach the retry loop: what
can be known from the task alone is refused here, at enqueue time (and dead-lettered as `schema_invalid` when a
task arrives raw), with a message that names the header or the part of the URL at fault. Both transports then
get requests they can send, and behave alike. Headers that frame the message or steer its connection are the
executor's alone (FRAMING_HEADERS): a task that set them could smuggle a request into the connection another
task uses next. The checks are cheap string tests: they run on every task a client enqueues and every task a
worker admits.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from urllib.parse import SplitResult, quote, unquote, urlsplit

#: RFC 9110 `token`: the characters a header name may have.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Visible ASCII, space and tab: what httpx (and so both transports) can encode in a header value, without the
#: control characters (CR, LF, NUL, ...) that would split or corrupt the request.
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e]*\Z")
#: An ASCII host name as resolvers accept it (letters, digits, hyphens, underscores, dots).
_HOST_NAME = re.compile(r"^[A-Za-z0-9_\-.]+\Z")
#: What no URL a request is sent to may hold: control characters and DEL (a space is sent encoded, as %20).
_URL_UNSAFE = re.compile("[\x00-\x1f\x7f]")
#: The last label of a host that a URL parser reads as a number (WHATWG "ends in a number").
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)\Z")


#: Headers that frame the message or steer its connection (RFC 9112; the hop-by-hop fields of RFC 9110 section
#: 7.6.1), with why each is the executor's. A task that could set them could make one request
#: look like two (Transfer-Encoding beside the Content-Length the body gets), cut its own body (Content-Length: 0)
#: or change what the pooled connection does next, and so smuggle a request or a response into another task's.
#: The methods an `http` task may use (the payload's validation; a transport sends others only after checking them).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

FRAMING_HEADERS: dict[str, str] = {
    "transfer-encoding": "the executor frames every body itself (Content-Length from the bytes it sends)",
    "content-length": "the executor frames every body itself (Content-Length from the bytes it sends)",
    "trailer": "the executor sends no trailers",
    "trailers": "the executor sends no trailers",
    "te": "the executor asks for no transfer codings",
    "expect": "the executor sends the body with the headers and never waits for 100 Continue",
    "connection": "the executor manages its pooled connections",
    "keep-alive": "the executor manages its pooled connections",
    "proxy-connection": "the executor manages its pooled connections",
    "upgrade": "the executor speaks HTTP/1.1 and never switches protocols",
    "http2-settings": "the executor speaks HTTP/1.1 and never switches protocols",
}


def check_headers(headers: dict[str, str]) -> None:
    """Raise ValueError naming the first header that cannot be sent as is: a name that is not a token, a value
    with control or non-ASCII characters, a framing or hop-by-hop header (FRAMING_HEADERS), or a name given twice
    in different cases (which value an endpoint reads would be a guess)."""
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~)")
        lower = name.lower()
        why = FRAMING_HEADERS.get(lower)
        if why is not None:
            raise ValueError(f"header {name!r} is refused: {why}; a task may not set framing or hop-by-hop headers")
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (as {seen[lower]!r} and {name!r}): names ignore case")
        seen[lower] = name
        if not _FIELD_VALUE.match(value):
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} has a CR or LF in its value (refused: it would inject headers)")
            raise ValueError(f"header {name!r} has a control or non-ASCII character in its value")


#: A plain URL: scheme, lower-case ASCII host, optional port, a path and an optional query made of characters httpx
#: keeps as they are (no `%`, no `#`, no space, nothing non-ASCII). Validation checks such a URL without urlsplit
#: (only its host and port are left to check), and httpx would not change it (wire.target).
PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9_.-]+)(?::([1-9][0-9]{0,4}))?"
    r"(/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?"
)
#: RFC 8187 attr-char beyond letters and digits: what an ext-value keeps as it is.
_ATTR_CHARS = "!#$&+-.^_`|~"


def idempotency_key(task_id: str) -> str:
    """The Idempotency-Key an attempt sends for `task_id`: the id itself when it is a safe header value (every id
    of printable ASCII), else its RFC 8187 ext-value, `UTF-8''` and the id's UTF-8 bytes percent-encoded
    (`commande-café` -> `UTF-8''commande-caf%C3%A9`): ASCII, the same on every attempt, and decoded back to the id
    by any RFC 8187 (or RFC 2231) parser."""
    # Printable ASCII, spaces only inside (a parser strips them at either end, and two ids would send one key).
    if task_id.isascii() and task_id.isprintable() and task_id[:1] != " " and task_id[-1:] != " ":
        return task_id
    return "UTF-8''" + quote(task_id, safe=_ATTR_CHARS, errors="surrogatepass")


#: URLs up to this long have their verdict cached: tasks call the same few endpoints over and over, and a URL's
#: check costs more than the rest of an `http` task's validation. Longer ones are checked each time, so the cache's
#: memory stays small whatever producers send.
_CACHED_URL_CHARS = 2048


def check_url(url: str) -> None:
    """Raise ValueError when `url` is not an absolute http:// or https:// URL with a host a request can be sent
    to (a valid port, a host name or canonical address): a request to it would fail on every attempt."""
    plain = PLAIN_URL.fullmatch(url)
    if plain is not None and (plain.group(3) is None or int(plain.group(3)) <= 65535):
        problem = _host_problem(plain.group(2))  # what _url_problem would find: only the host is left to check
    elif len(url) <= _CACHED_URL_CHARS:
        problem = _cached_url_problem(url)
    else:
        problem = _url_problem(url)
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=1024)
def _cached_url_problem(url: str) -> str | None:
    return _url_problem(url)


def _url_problem(url: str) -> str | None:
    unsafe = _URL_UNSAFE.search(url)
    if unsafe is not None:  # urlsplit drops tabs and line ends without a word; the request could not be sent
        return f"has a control character at position {unsafe.start()} ({unsafe.group()!r})"
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
