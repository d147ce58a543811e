"""Observing the calls an executor makes to other services, without the executor knowing who observes them.

A plugin that wraps attempts (`gopherq_wrap_attempt`, e.g. the `otel` plugin) may set `context.calls` to an
`OutboundCalls`; an executor that calls out (the `http` executor) then reports each call through it and adds the
propagation headers it is given. When nothing observes (`context.calls` is None, the default), the executor does
nothing extra. Kept free of any tracing library and of HTTP: a call has a kind (`"http"`), an operation (the
method), a target (the URL) and, once answered, a status code.
"""

from __future__ import annotations

from collections.abc import MutableMapping
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
