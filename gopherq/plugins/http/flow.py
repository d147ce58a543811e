"""Per-destination flow control of the http executor: `[[plugins.http.hosts]]` rules and what an attempt signals.

A rule applies to every task whose flow key (the task's `flow_key`, else the URL's host name) matches its `match`
glob (`*.example.com`, `api.partner.io`, `*`); the first matching rule wins. The limits are enforced by the core
(gopherq/core/flow.py) in Redis, across all workers. A 429 or 503 lowers the key's rate for everyone; connect
errors, timeouts and 5xx count towards its circuit breaker.
"""

from __future__ import annotations

import fnmatch

from pydantic import Field

from gopherq import FlowLimits, PluginSettings, TaskFailure

#: A flow key becomes part of Redis key names: no braces or spaces, bounded length. A pydantic `pattern` (its Rust
#: engine's `$` is the end of the text; Python's `re` would also take a final newline there).
FLOW_KEY = r"^[A-Za-z0-9_.:\-\[\]]{1,200}$"

#: Failure reasons of the http executor that say the destination is unwell (not the task).
ERROR_REASONS = frozenset({"connect_error", "timeout", "request_error"})


class HostRule(PluginSettings):
    """One `[[plugins.http.hosts]]` entry: the shared limits of the destinations it matches."""

    match: str = Field(description="glob matched against the flow key (the task's flow_key, else the URL's host)")
    rate: float | None = Field(None, gt=0, description="requests per second, across all workers")
    burst: int = Field(1, ge=1, description="requests allowed at once above the rate")
    concurrency: int | None = Field(None, ge=1, description="requests in flight at once, across all workers")
    circuit_failures: int = Field(
        5, ge=0, description="consecutive connect errors/timeouts/5xx that open the circuit (0: no breaker)"
    )
    circuit_window: float = Field(30.0, gt=0, description="seconds within which those failures must fall")
    circuit_cooldown: float = Field(30.0, gt=0, description="seconds the circuit stays open before one probe")
    wait: float = Field(0.25, gt=0, description="seconds a task waits when every concurrency slot is taken")
    slow_down: float = Field(0.5, gt=0, lt=1, description="rate multiplier on a 429 or 503 (at most once a second)")
    ramp_up: float = Field(0.05, gt=0, description="fraction of the rate regained per second after a slow-down")
    min_rate_factor: float = Field(0.05, gt=0, le=1, description="the rate is never lowered below this fraction")

    def limits(self) -> FlowLimits:
        return FlowLimits(
            rate=self.rate,
            burst=self.burst,
            concurrency=self.concurrency,
            circuit_failures=self.circuit_failures,
            circuit_window=self.circuit_window,
            circuit_cooldown=self.circuit_cooldown,
            wait=self.wait,
            slow_down=self.slow_down,
            ramp_up=self.ramp_up,
            min_rate_factor=self.min_rate_factor,
        )


class HostRules:
    """Finds the limits of a flow key (first matching rule), remembering the answer per key."""

    def __init__(self, rules: list[HostRule]) -> None:
        self.rules = [(rule.match.lower(), rule.limits()) for rule in rules]
        self._found: dict[str, FlowLimits | None] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def limits(self, key: str) -> FlowLimits | None:
        try:
            return self._found[key]
        except KeyError:
            pass
        found = next((limits for pattern, limits in self.rules if fnmatch.fnmatchcase(key.lower(), pattern)), None)
        if len(self._found) >= 4096:  # keys come from tasks: never let them pile up
            self._found.clear()
        self._found[key] = found
        return found


def flow_signal(failure: TaskFailure | None) -> str:
    """How an http attempt ended, for the breaker and the adaptive rate."""
    if failure is None:
        return "ok"
    if failure.reason in ERROR_REASONS:
        return "error"
    status = failure.details.get("status_code") if failure.reason == "http_status" else None
    if status == 429:
        return "slow"
    if status == 503:
        return "slow_error"
    if isinstance(status, int) and status >= 500:
        return "error"
    return "neutral"


def flow_label(failure: TaskFailure) -> str:
    """How a failed http attempt is counted on the destinations page: the status class of the answer ('3xx',
    '4xx', '5xx'), '429' apart, or 'error' when no answer came (connect error, timeout)."""
    status = failure.details.get("status_code") if failure.reason == "http_status" else None
    if status == 429:
        return "429"
    if isinstance(status, int) and 100 <= status < 600:
        return f"{status // 100}xx"
    return "error" if failure.reason in ERROR_REASONS else "other"
