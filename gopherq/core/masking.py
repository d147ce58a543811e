"""One masking function for every exit point: results, dead letters, events, logs, CLI, dashboard and API.

A task in Redis keeps its secrets (a retry needs them); whatever GoPherQ shows or sends elsewhere goes through a
`Masker` first. It walks any JSON-like value and hides: the value of any mapping key that names a secret header
(case-insensitive, wherever it sits: a task's `headers`, a result's response headers, an event's data), the
userinfo of every URL, and the values of configured query parameters, in URLs that are values of their own or
that appear inside free text such as an error message, and in URLs nested inside a URL (a query value such as
`?next=https://user:pw@host/?token=t`, percent-encoded or not, a path or a fragment), down to MAX_URL_NESTING
levels, below which a nested URL is hidden whole. It knows header names and URLs, not HTTP: any executor's payload
is masked by the same rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit


class MaskingTable(Protocol):
    """The `[masking]` settings table (`sections.MaskingSettings`), as the masker reads it."""

    @property
    def headers(self) -> Iterable[str]: ...

    @property
    def query_params(self) -> Iterable[str]: ...


class WithMasking(Protocol):
    """Settings that have a `[masking]` table (`gopherq.Settings`): declared here so that masking, which the
    settings module uses, does not import it back."""

    @property
    def masking(self) -> MaskingTable: ...


MASK = "********"

#: Masked whatever the settings say: the headers that carry credentials in every HTTP deployment.
ALWAYS_MASKED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

#: Query parameters masked unless the settings give another list.
DEFAULT_MASKED_PARAMS = ("token", "access_token", "api_key", "apikey", "key", "password", "secret", "signature")

_SCALARS = frozenset({int, float, bool, type(None)})

#: What follows a URL's `://` in free text: everything up to a space, a quote or an angle bracket.
_URL_REST = re.compile(r"[^\s'\"<>`]+")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_END = frozenset(" \t\n\r\f\v'\"<>`")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

#: How many levels of URLs inside URLs are masked (a redirect target in a query value is one level); a URL nested
#: deeper is replaced whole by the mask, so the work per URL stays bounded whatever a producer sends.
MAX_URL_NESTING = 4

#: "://" percent-encoded (lower-cased): a URL inside a query value encoded once more than the value itself.
_ENCODED_SCHEME_END = "%3a%2f%2f"


class Masker:
    """Hides secrets in values before they leave the process. Immutable; build one per settings object."""

    __slots__ = ("headers", "params")

    def __init__(self, headers: Iterable[str] = (), query_params: Iterable[str] = DEFAULT_MASKED_PARAMS) -> None:
        self.headers = ALWAYS_MASKED_HEADERS | {name.lower() for name in headers}
        self.params = frozenset(name.lower() for name in query_params)

    @classmethod
    def from_settings(cls, settings: WithMasking) -> Masker:
        """The masker the `[masking]` table configures."""
        cfg = settings.masking
        return cls(cfg.headers, cfg.query_params)

    def value(self, data: Any) -> Any:
        """`data` (dicts, lists, tuples, strings, scalars) with every secret masked: a copy, or `data` itself when
        it is a flat mapping with nothing to mask (the common event data, masked on every event)."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, Mapping):
            if self._plain(data):
                return data
            return {key: self._entry(key, item) for key, item in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.value(item) for item in data]
        return data

    def _plain(self, data: Mapping[Any, Any]) -> bool:
        """Whether a mapping holds only numbers, booleans, nulls and URL-free strings under keys that name no
        secret header: then there is nothing to mask in it."""
        headers = self.headers
        for key, item in data.items():
            kind = type(item)
            if kind is str:
                if "://" in item:
                    return False
            elif kind not in _SCALARS:
                return False
            if type(key) is str and key.lower() in headers:
                return False
        return True

    def _entry(self, key: Any, item: Any) -> Any:
        if isinstance(key, str) and key.lower() in self.headers and item is not None:
            return MASK
        return self.value(item)

    def text(self, text: str) -> str:
        """`text` with every URL in it masked (a whole-string URL included)."""
        if "://" not in text:
            return text
        return "".join(self._text_parts(text, MAX_URL_NESTING))

    def _text_parts(self, text: str, depth: int) -> Iterator[str]:
        """`text` in pieces, each URL masked with `depth` levels of nesting left. A URL is `scheme://rest`: its
        scheme the longest run of scheme characters before `://` that starts with a letter, its rest up to a
        space, a quote or an angle bracket. Found from each `://`, in time linear in the text (a regular
        expression that tries every letter as a scheme's start takes quadratic time on a long run of letters:
        minutes for a megabyte, which a producer's task or an endpoint's answer can be)."""
        done = 0
        at = text.find("://")
        while at >= 0:
            start = at
            while start > done and text[start - 1] in _SCHEME_CHARS:
                start -= 1
            while start < at and text[start] not in _LETTERS:
                start += 1
            rest = _URL_REST.match(text, at + 3) if start < at else None
            if rest is None:  # no scheme, or nothing after it: not a URL
                at = text.find("://", at + 1)
                continue
            yield text[done:start]
            yield self._url(text[start : rest.end()], depth)
            done = rest.end()
            at = text.find("://", done)
        yield text[done:]

    def url(self, url: str) -> str:
        """`url` with its userinfo and the values of secret query parameters masked, and so every URL nested in
        it (see MAX_URL_NESTING)."""
        if plain_url(url):
            return url
        return self._url(url, MAX_URL_NESTING)

    def _url(self, url: str, depth: int) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        netloc = parts.netloc
        if "@" in netloc:
            creds, _, host = netloc.rpartition("@")
            user = creds.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}" if ":" in creds else f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            masked = [(self._nested(name, depth), self._param(name, value, depth)) for name, value in pairs]
            if masked != pairs:
                query = urlencode(masked, safe="*")
        path, fragment = self._nested(parts.path, depth), self._nested(parts.fragment, depth)
        if netloc == parts.netloc and query == parts.query and path == parts.path and fragment == parts.fragment:
            return url
        return urlunsplit((parts.scheme, netloc, path, query, fragment))

    def _param(self, name: str, value: str, depth: int) -> str:
        return MASK if name.lower() in self.params else self._nested(value, depth)

    def _nested(self, text: str, depth: int) -> str:
        """`text`, a part of a URL at `depth` levels left, with the URLs in it masked: a URL as is, or one
        percent-encoded once more than its container; at no level left, a part holding a URL is masked whole."""
        if "://" not in text:
            if _ENCODED_SCHEME_END not in text.lower():
                return text
            decoded = unquote(text)
            masked = self._nested(decoded, depth - 1)
            return text if masked == decoded else masked
        if depth <= 0:
            return MASK
        return "".join(self._text_parts(text, depth - 1))


def plain_url(url: str) -> bool:
    """Whether `url` certainly has nothing to mask: one `://`, after a plain scheme (`http`), and no `@` (userinfo),
    `?` (a query) or `%` (an encoded URL nested in it). Most URLs a worker calls; it spares parsing each of them
    (a tracing span records the masked URL of every call)."""
    at = url.find("://")
    scheme = url[:at]
    return (
        at > 0
        and scheme.isascii()
        and scheme.isalnum()
        and scheme[0].isalpha()
        and url.find("://", at + 3) < 0
        and "@" not in url
        and "?" not in url
        and "%" not in url
    )


def drop_cut_url(text: str) -> str:
    """`text`, a prefix of a longer text, without the URL it ends in, if it ends in one: the cut may have taken
    what tells the masker a part is secret (the `@` after a password, a query parameter's name), so the part left
    could not be masked reliably. Call it on the prefix only: it reads back from the end to the URL's start."""
    start = len(text)
    while start > 0 and text[start - 1] not in _URL_END:
        start -= 1
    at = text.find("://", start)
    if at < 0:
        return text
    while at > start and text[at - 1] in _SCHEME_CHARS:
        at -= 1
    return text[:at]


class MaskingFilter(logging.Filter):
    """A logging filter that masks the URLs in a record's message (a failed attempt's log line names its URL), for
    the handlers GoPherQ installs. Records without a URL pass through untouched."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            masked = self.masker.text(message)
            if masked != message:
                record.msg, record.args = masked, None
        return True
