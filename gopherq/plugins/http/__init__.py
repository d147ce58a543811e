"""The built-in `http` executor: one HTTP call per task through one shared transport and connection pool.

2xx is success. 408, 429 and 5xx (configurable) are retried, honouring Retry-After; other statuses fail
without retry. Network errors and timeouts are retried. Every attempt carries an `Idempotency-Key` header
(derived from the task id unless the task sets its own: checks.idempotency_key), so an endpoint can make the
retries and redeliveries of at-least-once delivery harmless.

The executor owns the wire: a task cannot set framing or hop-by-hop headers (checks), every transport frames
every request itself (framing, wire.framed_headers), and a response body is read and decoded with bounded
memory whatever the endpoint sends (body). It speaks to its transport in its own small records (wire: `Outgoing`,
`Incoming`), not httpx's objects, which cost a fifth of a worker's CPU per task; the `httpx` transport converts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gopherq import (
    ExecutionContext,
    FlowLimits,
    Masker,
    OutboundCall,
    PermanentFailure,
    PluginSettings,
    RegisterExecutor,
    RegisterSettings,
    RetryTask,
    Settings,
    Task,
    TaskFailure,
    hookimpl,
    merge_headers,
)
from gopherq.plugins.http.checks import (
    METHODS,
    basic_auth,
    check_credentials,
    check_headers,
    check_url,
    idempotency_key,
)
from gopherq.plugins.http.command import curl_command
from gopherq.plugins.http.egress import EgressGuard, EgressSettings
from gopherq.plugins.http.extras import EnvValue, callback_tasks, parse_statuses, resolve_headers
from gopherq.plugins.http.flow import FLOW_KEY, HostRule, HostRules, flow_label, flow_signal
from gopherq.plugins.http.responses import MAX_REDIRECTS, REDIRECT_STATUSES, redirect_request, retry_after_seconds
from gopherq.plugins.http.summary import call_summary, encoded_body
from gopherq.plugins.http.wire import Incoming, Outgoing, Target, Transport, once, target
from gopherq.plugins.signing import secret_key, sign

#: Control characters (C0, DEL, C1) refused anywhere in a task's URL, as in task ids.
_URL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class HttpSettings(PluginSettings):
    """`[plugins.http]`: how the HTTP executor behaves."""

    body_limit: int = Field(64 * 1024, ge=0, description="response bytes kept in the result")
    retry_statuses: list[int] = Field(
        default_factory=lambda: [408, 429, *range(500, 600)], description="statuses that are retried"
    )
    max_connections: int | None = Field(None, ge=1, description="connection pool size (default: worker concurrency)")
    user_agent: str = "gopherq"
    transport: str = Field(
        "native",
        description="'native' (GoPherQ's own HTTP/1.1 over llhttp), 'aiohttp' (aiohttp's pool) or 'httpx' (httpcore)",
    )
    per_host_limit: int | None = Field(None, ge=1, description="most requests in flight to one host (scheme+host+port)")
    egress: EgressSettings = Field(default_factory=EgressSettings)
    hosts: list[HostRule] = Field(default_factory=list, description="shared per-host limits ([[plugins.http.hosts]])")
    signing_secret: SecretStr | None = Field(
        None, description="whsec_<base64>: signs tasks with sign = true and callbacks (Standard Webhooks)"
    )

    @field_validator("signing_secret")
    @classmethod
    def _signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_key(value.get_secret_value())
        return value

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, value: str) -> str:
        if value not in ("native", "aiohttp", "httpx"):
            raise ValueError("must be 'native', 'aiohttp' or 'httpx'")
        return value


class HttpPayload(BaseModel):
    """The fields of an `http` task. `header` (the seed's name) and `headers` are both accepted."""

    model_config = ConfigDict(extra="forbid", ignored_types=(once,))

    method: str = "GET"
    url: str
    headers: dict[str, str | EnvValue] = Field(default_factory=dict, validation_alias=AliasChoices("headers", "header"))
    body: str | dict[str, Any] | list[Any] | None = None
    follow_redirects: bool = False
    flow_key: str | None = Field(None, pattern=FLOW_KEY)
    success_status: list[int | str] | None = None
    retry_status: list[int | str] | None = None
    sign: bool = False
    on_success: str | None = None
    on_failure: str | None = None

    @field_validator("success_status", "retry_status")
    @classmethod
    def _statuses(cls, value: list[int | str] | None) -> list[int | str] | None:
        if value is not None:
            parse_statuses(value)
        return value

    @field_validator("on_success", "on_failure")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return None if value is None else cls._absolute_http_url(value)

    @once
    def success_codes(self) -> frozenset[int] | None:
        return None if self.success_status is None else parse_statuses(self.success_status)

    @once
    def retry_codes(self) -> frozenset[int] | None:
        return None if self.retry_status is None else parse_statuses(self.retry_status)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        value = value.upper()
        if value not in METHODS:
            raise ValueError(f"must be one of {', '.join(sorted(METHODS))}")
        return value

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        control = _URL_CONTROL.search(value)
        if control is not None:  # urlsplit would silently drop a CR, LF or tab; no request can carry the rest
            raise ValueError(f"has a control character ({control.group()!r}) at position {control.start()}")
        check_url(value)
        return value

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, str | EnvValue], info: ValidationInfo) -> dict[str, str | EnvValue]:
        # A value from the environment is checked when it is read, at send time (resolve_headers).
        texts = {name: item if isinstance(item, str) else "" for name, item in value.items()}
        check_headers(texts)
        url = info.data.get("url")
        if url is not None and "@" in url:
            try:
                check_credentials(urlsplit(url), texts)
            except ValueError as exc:
                raise ValueError(f"the url {exc}") from None
        return value

    @once
    def target(self) -> Target:
        """Where the request goes (userinfo taken out: see `credentials`), parsed when the request is built
        (wire.target; validation, which also runs in every client, checks the URL with the lighter urlsplit).
        Raises PermanentFailure(reason='invalid_request') when it cannot be parsed: another attempt would fail
        the same way."""
        url = self.url
        if self.credentials is not None:
            url = self.credentials[0]
        try:
            return target(url)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise PermanentFailure(f"invalid url {self.url!r}: {exc}", reason="invalid_request") from None

    @once
    def credentials(self) -> tuple[str, str] | None:
        """(URL without userinfo, Authorization value) when the URL carries user:password@: sent as HTTP Basic
        auth, as httpx's client does, by both transports alike (validation refuses an Authorization header
        beside it)."""
        return basic_auth(urlsplit(self.url)) if "@" in self.url else None


#: Errors raised while a request is built or before it is sent, which every attempt would raise again: the URL
#: or a header cannot be encoded, the transport refuses the request, or a redirect leads to an unsupported scheme.
#: Validation refuses what it can foresee; these are the rest, and they fail the task without a retry.
NOT_SENDABLE = (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError, ValueError)

#: Methods whose request, in a flow step with no body of its own, carries its parents' outcomes as JSON.
FLOW_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def flow_document(task: Task, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document a flow step with no body sends (docs/flows.md): its flow, its node and its parents'
    outcomes, each {node, task_id, status, result, error} (a large result is passed as `truncated`, by reference)."""
    member = task.flow_member or {}
    return {"flow": member.get("flow"), "node": member.get("node"), "parents": inputs}


class HttpExecutor:
    """Executes `http` tasks."""

    payload_model = HttpPayload
    #: Its attempts run no code of the application's (`RunsApplicationCode`): a tracing wrapper need not make a
    #: sampled-out attempt's context current; the call is still reported through `context.calls`.
    runs_application_code = False

    def __init__(self, settings: HttpSettings, concurrency: int, masker: Masker | None = None) -> None:
        self.settings = settings
        self.rules = HostRules(settings.hosts)
        self.masker = masker or Masker()
        secret = settings.signing_secret
        self.signing_key: bytes | None = None
        if secret is not None:
            self.signing_key = secret_key(secret.get_secret_value())
        self.pool_size = settings.max_connections or concurrency
        self.retry_statuses = frozenset(settings.retry_statuses)
        self.guard = EgressGuard(settings.egress)
        self.host_slots: dict[tuple[str, str, int | None], asyncio.Semaphore] = {}
        self.client: Transport | None = None

    def _transport(self) -> Transport:
        if self.settings.transport == "native":
            from gopherq.plugins.http.native_transport import NativeTransport

            return NativeTransport(self.guard, self.pool_size)
        if self.settings.transport == "aiohttp":
            from gopherq.plugins.http.aiohttp_transport import AiohttpTransport, PinnedResolver

            return AiohttpTransport(self.pool_size, resolver=PinnedResolver(self.guard))
        from gopherq.plugins.http.httpx_transport import HttpxTransport

        return HttpxTransport(self.guard, self.pool_size)

    async def open(self) -> None:
        if self.client is None:
            self.client = self._transport()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def flow(self, task: Task) -> tuple[str, FlowLimits] | None:
        """The task's flow key (its `flow_key`, else the URL's host) and the limits of the first matching
        `[[plugins.http.hosts]]` rule; None (not flow-controlled) without a matching rule."""
        if not self.rules:
            return None
        payload: HttpPayload = task.payload
        key = payload.flow_key or urlsplit(payload.url).hostname or ""
        limits = self.rules.limits(key)
        return None if limits is None else (key, limits)

    @staticmethod
    def flow_signal(failure: TaskFailure | None) -> str:
        return flow_signal(failure)

    @staticmethod
    def render_command(envelope: dict[str, Any]) -> str | None:
        """The task as a curl command ("copy as curl"), from its envelope as shown (masked): see command.py."""
        return curl_command(envelope)

    @staticmethod
    def flow_label(failure: TaskFailure) -> str:
        return flow_label(failure)

    def followups(self, task: Task, record: bytes, succeeded: bool) -> list[bytes]:
        """The callback task to enqueue when this task ends (see extras); none without a signing secret (a
        callback is signed: it could never be sent, and the task itself was dead-lettered for asking one)."""
        if self.signing_key is None:
            return []
        payload = task.payload
        if payload is None and ("on_success" in task.fields or "on_failure" in task.fields):
            try:  # dead before it was validated (deadline, poison): its callback still fires when it can
                payload = task.payload = HttpPayload.model_validate(task.fields)
            except ValidationError:
                return []
        if not isinstance(payload, HttpPayload) or (payload.on_success is None and payload.on_failure is None):
            return []
        return callback_tasks(task, record, succeeded, self.masker)

    def describe_call(self, task: Task) -> dict[str, Any] | None:
        """What the task calls, masked (see summary.py), for its result record and dead letter; None when its
        fields are not a valid http task (nothing could be called)."""
        payload = task.payload
        if not isinstance(payload, HttpPayload):
            try:
                payload = HttpPayload.model_validate(task.fields)
            except ValidationError:
                return None
        content = encoded_body(payload.body, payload.sign)
        return call_summary(payload.method, payload.url, payload.headers, content, self.masker)

    def check(self, task: Task) -> None:
        """Refuse, wherever the task is validated, one that asks to be signed (`sign`, `on_success`,
        `on_failure`) when `[plugins.http] signing_secret` is not set: it could never be sent."""
        if self.signing_key is None:
            for field in ("sign", "on_success", "on_failure"):  # a callback is an http task with sign = true
                if getattr(task.payload, field):
                    raise ValueError(f"field '{field}' needs [plugins.http] signing_secret, which is not set")

    def _signature_headers(self, task: Task, headers: dict[str, str], content: bytes) -> None:
        """Standard Webhooks headers for a task with `sign = true`, computed per attempt."""
        if self.signing_key is None:
            raise PermanentFailure(
                "task asks to be signed but [plugins.http] signing_secret is not set", reason="invalid_request"
            )
        msg_id = next((v for k, v in headers.items() if k.lower() == "webhook-id"), None) or idempotency_key(task.id)
        stamp = int(time.time())
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = sign(self.signing_key, msg_id, stamp, content)

    async def execute(self, task: Task, context: ExecutionContext) -> dict[str, Any]:
        if context.calls is None:  # nothing observes outgoing calls (no tracing): nothing extra to do
            return await self._execute(task, context, None)
        with context.calls.begin("http", task.payload.method, task.payload.url) as call:
            return await self._execute(task, context, call)

    async def _execute(self, task: Task, context: ExecutionContext, call: OutboundCall | None) -> dict[str, Any]:
        payload: HttpPayload = task.payload
        if call is not None:
            headers = self._headers(task, resolve_headers(payload.headers), None)
            call.propagate(headers)  # e.g. traceparent, unless the task sets its own
        else:  # a wrapper's headers for every call (a sampled-out trace's traceparent), unless the task sets its own
            headers = self._headers(task, resolve_headers(payload.headers), context.call_headers)
        if payload.credentials is not None:
            headers["Authorization"] = payload.credentials[1]
        source = payload.body
        if not source and context.flow_inputs is not None and payload.method in FLOW_BODY_METHODS:
            source = flow_document(task, context.flow_inputs)  # a flow step with no body: its parents' outcomes
        started = time.perf_counter()
        try:
            content = b""
            if isinstance(source, str):
                content = source.encode("utf-8")
            elif source is not None:  # JSON, encoded as httpx encodes `json=` (compact, signed: see encoded_body)
                content = encoded_body(source, signed=payload.sign)
                if not any(name.lower() == "content-type" for name in headers):
                    headers["Content-Type"] = "application/json"
            if payload.sign:
                self._signature_headers(task, headers, content)
            request = Outgoing(payload.method, payload.target, headers, content, context.timeout)
            slot = self._host_slot(request.target)
            if slot is None:
                request, response, content, truncated = await self._send(request, payload.follow_redirects)
            else:
                async with slot:
                    request, response, content, truncated = await self._send(request, payload.follow_redirects)
        except httpx.TimeoutException as exc:
            raise RetryTask(
                f"{payload.method} {payload.url}: timed out ({type(exc).__name__})", reason="timeout"
            ) from None
        except httpx.ConnectError as exc:
            raise RetryTask(f"{payload.method} {payload.url}: cannot connect: {exc}", reason="connect_error") from None
        except NOT_SENDABLE as exc:
            raise PermanentFailure(
                f"{payload.method} {payload.url}: the request cannot be sent: {type(exc).__name__}: {exc}",
                reason="invalid_request",
            ) from None
        except httpx.HTTPError as exc:
            raise RetryTask(
                f"{payload.method} {payload.url}: {type(exc).__name__}: {exc}", reason="request_error"
            ) from None
        status = response.status
        result = {
            "status_code": status,
            "headers": response.headers,
            "elapsed": time.perf_counter() - started,
            **self._body_fields(content, truncated),
        }
        if call is not None:
            call.answered(status)
        context.event_data = {"http_status": status, "http_host": request.target.host}
        success = payload.success_codes
        if (200 <= status < 300) if success is None else (status in success):
            return result
        message = f"{payload.method} {payload.url}: HTTP {status}"
        if status in (payload.retry_codes if payload.retry_codes is not None else self.retry_statuses):
            delay = retry_after_seconds(response.headers.get("retry-after"))
            raise RetryTask(message, reason="http_status", delay=delay, details=result)
        raise PermanentFailure(message, reason="http_status", details=result)

    def _headers(self, task: Task, own: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
        """The task's headers, after the executor's defaults for those it does not set (names ignore case), then
        `extra` (`context.call_headers`) as `merge_headers` adds them: the task's own propagation headers win."""
        names = {name.lower() for name in own} if own else ()
        headers: dict[str, str] = {}
        if "user-agent" not in names:
            headers["User-Agent"] = self.settings.user_agent
        if "idempotency-key" not in names:
            headers["Idempotency-Key"] = idempotency_key(task.id)
        headers.update(own)
        if extra is not None:
            merge_headers(headers, extra)  # (its own first step is this update, when no name collides)
        return headers

    def _host_slot(self, target: Target) -> asyncio.Semaphore | None:
        """The per-host concurrency limit for this target's origin, when one is configured."""
        limit = self.settings.per_host_limit
        if limit is None:
            return None
        origin = target.origin
        slot = self.host_slots.get(origin)
        if slot is None:
            slot = self.host_slots[origin] = asyncio.Semaphore(limit)
        return slot

    async def _send(self, request: Outgoing, follow_redirects: bool) -> tuple[Outgoing, Incoming, bytes, bool]:
        """Send through the transport, following redirects when asked (each hop checked by the egress guard);
        return the last request, its answer and its body (bounded: body.py). No client machinery in between (no
        cookie jar, auth flow or redirect handling of a library's): a shared cookie jar would leak cookies from one
        task's endpoint into another task's requests."""
        if self.client is None:
            await self.open()
        assert self.client is not None
        for _ in range(MAX_REDIRECTS + 1):
            await self.guard.check(request.target.host)
            response = await self.client.send(request)
            redirected = follow_redirects and response.status in REDIRECT_STATUSES
            location = response.headers.get("location") if redirected else None
            if not location:
                content, truncated = await response.read(self.settings.body_limit)
                return request, response, content, truncated
            await response.discard()
            request = redirect_request(request, response.status, location)
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _body_fields(content: bytes, truncated: bool) -> dict[str, Any]:
        try:
            fields: dict[str, Any] = {"body": content.decode("utf-8")}
        except UnicodeDecodeError:
            fields = {"body_base64": base64.b64encode(content).decode("ascii")}
        if truncated:
            fields["body_truncated"] = True
        return fields


@hookimpl
def gopherq_register_settings(register: RegisterSettings) -> None:
    register(HttpSettings)


@hookimpl
def gopherq_register_executors(register: RegisterExecutor, settings: Settings) -> None:
    register("http", HttpExecutor(settings.plugin("http"), settings.worker.concurrency, Masker.from_settings(settings)))
