"""Observing the calls an executor makes to other services, without the executor knowing who observes them.

A plugin that wraps attempts (`gopherq_wrap_attempt`, e.g. the `otel` plugin) may set `context.calls` to an
`OutboundCalls`; an executor that calls out (the `http` executor) then reports each call through it and adds the
propagation headers it is given. When nothing observes (`context.calls` is None, the default), the executor does
nothing extra. Kept free of any tracing library and of HTTP: a call has a kind (`"http"`), an operation (the
method), a target (the URL) and, once answered, a status code.

A wrapper that only needs the same headers on every call of an attempt, and observes none of them (the `otel`
plugin's sampled-out attempt: its `traceparent` with the sampled flag off), sets `context.call_headers` instead:
the executor adds them as it adds an observer's (`merge_headers`), with no call into the wrapper's code per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import Protocol


class OutboundCall(Protocol):
    """One call, observed from just before its request is built until its response has been read. Use it as a
    context manager around the call: an exception leaving the block marks the call as failed (a `TaskFailure`'s
    `reason` says how)."""

    def propagate(self, headers: MutableMapping[str, str]) -> None:
        """Add the observer's propagation headers (e.g. W3C `traceparent`) to the request's `headers`, except those
        the request already has (names compared case-insensitively): a task that sets its own keeps it."""

    def answered(self, status: int) -> None:
        """The response's status code (of the last request, after redirects)."""

    def __enter__(self) -> OutboundCall: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class OutboundCalls(Protocol):
    """What an executor reports its calls to (`context.calls`)."""

    def begin(self, kind: str, operation: str, target: str) -> OutboundCall:
        """A call is about to be made: `kind` names the protocol (`"http"`), `operation` what is asked (the
        method), `target` where (the URL as the task gives it; the observer masks what it records)."""
        ...


#: The headers an observer may add to a call (lower case): W3C trace context and baggage.
PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
#: Header names, exactly as spelt, already found not to be propagation headers (in any case): a worker's calls carry
#: the same few names (an executor's defaults, the tasks' own), so a request whose names are all among them is
#: merged after one C-level pass over its names (`issuperset`) instead of a lower-case copy of each. Names of at most
#: PLAIN_NAME_CHARS characters, at most PLAIN_NAMES_KEPT of them (then it starts again).
_PLAIN_NAMES: set[str] = set()
PLAIN_NAMES_KEPT = 1024
PLAIN_NAME_CHARS = 64


def merge_headers(headers: MutableMapping[str, str], out: Mapping[str, str]) -> None:
    """Add the propagation headers `out` to a request's `headers`, except those the request has (names compared
    case-insensitively): a task's own `traceparent` wins, and with it its own `tracestate` (the observer's belongs
    to another trace), so the observer's is left out too."""
    if _PLAIN_NAMES.issuperset(headers):  # the usual case: names seen before, none of them a propagation header
        headers.update(out)
        return
    present = {name.lower() for name in headers}
    if PROPAGATION_HEADERS.isdisjoint(present):
        _remember_plain(headers)
        headers.update(out)
        return
    own_context = "traceparent" in present
    for name, value in out.items():
        if name not in present and not (own_context and name == "tracestate"):
            headers[name] = value


def _remember_plain(names: Iterable[str]) -> None:
    """Keep `names` (none of them a propagation header in any case) in `_PLAIN_NAMES`, those short enough, within
    PLAIN_NAMES_KEPT."""
    short = [name for name in names if len(name) <= PLAIN_NAME_CHARS]
    if len(_PLAIN_NAMES) + len(short) > PLAIN_NAMES_KEPT:
        _PLAIN_NAMES.clear()
        if len(short) > PLAIN_NAMES_KEPT:
            return
    _PLAIN_NAMES.update(short)
