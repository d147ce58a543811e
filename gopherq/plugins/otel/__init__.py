"""The built-in `otel` plugin: OpenTelemetry traces from the producer, through the queue, into the called service.

Off by default (`[plugins.otel] enabled = true`, with the `otel` extra installed: `pip install 'gopherq[otel]'`).
Disabled, or without OpenTelemetry installed, it registers nothing that runs per task, so it costs nothing: the
core skips hooks nobody implements. Enabled, it adds (see docs/observability.md):

- at enqueue (`gopherq_before_enqueue`): a PRODUCER span per task, whose W3C context goes into the envelope's
  `trace` field; its parent is the producer's current span, the API request's `traceparent`, the command line's
  `TRACEPARENT`, or the parent task's context for callbacks; each schedule run starts a new trace;
- around each attempt (`gopherq_wrap_attempt`): a CONSUMER span, child of the producer span for the first attempt
  and linked to it for retries and recoveries (`retries = "child"` to nest them too), current while an executor
  that runs application code runs, so function tasks' own spans nest under it (the `http` executor runs none:
  `runs_application_code = False`, and its attempts skip that);
- around the HTTP executor's request (`context.calls`): a CLIENT span whose context goes out as `traceparent`;
- on the dashboard's task page (`gopherq_task_links`): a link to the trace, with `trace_url`.

This module imports no OpenTelemetry package: `tracing.py` does, and only when the plugin is enabled.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from gopherq import RegisterHooks, RegisterSettings, Settings, hookimpl
from gopherq.plugins.otel.settings import OtelSettings

log = logging.getLogger(__name__)

__all__ = ["OtelSettings"]


def available() -> bool:
    """Whether the OpenTelemetry SDK is installed (the `otel` extra)."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except (ImportError, ValueError):  # a parent package missing or unusable
        return False


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(OtelSettings)


@hookimpl
def gopherq_register_hooks(register: RegisterHooks, settings: Settings) -> None:
    config: OtelSettings = settings.plugin("otel")
    if not config.active():
        return
    if not available():
        log.warning(
            "[plugins.otel] enabled = true, but OpenTelemetry is not installed (pip install 'gopherq[otel]'): no traces"
        )
        return
    from gopherq.plugins.otel.tracing import Tracing

    register(Tracing(config, settings))


@hookimpl
def gopherq_task_links(task: Any, settings: Settings) -> list[tuple[str, str]] | None:
    config: OtelSettings | None = settings.plugin("otel")
    if config is None or config.trace_url is None or task.trace_id is None:
        return None
    return [("Trace", config.trace_url.format(trace_id=task.trace_id))]
