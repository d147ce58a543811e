"""`[plugins.otel]`: whether to trace, where spans go, how retries relate to the first attempt, the trace UI link.

Every OpenTelemetry `OTEL_*` variable the SDK reads applies too (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` and `_ARG`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_PROPAGATORS`...); a key set here wins over its variable. `OTEL_SDK_DISABLED=true` turns the plugin off.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from gopherq import PluginSettings


class OtelSettings(PluginSettings):
    """`[plugins.otel]`: OpenTelemetry tracing (off by default)."""

    enabled: bool = Field(False, description="trace enqueues, attempts and HTTP calls (needs the otel extra)")
    service_name: str | None = Field(None, description="service.name of the spans (OTEL_SERVICE_NAME, else gopherq)")
    exporter: str | None = Field(
        None,
        description="otlp (OTLP over HTTP/protobuf), console, none, or an opentelemetry_traces_exporter entry point "
        "(default: OTEL_TRACES_EXPORTER, else otlp); an unknown one is a warning, and spans are dropped",
    )
    endpoint: str | None = Field(
        None, description="OTLP/HTTP traces URL (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else localhost:4318)"
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="fraction of new traces recorded; a task follows its producer's decision "
        "(default: OTEL_TRACES_SAMPLER, else every trace)",
    )
    retries: Literal["link", "child"] = Field(
        "link",
        description="a retry's or recovery's span is a new trace linked to the producer (link), or a child (child)",
    )
    trace_url: str | None = Field(
        None, description="trace UI link on the dashboard's task page, e.g. https://tempo.example/trace/{trace_id}"
    )
    exemplars: bool = Field(
        True, description="add sampled attempts' trace ids to their events (Prometheus exemplars of the metrics sink)"
    )
    queue_size: int = Field(2048, ge=1, description="finished spans waiting for export; past it new ones are dropped")
    batch_size: int = Field(512, ge=1, description="most spans in one export")
    export_interval: float = Field(2.0, gt=0, description="seconds between exports of a partial batch")
    export_timeout: float = Field(10.0, gt=0, description="seconds one export may take, retries included")
    shutdown_timeout: float = Field(3.0, ge=0, description="seconds spent exporting what is left at exit")

    @field_validator("trace_url")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None:
            if "{trace_id}" not in value:
                raise ValueError("must contain {trace_id}, e.g. https://tempo.example/trace/{trace_id}")
            try:
                value.format(trace_id="0" * 32)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"only {{trace_id}} may be in braces ({exc})") from None
        return value

    def active(self) -> bool:
        """Enabled here and not switched off by the standard `OTEL_SDK_DISABLED`."""
        return self.enabled and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
