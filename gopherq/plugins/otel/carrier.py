"""Reading a trace context out of a carrier: a task's `trace` field, an API request's headers or the command
line's environment, through the configured propagators (W3C trace context and baggage by default)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

#: Environment variables the command line reads its parent context from (OpenTelemetry's environment carrier).
_ENV_NAMES = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE", "baggage": "BAGGAGE"}


class _Getter(Getter[Mapping[str, str]]):
    """Reads a carrier whose keys may be upper-case (the environment) or any case (a request's headers)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = carrier.get(_ENV_NAMES.get(key, key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


GETTER = _Getter()


def extract(carrier: Mapping[str, str]) -> Context:
    """The context a carrier describes (the configured propagators: W3C trace context and baggage by default),
    on its own: nothing of the caller's current context leaks in."""
    return propagate.extract(carrier, getter=GETTER, context=Context())
