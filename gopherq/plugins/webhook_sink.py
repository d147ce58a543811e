"""The built-in `webhook` sink: POSTs events as JSON to HTTP endpoints, signed per the Standard Webhooks spec.

Each endpoint in `[[plugins.webhook.endpoints]]` is its own sink (named `webhook:<name>`), so it has its own
buffer, its own delivery task and its own connection: a slow or dead endpoint delays nothing but itself. A
request carries one batch of events:

    {"type": "gopherq.events", "timestamp": "2025-01-31T12:00:00.000Z", "data": {"events": [{...}, ...]}}

with the headers `webhook-id` (the same on every retry of the batch, so a receiver can de-duplicate),
`webhook-timestamp` (Unix seconds of this attempt) and, when the endpoint has a `secret`, `webhook-signature:
v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed with the base64 part of the `whsec_` secret.

2xx is delivered. 408, 429, 5xx, timeouts and network errors are retried with exponential backoff and jitter,
waiting as long as Retry-After asks (up to `retry_after_max`); after `max_attempts` the batch is dropped and
counted. 410 Gone means the receiver wants no more: the endpoint is switched off until the worker restarts,
with one ERROR line. Any other status drops the batch (the receiver refused it; retrying cannot help). While
an endpoint is failing, its buffer fills and the oldest events are dropped and counted: the worker never waits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from gopherq import Event, PluginSettings, RegisterSettings, RegisterSink, Settings, SinkSettings, hookimpl
from gopherq import __version__ as gopherq_version
from gopherq.plugins.http.responses import retry_after_seconds
from gopherq.plugins.signing import secret_key, sign

log = logging.getLogger(__name__)


def message_body(events: list[Event]) -> bytes:
    """One request body for a batch of events (events are encoded once, by `Event.to_json`)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    head = b'{"type":"gopherq.events","timestamp":"' + stamp.encode() + b'","data":{"events":['
    return head + b",".join(event.to_json() for event in events) + b"]}}"


class WebhookEndpoint(SinkSettings):
    """One `[[plugins.webhook.endpoints]]` entry: where to POST, which events, and how to retry."""

    name: str | None = Field(None, description="sink name suffix (default: the endpoint's position, 1-based)")
    url: str = Field(description="http:// or https:// URL the events are POSTed to")
    secret: SecretStr | None = Field(None, description="whsec_<base64>: sign requests (Standard Webhooks)")
    timeout: float = Field(10.0, gt=0, description="seconds one request may take")
    batch_size: int = Field(20, ge=1, description="most events in one request")
    max_attempts: int = Field(8, ge=1, description="tries per batch before it is dropped")
    retry_min: float = Field(0.5, ge=0, description="first retry delay, seconds (doubles per try, jittered)")
    retry_max: float = Field(60.0, ge=0, description="largest retry delay, seconds")
    retry_after_max: float = Field(600.0, ge=0, description="longest Retry-After honoured, seconds")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra request headers (masked)")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http:// or https:// URL")
        try:
            if not httpx.URL(value).host:
                raise ValueError("has no host")
        except httpx.InvalidURL as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        return value

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_key(value.get_secret_value())
        return value


class WebhookSettings(PluginSettings):
    """`[plugins.webhook]`: the endpoints events are POSTed to (none by default: the sink is then inactive)."""

    endpoints: list[WebhookEndpoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> WebhookSettings:
        names = [endpoint_name(endpoint, index) for index, endpoint in enumerate(self.endpoints)]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two endpoints are named '{name}': give each a unique `name`")
        return self


def endpoint_name(endpoint: WebhookEndpoint, index: int) -> str:
    return endpoint.name or str(index + 1)


class WebhookEndpointSink:
    """Delivers batches of events to one endpoint, one request at a time, retrying as the module says."""

    def __init__(self, name: str, config: WebhookEndpoint) -> None:
        self.name = name
        self.config = config
        self.key = secret_key(config.secret.get_secret_value()) if config.secret else None
        self.headers = {
            "content-type": "application/json",
            "user-agent": f"gopherq-webhook/{gopherq_version}",
            **{key: value.get_secret_value() for key, value in config.headers.items()},
        }
        #: The URL as logged: without credentials or query string, which may hold secrets.
        self.where = str(httpx.URL(config.url).copy_with(userinfo=b"", query=None))
        self.client: httpx.AsyncClient | None = None
        self.gone = False
        self.failing = False
        self.counts = {"sent": 0, "requests": 0, "retries": 0, "gave_up": 0, "rejected": 0, "discarded": 0}

    async def open(self) -> None:
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=self.config.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "gone": self.gone}

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of retry_min * 2**(attempt-1), capped."""
        base = min(self.config.retry_max, self.config.retry_min * 2 ** min(attempt - 1, 30))
        return random.uniform(base / 2, base)

    async def handle(self, events: list[Event]) -> None:
        if self.gone:
            self.counts["discarded"] += len(events)
            return
        body = message_body(events)
        msg_id = f"msg_{uuid.uuid4().hex}"
        problem = ""
        for attempt in range(1, self.config.max_attempts + 1):
            verdict, problem, retry_after = await self._post(msg_id, body)
            if verdict == "sent":
                self.counts["sent"] += len(events)
                if self.failing:
                    self.failing = False
                    log.info("webhook %s: delivering again (%s)", self.name, self.where)
                return
            if verdict == "gone":
                self.gone = True
                self.counts["discarded"] += len(events)
                log.error(
                    "webhook %s: %s answered 410 Gone: no more events will be sent to it until the worker restarts",
                    self.name,
                    self.where,
                )
                return
            if verdict == "rejected":
                self.counts["rejected"] += len(events)
                log.warning(
                    "webhook %s: %s refused a batch of %d events: %s", self.name, self.where, len(events), problem
                )
                return
            if not self.failing:
                self.failing = True
                log.warning(
                    "webhook %s: delivery to %s failing (%s); retrying with backoff",
                    self.name,
                    self.where,
                    problem,
                )
            if attempt == self.config.max_attempts:
                break
            self.counts["retries"] += 1
            delay = self.backoff(attempt)
            if retry_after is not None:
                delay = min(retry_after, self.config.retry_after_max)
            log.debug("webhook %s: %s; retry %d in %.2fs", self.name, problem, attempt, delay)
            await asyncio.sleep(delay)
        self.counts["gave_up"] += len(events)
        log.warning(
            "webhook %s: dropped a batch of %d events after %d attempts (last: %s)",
            self.name,
            len(events),
            self.config.max_attempts,
            problem,
        )

    async def _post(self, msg_id: str, body: bytes) -> tuple[str, str, float | None]:
        """One attempt: ("sent" | "gone" | "rejected" | "retry", what went wrong, Retry-After seconds)."""
        if self.client is None:
            await self.open()
        assert self.client is not None
        timestamp = int(time.time())
        headers = {**self.headers, "webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
        if self.key is not None:
            headers["webhook-signature"] = sign(self.key, msg_id, timestamp, body)
        self.counts["requests"] += 1
        try:
            response = await self.client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return "retry", f"timed out after {self.config.timeout:g}s", None
        except httpx.HTTPError as exc:
            return "retry", f"{type(exc).__name__}: {exc}", None
        status = response.status_code
        if 200 <= status < 300:
            return "sent", "", None
        if status == 410:
            return "gone", "HTTP 410", None
        if status in (408, 429) or status >= 500:
            return "retry", f"HTTP {status}", retry_after_seconds(response.headers.get("retry-after"))
        return "rejected", f"HTTP {status}", None


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(WebhookSettings)


@hookimpl
def gopherq_register_sinks(register: RegisterSink, settings: Settings) -> None:
    config: WebhookSettings = settings.plugin("webhook")
    for index, endpoint in enumerate(config.endpoints):
        if endpoint.enabled:
            name = f"webhook:{endpoint_name(endpoint, index)}"
            register(name, WebhookEndpointSink(name, endpoint), **endpoint.register_kwargs())
